"""The in-process XML-RPC client against the oned stand-in: replies, OpenNebula's error arrays,
faults, and where the endpoint and the session come from (as the OpenNebula CLI finds them)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from onevita.errors import OpenNebulaError
from onevita.one import xmlrpc
from onevita.one.xmlrpc import DEFAULT_ENDPOINT, OneClient, endpoint, session
from tests.harness import documents as docs
from tests.harness.oned import INTERNAL, OnedStandIn


@pytest.fixture()
def client(oned: OnedStandIn) -> OneClient:
    return OneClient(oned.endpoint, oned.session)


class TestCalls:
    def test_vm_info_returns_the_document(self, oned: OnedStandIn, client: OneClient) -> None:
        oned.vms[12] = docs.vm_xml(12, disks=[docs.volatile_disk(0, size_mb=64)])
        assert client.vm_info(12) == oned.vms[12]
        assert oned.calls == [("one.vm.info", (oned.session, 12, True))]

    def test_other_info_calls(self, oned: OnedStandIn, client: OneClient) -> None:
        oned.datastores[100] = docs.datastore_xml(100, name="sys", ds_type=1, template={"A": "<&>"})
        oned.images[5] = docs.image_xml(5, name="img", source="one-5", size_mb=64, ds_id=101, persistent=True)
        oned.hosts[0] = docs.host_xml(0, "node1")
        assert client.datastore_info(100) == oned.datastores[100]
        assert client.image_info(5) == oned.images[5]
        assert client.hostpool_info() == f"<HOST_POOL>{oned.hosts[0]}</HOST_POOL>"
        assert [c[0] for c in oned.calls] == ["one.datastore.info", "one.image.info", "one.hostpool.info"]

    def test_keep_alive_connection_is_reused(self, oned: OnedStandIn, client: OneClient) -> None:
        oned.vms[1] = docs.vm_xml(1, disks=[])
        for _ in range(3):
            client.vm_info(1)
        assert len(oned.calls) == 3

    def test_no_exists(self, client: OneClient) -> None:
        with pytest.raises(OpenNebulaError) as info:
            client.vm_info(99)
        assert str(info.value) == "[one.vm.info] Error getting virtual machine [99]. (NO_EXISTS)"

    def test_authentication(self, oned: OnedStandIn) -> None:
        oned.vms[1] = docs.vm_xml(1, disks=[])
        with pytest.raises(OpenNebulaError) as info:
            OneClient(oned.endpoint, "oneadmin:wrong").vm_info(1)
        assert str(info.value) == "[one.vm.info] User couldn't be authenticated, aborting call. (AUTHENTICATION)"

    def test_other_error_codes(self, oned: OnedStandIn, client: OneClient) -> None:
        oned.datastores[100] = docs.datastore_xml(100, name="sys", ds_type=1, template={})
        oned.fail_next("one.datastore.info", INTERNAL, "Database is locked.")
        with pytest.raises(OpenNebulaError) as info:
            client.datastore_info(100)
        assert str(info.value) == "[one.datastore.info] Database is locked. (INTERNAL)"
        assert client.datastore_info(100) == oned.datastores[100]  # the next call works

    def test_unknown_error_code_is_shown_as_a_number(self, oned: OnedStandIn, client: OneClient) -> None:
        oned.fail_next("one.vm.info", 0x10000, "Something new.")
        with pytest.raises(OpenNebulaError) as info:
            client.vm_info(1)
        assert str(info.value) == "[one.vm.info] Something new. (65536)"

    def test_fault(self, client: OneClient) -> None:
        with pytest.raises(OpenNebulaError) as info:
            client.call("one.vm.nosuchcall", 1)
        assert str(info.value) == "one.vm.nosuchcall: XML-RPC fault -506: Method 'one.vm.nosuchcall' not defined"

    def test_unreachable(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}/RPC2"
        with pytest.raises(OpenNebulaError) as info:
            OneClient(url, "a:b").vm_info(1)
        assert str(info.value) == f"cannot reach OpenNebula at {url}: [Errno 111] Connection refused"

    def test_timeout(self, oned: OnedStandIn) -> None:
        oned.hang_next("one.vm.info", 5)
        with pytest.raises(OpenNebulaError, match="^cannot reach OpenNebula at .*: timed out$"):
            OneClient(oned.endpoint, oned.session, timeout=0.2).vm_info(1)

    def test_wrong_path_is_an_http_error(self, oned: OnedStandIn) -> None:
        url = oned.endpoint.replace("/RPC2", "/other")
        with pytest.raises(OpenNebulaError, match=f"^one.vm.info: HTTP 404 from {url}$"):
            OneClient(url, oned.session).vm_info(1)

    @pytest.mark.parametrize("url", ["ftp://h/RPC2", "localhost:2633", "http:///RPC2"])
    def test_unsupported_endpoint(self, url: str) -> None:
        with pytest.raises(OpenNebulaError, match="^unsupported OpenNebula endpoint"):
            OneClient(url, "a:b")


# resolution ----------------------------------------------------------------------------------
@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME and no ONE_* variables."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ONE_XMLRPC", raising=False)
    monkeypatch.delenv("ONE_AUTH", raising=False)
    (tmp_path / ".one").mkdir()
    return tmp_path


def system_file(name: str) -> bool:
    return os.path.exists(f"/var/lib/one/.one/{name}")


class TestEndpoint:
    def test_one_xmlrpc_wins(self, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (home / ".one" / "one_endpoint").write_text("http://file:2633/RPC2\n")
        monkeypatch.setenv("ONE_XMLRPC", "http://env:2633/RPC2")
        assert endpoint() == "http://env:2633/RPC2"

    def test_home_file(self, home: Path) -> None:
        (home / ".one" / "one_endpoint").write_text("http://file:2633/RPC2\n")
        assert endpoint() == "http://file:2633/RPC2"

    def test_empty_variable_and_file_are_skipped(self, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        if system_file("one_endpoint"):
            pytest.skip("/var/lib/one/.one/one_endpoint exists here")
        monkeypatch.setenv("ONE_XMLRPC", "")
        (home / ".one" / "one_endpoint").write_text("\n")
        assert endpoint() == DEFAULT_ENDPOINT == "http://localhost:2633/RPC2"

    def test_default(self, home: Path) -> None:
        if system_file("one_endpoint"):
            pytest.skip("/var/lib/one/.one/one_endpoint exists here")
        assert endpoint() == DEFAULT_ENDPOINT

    def test_client_uses_the_resolved_endpoint(self, home: Path, oned: OnedStandIn,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
        (home / ".one" / "one_endpoint").write_text(oned.endpoint)
        (home / ".one" / "one_auth").write_text(oned.session + "\n")
        oned.vms[3] = docs.vm_xml(3, disks=[])
        assert OneClient().vm_info(3) == oned.vms[3]
        assert oned.calls[-1] == ("one.vm.info", (oned.session, 3, True))


class TestSession:
    def test_one_auth_file_wins(self, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (home / ".one" / "one_auth").write_text("home:secret\n")
        (home / "auth").write_text("env:secret\n")
        monkeypatch.setenv("ONE_AUTH", str(home / "auth"))
        assert session() == ("env:secret", str(home / "auth"))

    def test_home_file(self, home: Path) -> None:
        (home / ".one" / "one_auth").write_text("home:secret\n")
        assert session() == ("home:secret", str(home / ".one" / "one_auth"))

    def test_missing_one_auth_file_falls_back_to_home(self, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (home / ".one" / "one_auth").write_text("home:secret")
        monkeypatch.setenv("ONE_AUTH", str(home / "nothing"))
        assert session() == ("home:secret", str(home / ".one" / "one_auth"))

    def test_the_admins_home_of_an_installation(self, home: Path, tmp_path: Path) -> None:
        """install and doctor, run as root, find oneadmin's credentials in the tree they work on."""
        var = tmp_path / "srv" / "one" / "var"
        (var / ".one").mkdir(parents=True)
        (var / ".one" / "one_auth").write_text("oneadmin:secret\n")
        (var / ".one" / "one_endpoint").write_text("http://127.0.0.1:2644/RPC2\n")
        assert session([str(var)]) == ("oneadmin:secret", str(var / ".one" / "one_auth"))
        assert endpoint([str(var)]) == "http://127.0.0.1:2644/RPC2"

    def test_no_credentials(self, home: Path) -> None:
        if system_file("one_auth"):
            pytest.skip("/var/lib/one/.one/one_auth exists here")
        with pytest.raises(OpenNebulaError) as info:
            session()
        assert str(info.value) == "no OpenNebula credentials: set ONE_AUTH or create ~/.one/one_auth"

    def test_session_is_read_on_the_first_call(self, home: Path, oned: OnedStandIn,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
        (home / "auth").write_text("oneadmin:wrong")
        monkeypatch.setenv("ONE_AUTH", str(home / "auth"))
        client = OneClient(oned.endpoint)
        (home / "auth").write_text(oned.session)
        oned.vms[3] = docs.vm_xml(3, disks=[])
        assert client.vm_info(3) == oned.vms[3]
        assert client.secret == oned.session


def test_module_exports() -> None:
    assert set(xmlrpc.__all__) == {"OneClient", "connect_as_admin", "endpoint", "oned", "session"}
