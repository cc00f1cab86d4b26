"""Failure modes end in OpenNebula's format and leave nothing half-made.

Every failing action exits 1, writes its reason as a plain stderr line (what oned stores in the
VM's or image's ERROR; ``Result.reason``) and at least one ``ERROR:`` line (oned.log), and the
cluster's catalog is as it was before.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from onevita.vitastor.catalog import Catalog
from onevita.vitastor.jobs import open_catalog
from tests.cloud import IMAGE_DS, REMOTES, Cloud, Result, write_oned_config
from tests.harness import documents as docs
from tests.harness._process import free_ports
from tests.harness.sshd import Sshd

MIB = 1 << 20
SYSDIR = "/var/lib/one//datastores/100/12"
DISK0 = f"node1:{SYSDIR}/disk.0"
ssh_only = pytest.mark.parametrize("cloud", ["ssh"], indirect=True)


def catalog(cloud: Cloud) -> Catalog:
    return open_catalog(str(cloud.cluster.config_path))


def assert_failed(result: Result, reason: str) -> None:
    """OpenNebula's failure format: exit 1, the reason as the last plain stderr line, ERROR: lines."""
    plain = [line.strip() for line in result.stderr.splitlines()
             if line.strip() and not line.startswith(("ERROR:", "INFO:", "WARN:", "DEBUG:"))]
    assert result.rc == 1, result.stderr
    assert result.reason == reason
    assert plain[-1] == reason
    assert result.errors, result.stderr
    assert result.stdout == ""


@pytest.fixture()
def vm12(cloud: Cloud) -> Iterator[Cloud]:
    """Image ``<prefix>-5`` in the cluster and VM 12 on node1 with a clone of it as disk 0;
    afterwards the catalog must be as it was."""
    src = f"{cloud.prefix}-5"
    cat = catalog(cloud)
    cat.create(src, 64 * MIB, cat.pool(cloud.pool))
    cloud.add_vm(12, [docs.image_disk(0, 5, source=src, clone=True, size_mb=64)])
    before = cloud.own_inodes()
    yield cloud
    assert cloud.own_inodes() == before


def clone(cloud: Cloud, dst: str = DISK0, env: dict[str, str] | None = None) -> Result:
    return cloud.run("tm/clone", f"one-fe:{cloud.prefix}-5", dst, "12", str(IMAGE_DS), env=env)


def closed_port() -> int:
    return free_ports(1)[0]


def write_conf(path: Path, **conf: object) -> str:
    path.write_text(orjson.dumps(conf).decode())
    return str(path)


# the Vitastor cluster ---------------------------------------------------------------------------
def test_etcd_down(vm12: Cloud, tmp_path: Path) -> None:
    port = closed_port()
    conf = write_conf(tmp_path / "down.conf", etcd_address=f"127.0.0.1:{port}", etcd_prefix="/vitastor")
    vm12.add_datastores(VITASTOR_CONF=conf)
    assert_failed(clone(vm12), f"etcd is unreachable (127.0.0.1:{port}: [Errno 111] Connection refused)")


def test_missing_vitastor_conf(vm12: Cloud, tmp_path: Path) -> None:
    vm12.add_datastores(VITASTOR_CONF=f"{tmp_path}/nothing.conf")
    assert_failed(clone(vm12), f"Vitastor configuration {tmp_path}/nothing.conf does not exist")


def test_relative_vitastor_conf(vm12: Cloud) -> None:
    vm12.add_datastores(VITASTOR_CONF="etc/vitastor/vitastor.conf")
    assert_failed(clone(vm12), "datastore 101: VITASTOR_CONF must be an absolute path, "
                               "got 'etc/vitastor/vitastor.conf'")


def test_vitastor_conf_with_shell_metacharacters_runs_nothing(vm12: Cloud, tmp_path: Path) -> None:
    """VITASTOR_CONF travels as one argument (JSON to the host, argv to vitastor-cli), never
    through a shell: the command in it is not run."""
    pwned = tmp_path / "pwned"
    conf = f"{vm12.cluster.config_path};touch {pwned}"
    vm12.add_datastores(VITASTOR_CONF=conf)
    assert_failed(clone(vm12), f"Vitastor configuration {conf} does not exist")
    assert not pwned.exists()


@pytest.mark.parametrize(("attribute", "value"), [("POOL_NAME", "testpool;id"), ("POOL_NAME", "-p"),
                                                  ("IMAGE_PREFIX", "one $(id)"), ("IMAGE_PREFIX", "../one")])
def test_storage_attributes_with_metacharacters(vm12: Cloud, attribute: str, value: str) -> None:
    vm12.add_datastores(**{attribute: value})
    assert_failed(clone(vm12), f"invalid {attribute} {value!r}")


