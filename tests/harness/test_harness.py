"""Exercises the harness for real: daemons started and stopped, real requests, real ssh commands."""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import socket
import subprocess
import time
import xmlrpc.client
from pathlib import Path
from typing import Any, Iterator

import pytest
from lxml import etree

from onevita.one.environment import tool_path
from tests.cloud import Cloud
from tests.harness import documents as doc
from tests.harness.etcd_server import EtcdServer
from tests.harness.oned import (
    AUTHENTICATION,
    FAULT_NO_SUCH_METHOD,
    FAULT_TYPE,
    INTERNAL,
    NO_EXISTS,
    OnedStandIn,
)
from tests.harness.sshd import Sshd
from tests.harness.user import PATH, ActionUser

FIXTURES = Path("/work/shared/reference/fixtures")
ONE_NS = "http://opennebula.org/XMLSchema"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="sshd needs root to log in as another user")


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# --------------------------------------------------------------------------------------------- etcd

def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def etcd_daemon(tmp_path: Path) -> Iterator[EtcdServer]:
    if not Path("/usr/bin/etcd").exists():
        pytest.skip("etcd is not installed")
    with EtcdServer(tmp_path) as server:
        yield server


def test_etcd_serves_kv_on_loopback(etcd_daemon: EtcdServer) -> None:
    assert etcd_daemon.url == f"http://127.0.0.1:{etcd_daemon.client_port}"
    assert etcd_daemon.status()["leader"] != "0"
    key = _b64("/vitastor/config/global")
    etcd_daemon.post("/v3/kv/put", {"key": key, "value": _b64('{"immediate_commit":"all"}')})
    found = etcd_daemon.post("/v3/kv/range", {"key": key})
    assert base64.b64decode(found["kvs"][0]["value"]) == b'{"immediate_commit":"all"}'


def test_etcd_accepts_transactions_beyond_the_default_op_limit(etcd_daemon: EtcdServer) -> None:
    puts = [{"requestPut": {"key": _b64(f"/vitastor/inode/1/{i}"), "value": _b64("{}")}} for i in range(500)]
    assert etcd_daemon.post("/v3/kv/txn", {"success": puts})["succeeded"] is True
    counted = etcd_daemon.post("/v3/kv/range", {"key": _b64("/vitastor/inode/1/"),
                                                "range_end": _b64("/vitastor/inode/10"), "count_only": True})
    assert counted["count"] == "500"


def test_etcd_restart_keeps_url_and_data(etcd_daemon: EtcdServer) -> None:
    url = etcd_daemon.url
    etcd_daemon.post("/v3/kv/put", {"key": _b64("k"), "value": _b64("v")})
    etcd_daemon.stop()
    assert _port_closed(etcd_daemon.client_port)
    etcd_daemon.start()
    assert etcd_daemon.url == url
    assert etcd_daemon.post("/v3/kv/range", {"key": _b64("k")})["count"] == "1"


def test_etcd_start_failure_raises_with_log_tail(tmp_path: Path) -> None:
    (tmp_path / "broken.etcd").write_text("not a directory")
    server = EtcdServer(tmp_path, name="broken")
    with pytest.raises(RuntimeError, match="not a directory"):
        server.start()
    server.stop()


# --------------------------------------------------------------------------------------------- sshd

REMOTE_ENV = {"PATH": "/opt/onevita/bin:/usr/bin:/bin", "ONEVITA_TEST": 'two words "quoted" \\slash $HOME #x'}


@pytest.fixture
def sshd_daemon(tmp_path: Path, action_user: ActionUser) -> Iterator[Sshd]:
    if not (Path("/usr/sbin/sshd").exists() and shutil.which("ssh")):
        pytest.skip("OpenSSH is not installed")
    with Sshd(tmp_path, user=action_user, env=REMOTE_ENV) as server:
        yield server


@needs_root
def test_ssh_reaches_every_alias_as_the_user_with_the_configured_environment(sshd_daemon: Sshd,
                                                                              action_user: ActionUser) -> None:
    for alias in ("node1", "node2", "bridge1", "bridge2"):
        result = sshd_daemon.run(alias, 'printf "%s\\n%s\\n" "$PATH" "$ONEVITA_TEST"; id -un; id -u')
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [REMOTE_ENV["PATH"], REMOTE_ENV["ONEVITA_TEST"], action_user.name,
                                              str(action_user.uid)]


@needs_root
def test_root_cannot_log_in(sshd_daemon: Sshd) -> None:
    """Nothing on the "hosts" can fall back to running as root."""
    argv = ["ssh", "-F", str(sshd_daemon.config_path), "-o", "User=root", "node1", "true"]
    refused = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr


