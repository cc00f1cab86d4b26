"""A real single-member etcd on loopback, for the Vitastor metadata the driver reads and writes."""

from __future__ import annotations

import http.client
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, Optional

import orjson

from ._process import free_ports, log_tail, stop_process, wait_until

ETCD_BINARY = "/usr/bin/etcd"
START_ATTEMPTS = 3


class EtcdServer:
    """``etcd`` on free 127.0.0.1 client/peer ports with its data dir and log in ``tmp_dir``.

    The request limits match what Vitastor clusters are configured with (big transactions when
    creating or flattening images), so tests see the same limits as production.
    """

    def __init__(self, tmp_dir: Path | str, *, name: Optional[str] = None, binary: str = ETCD_BINARY,
                 start_timeout: float = 15.0) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.name = name or f"onevita-test-{uuid.uuid4().hex[:8]}"
        self.data_dir = self.tmp_dir / f"{self.name}.etcd"
        self.log_path = self.tmp_dir / f"{self.name}.log"
        self.binary = binary
        self.start_timeout = start_timeout
        self.client_port = 0
        self.peer_port = 0
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        """The client URL, e.g. ``http://127.0.0.1:23791``."""
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> EtcdServer:
        """Start etcd and wait until it answers ``/v3/maintenance/status`` with a leader.

        A restart keeps the URL (tests of an etcd outage need the driver's configured endpoint to
        come back). A port taken between picking and binding is retried on new ports; any other
        failure raises at once with the end of etcd's log.
        """
        tail = ""
        for attempt in range(START_ATTEMPTS):
            if attempt or not self.client_port:
                self.client_port, self.peer_port = free_ports(2)
            self._proc = self._spawn()
            if wait_until(self._ready, self.start_timeout, self._proc):
                return self
            stop_process(self._proc)
            tail = log_tail(self.log_path)
            if "address already in use" not in tail:
                break
        raise RuntimeError(f"etcd {self.name} did not start (log {self.log_path}):\n{tail}")

    def stop(self) -> None:
        """Terminate etcd (kill it if it does not exit) and wait for it."""
        stop_process(self._proc)
        self._proc = None

    def post(self, path: str, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """POST a JSON request to the v3 gRPC gateway (e.g. ``/v3/kv/range``) and return its JSON answer.

        Raises ``RuntimeError`` on a non-200 answer, so tests see etcd's own error text.
        """
        conn = http.client.HTTPConnection("127.0.0.1", self.client_port, timeout=timeout)
        try:
            conn.request("POST", path, orjson.dumps(payload), {"Content-Type": "application/json"})
            reply = conn.getresponse()
            body = reply.read()
        finally:
            conn.close()
        if reply.status != 200:
            raise RuntimeError(f"etcd {path}: HTTP {reply.status}: {body.decode(errors='replace')}")
        answer: dict[str, Any] = orjson.loads(body)
        return answer

    def status(self) -> dict[str, Any]:
        """``/v3/maintenance/status``: version, leader, db size."""
        return self.post("/v3/maintenance/status", {}, timeout=1.0)

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _command(self) -> list[str]:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            self.binary, f"--name={self.name}", f"--data-dir={self.data_dir}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={self.name}={peer}", "--initial-cluster-state=new",
            f"--initial-cluster-token={self.name}",
            "--max-txn-ops=100000", "--max-request-bytes=104857600",
            "--logger=zap", "--log-outputs=stderr",
        ]

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start etcd with its output in the log; ETCD_* variables are dropped so flags alone decide."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env)

    def _ready(self) -> bool:
        """Serving and with a leader: before that, writes would block or fail."""
        try:
            return bool(self.status().get("leader", "0") != "0")
        except (OSError, http.client.HTTPException, RuntimeError, ValueError):
            return False