# hosts and ssh ----------------------------------------------------------------------------------
@ssh_only
def test_tm_action_on_a_dead_host(vm12: Cloud, sshd: Sshd) -> None:
    result = clone(vm12, f"deadhost:{SYSDIR}/disk.0")
    assert_failed(result, f"ssh to deadhost failed: ssh: connect to host 127.0.0.1 port {sshd.dead_port}: "
                          "Connection refused")


@ssh_only
def test_datastore_action_on_a_dead_bridge(cloud: Cloud, sshd: Sshd) -> None:
    """BRIDGE_LIST names a host that is down: the image is kept."""
    src = f"{cloud.prefix}-7"
    cat = catalog(cloud)
    cat.create(src, 64 * MIB, cat.pool(cloud.pool))
    before = cloud.own_inodes()
    cloud.add_datastores(BRIDGE_LIST="deadhost")
    image = docs.image_xml(7, name="image-7", source=src, size_mb=64, ds_id=IMAGE_DS, persistent=True)
    result = cloud.run("datastore/rm", "7", stdin=cloud.action_data(image=image))
    assert_failed(result, f"ssh to deadhost failed: ssh: connect to host 127.0.0.1 port {sshd.dead_port}: "
                          "Connection refused")
    assert cloud.own_inodes() == before


@ssh_only
def test_driver_missing_on_the_host(vm12: Cloud, tmp_path: Path) -> None:
    """The remotes were never synced to the host: the reason says how to fix it."""
    remote_dir = tmp_path / "not-synced"
    write_oned_config(tmp_path / "one" / "var", SCRIPTS_REMOTE_DIR=str(remote_dir))
    result = clone(vm12, env={"ONE_LOCATION": str(tmp_path / "one")})
    assert result.rc == 1
    assert result.reason.startswith(f"cannot run {remote_dir}/onevita/onevita on node1 (")
    assert result.reason.endswith("No such file or directory): copy the driver to the hosts with "
                                  "'onehost sync --force'")
    assert result.errors


@pytest.mark.parametrize("host", ["-oProxyCommand=touch${IFS}/tmp/pwned", "-p2222", "node1;id"])
def test_host_names_that_are_not_host_names(vm12: Cloud, host: str) -> None:
    assert_failed(clone(vm12, f"{host}:{SYSDIR}/disk.0"), f"invalid host name {host!r}")


def test_bridge_list_with_an_option(cloud: Cloud) -> None:
    cloud.add_datastores(BRIDGE_LIST="bridge1 -oProxyCommand=id")
    image = docs.image_xml(7, name="image-7", source="one-7", size_mb=64, ds_id=IMAGE_DS, persistent=True)
    result = cloud.run("datastore/rm", "7", stdin=cloud.action_data(image=image))
    assert_failed(result, "invalid host name '-oProxyCommand=id'")


# oned -------------------------------------------------------------------------------------------
def test_oned_unreachable(vm12: Cloud) -> None:
    url = f"http://127.0.0.1:{closed_port()}/RPC2"
    assert_failed(clone(vm12, env={"ONE_XMLRPC": url}),
                  f"cannot reach OpenNebula at {url}: [Errno 111] Connection refused")


def test_wrong_credentials(vm12: Cloud, tmp_path: Path) -> None:
    auth = tmp_path / "wrong_auth"
    auth.write_text("oneadmin:wrong\n")
    assert_failed(clone(vm12, env={"ONE_AUTH": str(auth)}),
                  "[one.vm.info] User couldn't be authenticated, aborting call. (AUTHENTICATION)")


def test_no_credentials(vm12: Cloud, tmp_path: Path) -> None:
    if Path("/var/lib/one/.one/one_auth").exists():
        pytest.skip("this machine has oneadmin's credentials")
    result = clone(vm12, env={"ONE_AUTH": str(tmp_path / "none"), "HOME": str(tmp_path)})
    assert_failed(result, "no OpenNebula credentials: set ONE_AUTH or create ~/.one/one_auth")


def test_vm_that_does_not_exist(vm12: Cloud) -> None:
    result = vm12.run("tm/clone", f"one-fe:{vm12.prefix}-5", "node1:/var/lib/one//datastores/100/13/disk.0",
                      "13", str(IMAGE_DS))
    assert_failed(result, "[one.vm.info] Error getting virtual machine [13]. (NO_EXISTS)")


def test_vm_without_that_disk(vm12: Cloud) -> None:
    assert_failed(clone(vm12, f"node1:{SYSDIR}/disk.3"), "VM 12 has no disk 3")


