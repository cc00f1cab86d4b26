"""onevita install / uninstall from the built zipapp against front-ends shaped like OpenNebula
6.8 to 7.4: what lands in the remotes tree and the config files, idempotence, exact round trip,
the bash driver's files, and failures that must leave everything as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onevita.actions import ACTIONS, DRIVER_DIRS
from onevita.install import downloader, oned_conf, vmm_execrc
from tests.harness import documents as docs
from tests.harness.oned import OnedStandIn
from tests.install.conftest import ZIPAPP, FrontEnd, frontend_env, make_frontend

APPLIED = "OK, Vitastor OpenNebula patches successfully applied"
ALREADY = "OK, Vitastor OpenNebula patches are already applied"
REMOVED = "OK, Vitastor OpenNebula patches successfully removed"
LAUNCHER_LINK = "../../onevita/onevita"


def action_links(remotes: Path) -> dict[str, str]:
    return {command: os.readlink(remotes / DRIVER_DIRS[command.split("/")[0]] / command.split("/")[1])
            for command in ACTIONS}


class TestInstall:
    def test_install_configures_every_file_and_places_the_remotes(self, frontend: FrontEnd) -> None:
        proc = frontend.onevita("install")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == APPLIED
        assert oned_conf.check(frontend.oned_conf.read_text()) == []
        assert vmm_execrc.check(frontend.vmm_execrc.read_text()) == []
        assert downloader.check(frontend.downloader.read_text()) == []
        assert (frontend.remotes / "onevita/onevita.pyz").read_bytes() == ZIPAPP.read_bytes()
        assert os.access(frontend.remotes / "onevita/onevita", os.X_OK)
        assert set(action_links(frontend.remotes).values()) == {LAUNCHER_LINK}
        for line in ("oned.conf:", "vmm_execrc:", "downloader.sh:", "remotes:"):
            assert any(out.startswith(line) for out in proc.stdout.splitlines()), line

    def test_a_second_install_changes_nothing(self, frontend: FrontEnd) -> None:
        assert frontend.onevita("install").returncode == 0
        before = frontend.files()
        again = frontend.onevita("install")
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines() == [f"OpenNebula credentials: {frontend.env['ONE_AUTH']}", ALREADY]
        assert frontend.files() == before

    def test_uninstall_restores_the_original_bytes(self, frontend: FrontEnd) -> None:
        original = frontend.files()
        assert frontend.onevita("install").returncode == 0
        proc = frontend.onevita("uninstall")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == REMOVED
        after = {k: v for k, v in frontend.files().items() if not k.startswith("var/lib/one/onevita/backups/")}
        assert after == original

    def test_dry_run_writes_nothing(self, frontend_70: FrontEnd) -> None:
        before = frontend_70.files()
        proc = frontend_70.onevita("install", "--dry-run")
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[-1] == "dry run: nothing written"
        assert any(line.startswith("would change: oned.conf:") for line in lines)
        assert frontend_70.files() == before

    def test_the_backup_holds_the_file_as_it_was(self, frontend_70: FrontEnd) -> None:
        original = frontend_70.oned_conf.read_bytes()
        assert frontend_70.onevita("install").returncode == 0
        backups = list((frontend_70.root / "var/lib/one/onevita/backups").glob("*/oned.conf/oned.conf"))
        assert [b.read_bytes() for b in backups] == [original]

    def test_admin_edits_made_after_install_survive_uninstall(self, frontend_70: FrontEnd) -> None:
        assert frontend_70.onevita("install").returncode == 0
        with frontend_70.oned_conf.open("a") as f:
            f.write("\n# added by the admin later\nKEEPALIVE_TIMEOUT = 15\n")
        assert frontend_70.onevita("uninstall").returncode == 0
        text = frontend_70.oned_conf.read_text()
        assert text.endswith("\n# added by the admin later\nKEEPALIVE_TIMEOUT = 15\n")
        assert oned_conf.check(text) != []  # our part is gone

    def test_a_self_contained_installation(self, frontend_70: FrontEnd) -> None:
        """ONE_LOCATION layout: $ONE_LOCATION/etc and $ONE_LOCATION/var/remotes."""
        location = frontend_70.root / "opt/one"
        (location / "etc/vmm_exec").mkdir(parents=True)
        (location / "var/remotes/datastore").mkdir(parents=True)
        os.replace(frontend_70.oned_conf, location / "etc/oned.conf")
        os.replace(frontend_70.vmm_execrc, location / "etc/vmm_exec/vmm_execrc")
        os.replace(frontend_70.downloader, location / "var/remotes/datastore/downloader.sh")
        proc = frontend_70.onevita("install", "--one-location", "/opt/one")
        assert proc.returncode == 0, proc.stderr
        assert oned_conf.check((location / "etc/oned.conf").read_text()) == []
        assert os.readlink(location / "var/remotes/tm/vitastor/clone") == LAUNCHER_LINK


    def test_as_root_with_the_trees_own_credentials(self, oned: OnedStandIn, tmp_path: Path,
                                                    world: Path) -> None:
        """No ONE_AUTH: install, run as root on a self-contained tree, signs in as that tree's
        oneadmin ($ONE_LOCATION/var/.one/one_auth) and reads the datastores."""
        frontend = make_frontend("7.0", tmp_path / "root", frontend_env(oned, tmp_path, world), "/srv/one")
        auth = frontend.var / ".one" / "one_auth"
        auth.parent.mkdir(parents=True)
        auth.write_text(Path(frontend.env.pop("ONE_AUTH")).read_text())
        oned.datastores[101] = docs.datastore_xml(101, name="a", ds_type=0, template={})
        proc = frontend.onevita("install")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] == f"OpenNebula credentials: {auth}"
        assert "datastores not read" not in proc.stdout
        assert oned.calls[-1][0] == "one.datastorepool.info"
        doctor = frontend.onevita("doctor")
        assert doctor.stdout.splitlines()[0] == f"INFO OpenNebula credentials: {auth}"


class TestBashDriverUpgrade:
    def test_its_scripts_are_replaced_and_come_back_on_uninstall(self, frontend_70: FrontEnd) -> None:
        tm = frontend_70.remotes / "tm/vitastor"
        tm.mkdir(parents=True)
        (tm / "clone").write_text("#!/bin/bash\n# the bash driver's clone\n")
        (tm / "monitor_ds").write_text("#!/bin/bash\n# a script onevita has no action for\n")
        deploy = frontend_70.remotes / "vmm/kvm/deploy.vitastor"
        deploy.write_text("#!/bin/bash\n# the bash driver's deploy\n")
        original = frontend_70.files()
        proc = frontend_70.onevita("install")
        assert proc.returncode == 0, proc.stderr
        assert os.readlink(tm / "clone") == LAUNCHER_LINK
        assert os.readlink(deploy) == LAUNCHER_LINK
        assert (tm / "monitor_ds").read_text().endswith("has no action for\n")
        assert any("the previous file kept in" in line and "tm/vitastor/clone" in line
                   for line in proc.stdout.splitlines())
        assert frontend_70.onevita("uninstall").returncode == 0
        after = {k: v for k, v in frontend_70.files().items() if not k.startswith("var/lib/one/onevita/backups/")}
        assert after == original


class TestFailures:
    def test_no_opennebula_here(self, frontend_70: FrontEnd) -> None:
        frontend_70.oned_conf.unlink()
        before = frontend_70.files()
        proc = frontend_70.onevita("install")
        assert proc.returncode == 1
        assert proc.stderr.splitlines()[-1] == (
            f"{frontend_70.oned_conf} not found: is OpenNebula installed here (see --root and --one-location)?")
        assert frontend_70.files() == before

    def test_a_file_install_cannot_read_stops_it_before_any_write(self, frontend_70: FrontEnd) -> None:
        frontend_70.oned_conf.write_text(frontend_70.oned_conf.read_text() + '\nTM_MAD_CONF = [\n  NAME = "x,\n')
        before = frontend_70.files()
        proc = frontend_70.onevita("install")
        assert proc.returncode == 1
        assert "oned.conf" in proc.stderr.splitlines()[-1]
        assert any(line.startswith("ERROR:") for line in proc.stderr.splitlines())
        assert frontend_70.files() == before

    def test_uninstall_without_install_does_nothing(self, frontend_70: FrontEnd) -> None:
        before = frontend_70.files()
        proc = frontend_70.onevita("uninstall")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == "OK, no Vitastor OpenNebula patches to remove"
        assert frontend_70.files() == before

    def test_unknown_option(self, frontend_70: FrontEnd) -> None:
        proc = frontend_70.onevita("install", "--frobnicate")
        assert proc.returncode == 2
        assert "unrecognized arguments: --frobnicate" in proc.stderr


class TestAppArmor:
    @staticmethod
    def enable_apparmor(frontend: FrontEnd) -> Path:
        """AppArmor on, libvirt's abstraction installed, its local include empty (Debian's postinst)."""
        enabled = frontend.root / "sys/module/apparmor/parameters/enabled"
        enabled.parent.mkdir(parents=True)
        enabled.write_text("Y\n")
        abstraction = frontend.root / "etc/apparmor.d/abstractions/libvirt-qemu"
        abstraction.parent.mkdir(parents=True)
        abstraction.write_text("  #include <local/abstractions/libvirt-qemu>\n")
        local = frontend.root / "etc/apparmor.d/local/abstractions/libvirt-qemu"
        local.parent.mkdir(parents=True)
        local.write_text("")
        return local

    def test_every_vitastor_datastore_conf_becomes_readable(self, frontend_70: FrontEnd,
                                                            oned: OnedStandIn) -> None:
        local = self.enable_apparmor(frontend_70)
        oned.datastores[101] = docs.datastore_xml(101, name="a", ds_type=0,
                                                  template={"VITASTOR_CONF": "/etc/vitastor/second.conf"})
        oned.datastores[102] = docs.datastore_xml(102, name="b", ds_type=0, template={})
        oned.datastores[103] = docs.datastore_xml(103, name="c", ds_type=0, ds_mad="fs", tm_mad="ssh",
                                                  template={"VITASTOR_CONF": "/etc/not/ours.conf"})
        original = frontend_70.files()
        proc = frontend_70.onevita("install")
        assert proc.returncode == 0, proc.stderr
        assert local.read_text().splitlines() == ["  /etc/vitastor/second.conf r,", "  /etc/vitastor/vitastor.conf r,"]
        assert frontend_70.onevita("install").stdout.splitlines()[-1] == ALREADY
        assert frontend_70.onevita("uninstall").returncode == 0
        after = {k: v for k, v in frontend_70.files().items() if not k.startswith("var/lib/one/onevita/backups/")}
        assert after == original

    def test_without_oned_only_the_default_path_and_a_note(self, frontend_70: FrontEnd) -> None:
        local = self.enable_apparmor(frontend_70)
        frontend_70.env["ONE_XMLRPC"] = "http://127.0.0.1:9/RPC2"
        proc = frontend_70.onevita("install")
        assert proc.returncode == 0, proc.stderr
        assert local.read_text() == "  /etc/vitastor/vitastor.conf r,\n"
        assert any(line.startswith("note: datastores not read from oned (") for line in proc.stdout.splitlines())


def test_what_install_makes_belongs_to_the_remotes_owner(frontend_70: FrontEnd) -> None:
    """oneadmin owns OpenNebula's remotes; root running install must not leave root-owned files."""
    if os.geteuid() != 0:
        pytest.skip("needs root to change owners")
    os.chown(frontend_70.remotes, 4321, 4321)
    assert frontend_70.onevita("install").returncode == 0
    for path in ("onevita", "onevita/onevita.pyz", "onevita/onevita", "tm/vitastor", "tm/vitastor/clone"):
        assert (frontend_70.remotes / path).lstat().st_uid == 4321, path
