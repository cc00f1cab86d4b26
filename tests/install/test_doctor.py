"""onevita doctor from the built zipapp: a configured front-end with a Vitastor datastore on the
simulated cluster passes; each missing piece is a FAIL line naming what to run, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cloud import write_oned_config
from tests.harness import documents as docs
from tests.harness.oned import OnedStandIn
from tests.harness.sshd import Sshd
from tests.install.conftest import FrontEnd, vitastor_site
from tests.sim.cluster import SimCluster

ISOLATION = ("WARN Vitastor has no authentication: VMs must not reach the storage network. Separate them "
             "by VLAN, or on bridged hosts see 'onevita firewall --vm-net VM_SUBNET --host-net HOST_SUBNET'")


@pytest.fixture()
def site(oned: OnedStandIn, cluster: SimCluster, sshd: Sshd, world: Path, tmp_path: Path,
         sim_libvitastor: Path) -> FrontEnd:
    """``vitastor_site``, whose oned also knows an fs image datastore (1)."""
    oned.datastores[1] = docs.datastore_xml(1, name="default", ds_type=0, ds_mad="fs", tm_mad="ssh",
                                            template={})
    return vitastor_site(oned, cluster, sshd, world, tmp_path, sim_libvitastor)


def lines(proc: object) -> list[str]:
    return proc.stdout.splitlines()  # type: ignore[attr-defined, no-any-return]


def test_a_configured_front_end_passes(site: FrontEnd, cluster: SimCluster, oned: OnedStandIn) -> None:
    assert site.onevita("install").returncode == 0
    oned.hosts[0] = docs.host_xml(0, "node1")
    proc = site.onevita("doctor", "--hosts")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = lines(proc)
    assert "OK   oned.conf: configured for Vitastor" in out
    assert "OK   vmm_execrc: configured for Vitastor" in out
    assert "OK   downloader.sh: configured for Vitastor" in out
    assert any(line.startswith("OK   remotes: onevita and its ") for line in out)
    assert "OK   host node1: remotes in sync" in out
    assert (f"OK   datastore 101 (vitastor-images): etcd of {cluster.config_path} answers, "
            "pool testpool exists") in out
    assert any(line.startswith("OK   libvitastor_client: ") for line in out)
    assert out[-1] == ISOLATION
    assert not any("default" in line for line in out)  # not a Vitastor datastore


def test_a_front_end_without_install_fails_with_what_to_run(site: FrontEnd) -> None:
    proc = site.onevita("doctor")
    assert proc.returncode == 1
    out = lines(proc)
    fails = [line for line in out if line.startswith("FAIL")]
    assert any(line.startswith("FAIL oned.conf: ") and line.endswith("(run onevita install)") for line in fails)
    assert any(line.startswith("FAIL vmm_execrc: ") for line in fails)
    assert f"FAIL {site.remotes}/onevita/onevita.pyz is missing (run onevita install)" in fails
    assert proc.stderr.splitlines()[-1] == f"onevita doctor: {len(fails)} check(s) failed"


def test_a_missing_pool_and_an_unsynced_host_fail(site: FrontEnd, oned: OnedStandIn, cluster: SimCluster,
                                                  world: Path) -> None:
    assert site.onevita("install").returncode == 0
    oned.datastores[101] = docs.datastore_xml(101, name="vitastor-images", ds_type=0, template={
        "VITASTOR_CONF": str(cluster.config_path), "POOL_NAME": "nosuchpool"})
    oned.hosts[0] = docs.host_xml(0, "node1")
    write_oned_config(site.root / "var/lib/one", SCRIPTS_REMOTE_DIR=str(world / "nowhere"))
    proc = site.onevita("doctor", "--hosts")
    assert proc.returncode == 1
    out = lines(proc)
    assert "FAIL datastore 101 (vitastor-images): Vitastor pool nosuchpool does not exist" in out
    assert (f"FAIL host node1: {world}/nowhere/onevita/onevita.pyz is missing or differs "
            "(run onehost sync -f)") in out


def test_an_unreachable_cluster_fails(site: FrontEnd, oned: OnedStandIn, tmp_path: Path) -> None:
    conf = tmp_path / "down.conf"
    conf.write_text('{"etcd_address": "127.0.0.1:9"}\n')
    oned.datastores[101] = docs.datastore_xml(101, name="vitastor-images", ds_type=0,
                                              template={"VITASTOR_CONF": str(conf)})
    proc = site.onevita("doctor")
    out = lines(proc)
    assert any(line.startswith("FAIL datastore 101 (vitastor-images): ") and "127.0.0.1:9" in line
               for line in out), out


def test_on_a_host_without_the_library(site: FrontEnd, tmp_path: Path) -> None:
    """No oned.conf: a host; only the library and the isolation reminder are checked."""
    site.oned_conf.unlink()
    site.env["ONEVITA_LIBVITASTOR"] = str(tmp_path / "missing.so")
    proc = site.onevita("doctor")
    assert proc.returncode == 1
    assert lines(proc) == [f"FAIL libvitastor_client: ONEVITA_LIBVITASTOR={tmp_path}/missing.so: no such file",
                           ISOLATION]