@needs_root
def test_ssh_passes_stdin_and_exit_codes(sshd_daemon: Sshd) -> None:
    piped = subprocess.run(sshd_daemon.ssh_argv("node1", "cat; exit 7"), input=b"payload\x00bytes",
                           capture_output=True, check=False, timeout=30)
    assert (piped.returncode, piped.stdout) == (7, b"payload\x00bytes")


@needs_root
def test_ssh_verifies_the_host_key(sshd_daemon: Sshd) -> None:
    argv = ["ssh", "-F", str(sshd_daemon.config_path), "-o", "UserKnownHostsFile=/dev/null", "node1", "true"]
    unknown = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    assert unknown.returncode == 255
    assert "Host key verification failed" in unknown.stderr


@needs_root
def test_deadhost_fails_fast_like_an_unreachable_host(sshd_daemon: Sshd) -> None:
    started = time.monotonic()
    result = sshd_daemon.run("deadhost", "true")
    assert result.returncode == 255
    assert "Connection refused" in result.stderr
    assert time.monotonic() - started < 5


@needs_root
def test_sshd_stop_and_restart_keep_the_port(sshd_daemon: Sshd) -> None:
    port = sshd_daemon.port
    sshd_daemon.stop()
    assert _port_closed(port)
    assert sshd_daemon.run("node1", "true").returncode == 255
    sshd_daemon.start()
    assert sshd_daemon.port == port
    assert sshd_daemon.run("node1", "true").returncode == 0


def test_sshd_rejects_unusable_environment(tmp_path: Path, action_user: ActionUser) -> None:
    with pytest.raises(ValueError, match="invalid environment variable name"):
        Sshd(tmp_path, user=action_user, env={"BAD-NAME": "x"})
    with pytest.raises(ValueError, match="line break"):
        Sshd(tmp_path, user=action_user, env={"MULTI": "a\nb"})


# ------------------------------------------------------------------------------ the action user

