"""The etcd JSON-gateway client against a real etcd, an antietcd-like stand-in and closed ports."""

from __future__ import annotations

import http.server
import socket
import threading
import uuid
from typing import Any, Iterator

import orjson
import pytest

from onevita.errors import ClusterUnreachable, EtcdError
from onevita.vitastor.etcd import (
    Etcd,
    b64,
    cmp_mod,
    cmp_mod_before,
    cmp_version,
    op_delete,
    op_put,
    op_range,
    prefix_range_end,
)


@pytest.fixture()
def prefix() -> str:
    return f"/onevita-etcd-{uuid.uuid4().hex[:8]}/"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestRealEtcd:
    def test_revisions_are_strings_on_the_wire_and_ints_here(self, etcd: str, prefix: str) -> None:
        client = Etcd([etcd])
        client.put(prefix + "a", "1")
        wire = client.call("kv/range", {"key": b64(prefix + "a")})
        assert isinstance(wire["kvs"][0]["mod_revision"], str)
        assert isinstance(wire["header"]["revision"], str)
        kv = client.get(prefix + "a")
        assert kv is not None
        assert (kv.key, kv.value, kv.mod_revision) == (prefix + "a", b"1", int(wire["kvs"][0]["mod_revision"]))
        result = client.txn([op_put(prefix + "b", "2")])
        assert result.succeeded and result.revision == kv.mod_revision + 1

    def test_conditional_txn(self, etcd: str, prefix: str) -> None:
        client = Etcd([etcd])
        key = prefix + "k"
        created = client.txn(compare=[cmp_version(key, 0)], success=[op_put(key, "v1")],
                             failure=[op_range(key)])
        assert created.succeeded and created.responses == [[]]
        again = client.txn(compare=[cmp_version(key, 0)], success=[op_put(key, "v2")], failure=[op_range(key)])
        assert not again.succeeded
        assert [kv.value for kv in again.responses[0]] == [b"v1"]
        assert client.txn(compare=[cmp_mod(key, created.revision)], success=[op_put(key, "v3")]).succeeded
        kv = client.get(key)
        assert kv is not None
        assert not client.txn(compare=[cmp_mod_before(key, kv.mod_revision - 1)], success=[op_delete(key)]).succeeded
        assert client.txn(compare=[cmp_mod_before(key, kv.mod_revision)], success=[op_delete(key)]).succeeded
        assert client.get(key) is None

    def test_prefix_and_delete_prefix(self, etcd: str, prefix: str) -> None:
        client = Etcd([f"http://{etcd.removeprefix('http://')}/v3"])
        for name in ("a", "b/c", "b/d"):
            client.put(prefix + name, name)
        client.put(prefix[:-1] + "0", "outside")  # the key right after the prefix range
        assert [kv.key for kv in client.prefix(prefix)] == [prefix + n for n in ("a", "b/c", "b/d")]
        client.delete_prefix(prefix + "b/")
        assert [kv.key for kv in client.prefix(prefix)] == [prefix + "a"]
        assert client.get(prefix[:-1] + "0") is not None
        client.close()

    def test_status(self, etcd: str) -> None:
        assert "version" in Etcd([etcd]).status()

    def test_etcd_error_reply(self, etcd: str) -> None:
        with pytest.raises(EtcdError, match="^etcd kv/range failed: "):
            Etcd([etcd]).call("kv/range", {"key": "not base64!"})

    def test_failover_to_the_next_endpoint(self, etcd: str, prefix: str) -> None:
        client = Etcd([f"127.0.0.1:{closed_port()}", etcd], attempts=1)
        client.put(prefix + "x", "y")
        kv = client.get(prefix + "x")
        assert kv is not None and kv.value == b"y"


class TestUnreachable:
    def test_closed_port(self) -> None:
        port = closed_port()
        with pytest.raises(ClusterUnreachable) as info:
            Etcd([f"127.0.0.1:{port}"], attempts=1).get("/x")
        assert str(info.value) == f"etcd is unreachable (127.0.0.1:{port}: [Errno 111] Connection refused)"

    def test_message_names_every_endpoint_once(self) -> None:
        one, two = closed_port(), closed_port()
        with pytest.raises(ClusterUnreachable) as info:
            Etcd([f"127.0.0.1:{one}", f"http://127.0.0.1:{two}/v3"], attempts=2).status()
        assert str(info.value) == (f"etcd is unreachable (127.0.0.1:{one}: [Errno 111] Connection refused; "
                                   f"127.0.0.1:{two}: [Errno 111] Connection refused)")

    def test_no_endpoint(self) -> None:
        with pytest.raises(EtcdError, match="^no etcd endpoint configured$"):
            Etcd([])


# antietcd ------------------------------------------------------------------------------------
class _AntiEtcd(http.server.BaseHTTPRequestHandler):
    """Answers like antietcd: revisions as JSON numbers, no create_revision/version, and an
    error unless the request says Content-Type: application/json."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Type") != "application/json":
            reply: dict[str, Any] = {"error": "content-type should be application/json"}
            status = 400
        else:
            request = orjson.loads(body)
            kvs = [{"key": op["request_range"]["key"], "value": b64("v"), "mod_revision": 42}
                   for op in request.get("success", ()) if "request_range" in op]
            reply = {"header": {"revision": 43}, "succeeded": True,
                     "responses": [{"response_range": {"kvs": kvs}}]}
            status = 200
        data = orjson.dumps(reply)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def antietcd() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AntiEtcd)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_antietcd_number_revisions(antietcd: str) -> None:
    client = Etcd([antietcd])
    kv = client.get("/k")
    assert kv is not None and (kv.key, kv.value, kv.mod_revision) == ("/k", b"v", 42)
    assert client.txn([op_range("/k")]).revision == 43


# helpers -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("endpoint", "split"), [
    ("127.0.0.1:2379", ("127.0.0.1", 2379, "/v3")),
    ("http://10.0.0.1:23790/v3", ("10.0.0.1", 23790, "/v3")),
    ("http://10.0.0.1:23790/v3/", ("10.0.0.1", 23790, "/v3")),
    ("etcd1", ("etcd1", 2379, "/v3")),
    ("[::1]:2379", ("::1", 2379, "/v3")),
    ("10.0.0.1:2379/custom", ("10.0.0.1", 2379, "/custom")),
])
def test_endpoint_split(endpoint: str, split: tuple[str, int, str]) -> None:
    assert Etcd._split(endpoint) == split


def test_prefix_range_end() -> None:
    assert prefix_range_end("/vitastor/config/inode/") == "/vitastor/config/inode0"
    assert prefix_range_end("/a") == "/b"
