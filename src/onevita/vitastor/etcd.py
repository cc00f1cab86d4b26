"""A small etcd v3 JSON-gateway client (``POST /v3/...``), as Vitastor's own clients use it.

Works against etcd 3.4+ and antietcd: ``Content-Type: application/json`` is always sent
(antietcd refuses requests without it) and revisions are accepted as strings (etcd) or
numbers (antietcd). One keep-alive connection per endpoint per process. Transient failures
(connection refused, reset, timeout, 5xx) move on to the next endpoint; after every endpoint
failed ``attempts`` times the call raises ``ClusterUnreachable``.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any, Sequence

import orjson

from ..errors import ClusterUnreachable, ConfigError, EtcdError
from ..http import Connection

__all__ = ["Etcd", "KeyValue", "TxnResult", "b64", "prefix_range_end", "op_range", "op_put",
           "op_delete", "cmp_version", "cmp_mod", "cmp_mod_before"]

Op = dict[str, Any]


def b64(text: str | bytes) -> str:
    """Base64 of a key or value, as the JSON gateway wants it."""
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def prefix_range_end(prefix: str) -> str:
    """The range end covering every key under ``prefix`` (its last byte incremented)."""
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()


def op_range(key: str, range_end: str | None = None) -> Op:
    """A txn request op reading ``key`` or ``[key, range_end)``."""
    req = {"key": b64(key)}
    if range_end is not None:
        req["range_end"] = b64(range_end)
    return {"request_range": req}


def op_put(key: str, value: str | bytes) -> Op:
    """A txn request op writing ``value`` at ``key``."""
    return {"request_put": {"key": b64(key), "value": b64(value)}}


def op_delete(key: str) -> Op:
    """A txn request op deleting ``key``."""
    return {"request_delete_range": {"key": b64(key)}}


def cmp_version(key: str, version: int) -> Op:
    """Compare: the key's version equals ``version`` (0 = the key must not exist)."""
    return {"key": b64(key), "target": "VERSION", "version": version}


def cmp_mod(key: str, mod_revision: int) -> Op:
    """Compare: the key's mod_revision equals ``mod_revision`` (0 = absent)."""
    return {"key": b64(key), "target": "MOD", "mod_revision": mod_revision}


def cmp_mod_before(key: str, mod_revision: int) -> Op:
    """Compare: the key was not modified since ``mod_revision`` (vitastor-cli's ``MOD < rev+1``)."""
    return {"key": b64(key), "target": "MOD", "result": "LESS", "mod_revision": mod_revision + 1}


@dataclass(frozen=True)
class KeyValue:
    """One key as read: its name, raw value and the revision that last modified it."""

    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class TxnResult:
    """A txn's outcome: whether the compares held, the new revision, and each op's key/values."""

    succeeded: bool
    revision: int
    responses: list[list[KeyValue]]


def _kvs(response: dict[str, Any]) -> list[KeyValue]:
    return [
        KeyValue(
            key=base64.b64decode(kv["key"]).decode(),
            value=base64.b64decode(kv.get("value", "")),
            mod_revision=int(kv.get("mod_revision", 0)),
        )
        for kv in response.get("kvs", ())
    ]


class Etcd:
    """A client for one Vitastor cluster's etcd (a list of ``host:port[/path]`` endpoints)."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 5.0, attempts: int = 3) -> None:
        if not endpoints:
            raise EtcdError("no etcd endpoint configured")
        self.endpoints = [self._split(e) for e in endpoints]
        self.timeout = timeout
        self.attempts = attempts
        self._conns: dict[tuple[str, int], Connection] = {}

    @staticmethod
    def _split(endpoint: str) -> tuple[str, int, str]:
        """``http://h:p/v3`` or ``h:p`` → (host, port, path); the path defaults to ``/v3``."""
        rest = endpoint.split("://", 1)[1] if "://" in endpoint else endpoint
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        if not host:
            host, port = port, "2379"
        if not port.isdigit():
            raise ConfigError(f"etcd_address {endpoint!r}: {port!r} is not a port number")
        return host.strip("[]"), int(port), "/" + (path.rstrip("/") or "v3")

    def _post(self, host: str, port: int, url: str, body: bytes) -> tuple[int, bytes]:
        conn = self._conns.get((host, port))
        if conn is None:
            conn = self._conns[(host, port)] = Connection(host, port, self.timeout)
        return conn.post(url, body, "application/json")

    def call(self, rpc: str, fields: dict[str, Any]) -> dict[str, Any]:
        """POST ``fields`` to ``<path>/<rpc>`` and return the decoded reply, raising on errors."""
        body = orjson.dumps(fields)
        failures: list[str] = []
        for attempt in range(self.attempts):
            for host, port, path in self.endpoints:
                try:
                    status, data = self._post(host, port, f"{path}/{rpc}", body)
                except OSError as e:
                    failures.append(f"{host}:{port}: {e}")
                    continue
                if status >= 500:
                    failures.append(f"{host}:{port}: HTTP {status}")
                    continue
                reply: dict[str, Any] = orjson.loads(data) if data else {}
                if status != 200 or "error" in reply:
                    message = reply.get("error") or reply.get("message") or data.decode(errors="replace")
                    raise EtcdError(f"etcd {rpc} failed: {message}")
                return reply
            if attempt + 1 < self.attempts:  # no pause before giving up
                time.sleep(0.1 * (attempt + 1))
        raise ClusterUnreachable("etcd is unreachable (" + "; ".join(failures[-len(self.endpoints):]) + ")")

    def txn(self, success: Sequence[Op], compare: Sequence[Op] = (), failure: Sequence[Op] = ()) -> TxnResult:
        """Run one transaction; the compares select ``success`` or ``failure`` ops."""
        fields: dict[str, Any] = {"success": list(success)}
        if compare:
            fields["compare"] = list(compare)
        if failure:
            fields["failure"] = list(failure)
        reply = self.call("kv/txn", fields)
        responses = [_kvs(r.get("response_range", {})) for r in reply.get("responses", ())]
        return TxnResult(
            succeeded=bool(reply.get("succeeded", False)),
            revision=int(reply.get("header", {}).get("revision", 0)),
            responses=responses,
        )

    def get(self, key: str) -> KeyValue | None:
        """The key's current value, or None."""
        kvs = self.txn([op_range(key)]).responses[0]
        return kvs[0] if kvs else None

    def prefix(self, prefix: str) -> list[KeyValue]:
        """Every key under ``prefix``."""
        return self.txn([op_range(prefix, prefix_range_end(prefix))]).responses[0]

    def put(self, key: str, value: str | bytes) -> None:
        """Write one key unconditionally (tests and admin tools only; actions use txns)."""
        self.txn([op_put(key, value)])

    def delete_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix``."""
        self.call("kv/deleterange", {"key": b64(prefix), "range_end": b64(prefix_range_end(prefix))})

    def status(self) -> dict[str, Any]:
        """``/v3/maintenance/status``: a cheap reachability check."""
        return self.call("maintenance/status", {})

    def close(self) -> None:
        """Close the keep-alive connections."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