@needs_root
def test_hosts_sessions_run_as_the_action_user_with_debians_path(sshd: Sshd, action_user: ActionUser) -> None:
    """The session sshd, which every action reaches its hosts through, runs commands as the
    unprivileged user with Debian's PATH for users other than root."""
    result = sshd.run("node1", 'id -un; printf "%s\\n" "$PATH"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [action_user.name, PATH]


@needs_root
def test_actions_run_as_the_action_user(cloud: Cloud, action_user: ActionUser, tmp_path: Path) -> None:
    """The driver starts as the unprivileged user with Debian's PATH, which onevita extends as
    OpenNebula's scripts do before running anything (here: the ``$SSH`` wrapper); what it runs
    on a host over ssh creates files as that user, not root."""
    assert cloud.env["PATH"] == PATH
    seen = tmp_path / "seen"
    wrapper = tmp_path / "ssh"
    wrapper.write_text(f'#!/bin/sh\nid -un > {seen}\nprintf "%s\\n" "$PATH" >> {seen}\nexec ssh "$@"\n')
    wrapper.chmod(0o755)
    cloud.env["SSH"] = str(wrapper)
    src, dst = tmp_path / "node1" / "100" / "12", tmp_path / "node2" / "100" / "12"
    src.mkdir(parents=True)
    (src / "deployment.0").write_text("<domain/>\n")
    cloud.add_vm(12, [], host="node1")
    cloud.ok("tm/mv", f"node1:{src}", f"node2:{dst}", "12", "100")
    assert seen.read_text().splitlines() == [action_user.name, tool_path(PATH)]
    made_on_node2 = tmp_path / "node2"  # by the ssh session that prepares the destination
    assert (made_on_node2.stat().st_uid, (dst / "deployment.0").read_text()) == (action_user.uid, "<domain/>\n")


# --------------------------------------------------------------------------------------------- oned

@pytest.fixture
def stand_in() -> Iterator[OnedStandIn]:
    with OnedStandIn() as server:
        yield server


class _TimeoutTransport(xmlrpc.client.Transport):
    """xmlrpc.client's transport has no timeout of its own; a hung oned must not hang the test."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def _proxy(stand_in: OnedStandIn, timeout: float = 5.0) -> Any:
    return xmlrpc.client.ServerProxy(stand_in.endpoint, transport=_TimeoutTransport(timeout))


def _post(conn: http.client.HTTPConnection, method: str, *params: Any) -> bytes:
    conn.request("POST", "/RPC2", xmlrpc.client.dumps(params, method), {"Content-Type": "text/xml"})
    reply = conn.getresponse()
    assert reply.status == 200
    return reply.read()


@pytest.mark.parametrize(("method", "store", "document"), [
    ("one.vm.info", "vms", doc.vm_xml(12, disks=[])),
    ("one.datastore.info", "datastores", doc.datastore_xml(12, name="img", ds_type=0, template={})),
    ("one.image.info", "images", doc.image_xml(12, name="i", source="one-12", size_mb=1, ds_id=101,
                                               persistent=False)),
    ("one.host.info", "hosts", doc.host_xml(12, "node1")),
])
def test_info_methods_answer_the_stored_document(stand_in: OnedStandIn, method: str, store: str,
                                                 document: str) -> None:
    getattr(stand_in, store)[12] = document
    call = getattr(_proxy(stand_in), method)
    assert call(stand_in.session, 12) == [True, document, 0]
    assert call(stand_in.session, 12, True) == [True, document, 0]


def test_documents_travel_as_xml_text_over_keep_alive(stand_in: OnedStandIn) -> None:
    stand_in.vms[12] = "<VM><ID>12</ID></VM>"
    conn = http.client.HTTPConnection("127.0.0.1", stand_in.port, timeout=5)
    first = _post(conn, "one.vm.info", stand_in.session, 12)
    second = _post(conn, "one.vm.info", stand_in.session, 12)
    conn.close()
    assert first == second
    assert b"<value><boolean>1</boolean></value>" in first
    assert b"<value><string>&lt;VM&gt;&lt;ID&gt;12&lt;/ID&gt;&lt;/VM&gt;</string></value>" in first


def test_missing_object_is_no_exists(stand_in: OnedStandIn) -> None:
    assert _proxy(stand_in).one.vm.info(stand_in.session, 13) == [
        False, "[one.vm.info] Error getting virtual machine [13].", NO_EXISTS, 13, 0]
    missing_image = _proxy(stand_in).one.image.info(stand_in.session, 7)
    assert missing_image[1:3] == ["[one.image.info] Error getting image [7].", NO_EXISTS]


def test_wrong_session_is_an_authentication_error(stand_in: OnedStandIn) -> None:
    stand_in.vms[12] = doc.vm_xml(12, disks=[])
    assert _proxy(stand_in).one.vm.info("oneadmin:wrong", 12) == [
        False, "[one.vm.info] User couldn't be authenticated, aborting call.", AUTHENTICATION, -1, 0]


def test_bad_parameters_and_unknown_methods_are_faults(stand_in: OnedStandIn) -> None:
    with pytest.raises(xmlrpc.client.Fault) as wrong_type:
        _proxy(stand_in).one.vm.info(stand_in.session, "12")
    assert wrong_type.value.faultCode == FAULT_TYPE
    with pytest.raises(xmlrpc.client.Fault) as unknown:
        _proxy(stand_in).one.vm.deploy(stand_in.session, 12, 0)
    assert unknown.value.faultCode == FAULT_NO_SUCH_METHOD


def test_hostpool_lists_hosts_in_id_order(stand_in: OnedStandIn) -> None:
    stand_in.hosts[1] = doc.host_xml(1, "node2", doc.HOST_OFFLINE)
    stand_in.hosts[0] = doc.host_xml(0, "node1")
    ok, pool, code = _proxy(stand_in).one.hostpool.info(stand_in.session)
    assert (ok, code) == (True, 0)
    assert pool == doc.host_pool_xml([(0, "node1", doc.HOST_MONITORED), (1, "node2", doc.HOST_OFFLINE)])
    hosts = etree.fromstring(pool).findall("HOST")
    assert [(h.findtext("NAME"), h.findtext("STATE")) for h in hosts] == [("node1", "2"), ("node2", "8")]


def test_calls_are_recorded_until_reset(stand_in: OnedStandIn) -> None:
    stand_in.datastores[101] = doc.datastore_xml(101, name="img", ds_type=0, template={})
    proxy = _proxy(stand_in)
    proxy.one.datastore.info(stand_in.session, 101, True)
    proxy.one.vm.info(stand_in.session, 5)
    assert stand_in.calls == [("one.datastore.info", (stand_in.session, 101, True)),
                              ("one.vm.info", (stand_in.session, 5))]
    stand_in.reset()
    assert (stand_in.calls, stand_in.datastores) == ([], {})


def test_fail_next_fails_one_call(stand_in: OnedStandIn) -> None:
    stand_in.vms[12] = doc.vm_xml(12, disks=[])
    stand_in.fail_next("one.vm.info", INTERNAL, "Error getting virtual machine [12]: database locked.")
    proxy = _proxy(stand_in)
    assert proxy.one.vm.info(stand_in.session, 12) == [
        False, "[one.vm.info] Error getting virtual machine [12]: database locked.", INTERNAL, 12, 0]
    assert proxy.one.vm.info(stand_in.session, 12)[0] is True


def test_hang_next_times_out_the_client_and_stop_releases_it() -> None:
    stand_in = OnedStandIn().start()
    stand_in.vms[12] = doc.vm_xml(12, disks=[])
    stand_in.hang_next("one.vm.info", 60)
    with pytest.raises(socket.timeout):  # TimeoutError from 3.10 on, its own class in 3.9
        _proxy(stand_in, timeout=0.5).one.vm.info(stand_in.session, 12)
    assert _proxy(stand_in).one.vm.info(stand_in.session, 12)[0] is True
    started = time.monotonic()
    port = stand_in.port
    stand_in.stop()
    assert time.monotonic() - started < 5
    assert _port_closed(port)


# ---------------------------------------------------------------------------------------- documents

_SHARED_XSD = f"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns="{ONE_NS}"
    targetNamespace="{ONE_NS}" elementFormDefault="qualified">
  <xs:complexType name="PERMISSIONS"><xs:sequence>{"".join(
      f'<xs:element name="{who}_{right}" type="xs:integer"/>' for who in ("OWNER", "GROUP", "OTHER")
      for right in "UMA")}</xs:sequence></xs:complexType>
  <xs:complexType name="IDS"><xs:sequence>
    <xs:element name="ID" type="xs:integer" minOccurs="0" maxOccurs="unbounded"/>
  </xs:sequence></xs:complexType>
  <xs:complexType name="LOCK"><xs:sequence>
    <xs:any processContents="skip" minOccurs="0" maxOccurs="unbounded"/></xs:sequence></xs:complexType>
  <xs:complexType name="SCHED_ACTION"><xs:sequence>
    <xs:any processContents="skip" minOccurs="0" maxOccurs="unbounded"/></xs:sequence></xs:complexType>
</xs:schema>"""


class _SharedXsd(etree.Resolver):
    """The fixtures ship vm/image/datastore XSDs without the shared.xsd they include; stand in for it
    (only the types they use: PERMISSIONS and IDS strictly, LOCK and SCHED_ACTION loosely)."""

    def resolve(self, url: str, pubid: str, context: Any) -> Any:
        if url.endswith("/shared.xsd") and not Path(url).exists():
            return self.resolve_string(_SHARED_XSD, context)
        return None


def _schema(kind: str) -> etree.XMLSchema:
    path = FIXTURES / f"one-xsd_{kind}.xsd"
    if not path.exists():
        pytest.skip(f"{path} is not available")
    parser = etree.XMLParser()
    parser.resolvers.add(_SharedXsd())
    return etree.XMLSchema(etree.parse(str(path), parser))


def _assert_valid(kind: str, text: str) -> None:
    """Validate against oned's XSD; the XSDs declare a target namespace that oned's output does not
    carry, so a namespaced copy is validated."""
    root = etree.fromstring(text)
    for element in root.iter():
        if isinstance(element.tag, str):
            element.tag = f"{{{ONE_NS}}}{element.tag}"
    schema = _schema(kind)
    assert schema.validate(root), schema.error_log


INHERITED = {"POOL_NAME": "testpool", "IMAGE_PREFIX": "one", "VITASTOR_CONF": "/etc/vitastor/vitastor.conf"}


def _sample_vm(**kwargs: Any) -> str:
    disks = [doc.image_disk(0, 5, source="one-5", clone=True, size_mb=2048, extra=INHERITED),
             doc.image_disk(1, 7, source="one-7", clone=False, persistent=True, size_mb=512, extra=INHERITED),
             doc.volatile_disk(2, size_mb=1024, fs="ext4", extra=INHERITED)]
    return doc.vm_xml(12, disks=disks, context_disk_id=3, deploy_id="one-12", **kwargs)


def test_vm_xml_validates_and_reads_like_onevm_show() -> None:
    text = _sample_vm()
    _assert_valid("vm", text)
    _assert_valid("vm", doc.vm_xml(13, disks=[], host=None, lcm_state=0, state=1))
    vm = etree.fromstring(text)
    assert vm.findtext("HISTORY_RECORDS/HISTORY[last()]/HOSTNAME") == "node1"
    assert vm.findtext("HISTORY_RECORDS/HISTORY[last()]/DS_ID") == "100"
    assert vm.findtext("TEMPLATE/CONTEXT/DISK_ID") == "3"
    assert vm.findtext("TEMPLATE/TM_MAD_SYSTEM") == "vitastor"
    assert (vm.findtext("DEPLOY_ID"), vm.findtext("LCM_STATE")) == ("one-12", "3")
    assert "<SOURCE><![CDATA[one-5]]></SOURCE>" in text


def test_disk_dicts_keep_their_order_and_shape() -> None:
    clone = doc.image_disk(0, 5, source="one-5", clone=True, size_mb=2048, extra={"POOL_NAME": "p"})
    persistent = doc.image_disk(1, 7, source="one-7", clone=False, persistent=True, size_mb=512)
    volatile = doc.volatile_disk(26, size_mb=1024, type="swap", sys_ds_id=100)
    assert list(clone)[:4] == ["DISK_ID", "IMAGE", "IMAGE_ID", "SOURCE"] and list(clone)[-1] == "POOL_NAME"
    assert (clone["CLONE"], "PERSISTENT" in clone, clone["TARGET"]) == ("YES", False, "vda")
    assert (persistent["CLONE"], persistent["PERSISTENT"], persistent["SAVE"]) == ("NO", "YES", "YES")
    assert not {"SOURCE", "CLONE", "IMAGE_ID"} & set(volatile)
    assert (volatile["TYPE"], volatile["DATASTORE_ID"], volatile["TARGET"]) == ("swap", "100", "vdaa")
    disk = etree.fromstring(doc.vm_xml(1, disks=[clone])).find("TEMPLATE/DISK")
    assert [child.tag for child in disk] == list(clone)


def test_image_xml_validates_with_snapshots() -> None:
    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    text = doc.image_xml(7, name="data", source="one-7", size_mb=512, ds_id=101, persistent=True,
                         snapshots=[0, 1, 2], target_snapshot=1, template={"MD5": md5})
    _assert_valid("image", text)
    _assert_valid("image", doc.image_xml(8, name="new", source="", size_mb=10, ds_id=101, persistent=False,
                                         path="/var/tmp/new.qcow2", format="qcow2"))
    image = etree.fromstring(text)
    assert image.findtext("TARGET_SNAPSHOT") == "1"
    assert image.findtext("SNAPSHOTS/NEXT_SNAPSHOT") == "3"
    assert [s.findtext("ID") for s in image.iterfind("SNAPSHOTS/SNAPSHOT")] == ["0", "1", "2"]
    assert (image.findtext("PERSISTENT"), image.findtext("TEMPLATE/MD5")) == ("1", md5)


def test_datastore_xml_validates_for_image_and_system_datastores() -> None:
    image_ds = doc.datastore_xml(101, name="Vitastor Images", ds_type=0, images=[5, 7],
                                 template={"BRIDGE_LIST": "bridge1 bridge2", "POOL_NAME": "testpool"})
    system_ds = doc.datastore_xml(100, name="Vitastor System", ds_type=1, ds_mad="-",
                                  template={"SHARED": "YES"})
    _assert_valid("datastore", image_ds)
    _assert_valid("datastore", system_ds)
    ds = etree.fromstring(image_ds)
    assert ds.findtext("TEMPLATE/BRIDGE_LIST") == "bridge1 bridge2"
    assert ds.findtext("BASE_PATH") == "/var/lib/one//datastores/101"
    assert [i.text for i in ds.iterfind("IMAGES/ID")] == ["5", "7"]


def test_ds_driver_action_data_is_single_line_base64() -> None:
    image = doc.image_xml(5, name="debian", source="", size_mb=2048, ds_id=101, persistent=False,
                          path="/tmp/debian.qcow2")
    datastore = doc.datastore_xml(101, name="img", ds_type=0, template={"BRIDGE_LIST": "bridge1"})
    text = doc.ds_driver_action_data(image, datastore, extra={"DATASTORE_LOCATION": doc.DATASTORE_LOCATION})
    encoded = doc.encode_b64(text)
    assert "\n" not in encoded
    assert base64.b64decode(encoded).decode() == text
    root = etree.fromstring(text)
    assert [child.tag for child in root] == ["IMAGE", "DATASTORE", "DATASTORE_LOCATION"]
    assert "<BRIDGE_LIST><![CDATA[bridge1]]></BRIDGE_LIST>" in text
    assert root.findtext("DATASTORE/TEMPLATE/BRIDGE_LIST") == "bridge1"
    assert root.findtext("DATASTORE_LOCATION") == "/var/lib/one//datastores"