def test_datastore_that_does_not_exist(vm12: Cloud) -> None:
    result = vm12.run("tm/clone", f"one-fe:{vm12.prefix}-5", DISK0, "12", "107")
    assert_failed(result, "[one.datastore.info] Error getting datastore [107]. (NO_EXISTS)")


# the host side of a job -------------------------------------------------------------------------
def host_job(cloud: Cloud, request: bytes) -> tuple[int, dict[str, object], str]:
    """``<remotes>/onevita/onevita host-job`` with ``request`` on stdin: (rc, reply, stderr)."""
    proc = cloud.process([str(REMOTES / "onevita" / "onevita"), "host-job"], stdin=request, timeout=60)
    return proc.returncode, orjson.loads(proc.stdout), proc.stderr.decode()


@ssh_only
@pytest.mark.parametrize(("request_", "kind", "message"), [
    (b'{"job": "nope", "params": {}}', "BadRequest", "unknown onevita host job 'nope'"),
    (b'{"job": "exists", "params": {"conf": null, "name": "x", "bogus": 1}}', "BadRequest",
     "bad parameters for host job 'exists': exists() got an unexpected keyword argument 'bogus'"),
    (b'{"job": "exists", "params": {}}', "BadRequest",
     "bad parameters for host job 'exists': exists() missing 2 required positional arguments: 'conf' and 'name'"),
    (b'{"job": "exists", "params": ["x"]}', "BadRequest", "host-job expects a JSON object with job and params"),
    (b'["exists"]', "BadRequest", "host-job expects a JSON object with job and params"),
])
def test_host_job_refuses_bad_requests(cloud: Cloud, request_: bytes, kind: str, message: str) -> None:
    rc, reply, _ = host_job(cloud, request_)
    assert (rc, reply) == (1, {"error": {"kind": kind, "message": message}})


@ssh_only
def test_host_job_checks_names(cloud: Cloud) -> None:
    request = orjson.dumps({"job": "delete", "params": {"conf": str(cloud.cluster.config_path), "name": "a;b"}})
    rc, reply, _ = host_job(cloud, request)
    assert (rc, reply) == (1, {"error": {"kind": "BadName", "message": "invalid Vitastor image name 'a;b'"}})


@ssh_only
def test_host_job_refuses_what_is_not_json(cloud: Cloud) -> None:
    rc, reply, _ = host_job(cloud, b"exists one-5")
    assert rc == 1
    assert reply["error"] == {"kind": "BadRequest", "message": "host-job request is not JSON: unexpected "
                                                              "character: line 1 column 1 (char 0)"}


# internal errors --------------------------------------------------------------------------------
def test_bad_etcd_port_is_a_configuration_error(vm12: Cloud, tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "badport.conf", etcd_address="127.0.0.1:notaport")
    vm12.add_datastores(VITASTOR_CONF=conf)
    assert_failed(clone(vm12), "etcd_address '127.0.0.1:notaport': 'notaport' is not a port number")


@contextmanager
def corrupt_pools(cloud: Cloud) -> Iterator[None]:
    """A /config/pools value no Vitastor tool would write (onevita has no message for it),
    put back afterwards. Fault injection: never on a real cluster, whose monitor reads that key."""
    if not cloud.cluster.simulated:
        pytest.skip("corrupts /config/pools, which a real cluster's monitor and OSDs read")
    etcd, key = cloud.cluster.etcd(), cloud.cluster.config.etcd_prefix + "/config/pools"
    original = etcd.get(key)
    assert original is not None
    etcd.put(key, '{"1": {"name": "testpool", "scheme": "replicated", "pg_size": "x"}}')
    try:
        yield
    finally:
        etcd.put(key, original.value)


BAD_POOL = "ValueError: invalid literal for int() with base 10: 'x'"


def test_internal_error_is_reported_in_oned_format(vm12: Cloud) -> None:
    """An unexpected exception still gives oned a reason, and the traceback goes to oned.log."""
    with corrupt_pools(vm12):
        result = clone(vm12)
    if vm12.mode == "ssh":
        assert_failed(result, f"internal error in onevita job clone on node1: {BAD_POOL}")
    else:
        assert_failed(result, f"internal error in onevita tm/clone: {BAD_POOL}")
    assert any("Traceback (most recent call last):" in line for line in result.errors)


@ssh_only
def test_host_job_internal_error_is_a_reply(cloud: Cloud) -> None:
    request = orjson.dumps({"job": "exists", "params": {"conf": str(cloud.cluster.config_path), "name": "one-5"}})
    with corrupt_pools(cloud):
        rc, reply, stderr = host_job(cloud, request)
    assert (rc, reply) == (1, {"error": {"kind": "InternalError", "message": BAD_POOL}})
    assert "ERROR: host-job/exists: Traceback (most recent call last):" in stderr
