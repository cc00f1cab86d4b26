"""A real antietcd (npm ``antietcd``, Vitastor's own etcd replacement) on loopback: the same
v3 JSON gateway, answered by different code (revisions as JSON numbers, its own transaction and
error handling), for running the catalog and action tests against it too.

``./dev setup`` installs it with npm into ``.antietcd/`` (ANTIETCD_DIR overrides); Debian's
nodejs runs it.
"""

from __future__ import annotations

import http.client
import os
import subprocess
from pathlib import Path
from typing import Optional

from ._process import free_ports, log_tail, stop_process, wait_until

ROOT = Path(__file__).resolve().parents[2]
APP = Path(os.environ.get("ANTIETCD_DIR", ROOT / ".antietcd")) / "node_modules" / "antietcd" / "antietcd-app.js"
NODE = "/usr/bin/node"
START_ATTEMPTS = 3


class AntiEtcdServer:
    """``antietcd`` on a free 127.0.0.1 port, its data file and log in ``tmp_dir``."""

    def __init__(self, tmp_dir: Path, start_timeout: float = 15.0) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.log_path = self.tmp_dir / "antietcd.log"
        self.start_timeout = start_timeout
        self.port = 0
        self._proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AntiEtcdServer:
        if not APP.exists():
            raise RuntimeError(f"antietcd is not installed at {APP}: run ./dev setup")
        tail = ""
        for _ in range(START_ATTEMPTS):
            (self.port,) = free_ports(1)
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [NODE, str(APP), "--ip", "127.0.0.1", "--port", str(self.port),
                     "--data", str(self.tmp_dir / "antietcd.json.gz")],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            if wait_until(self._ready, self.start_timeout, self._proc):
                return self
            stop_process(self._proc)
            tail = log_tail(self.log_path)
            if "EADDRINUSE" not in tail:
                break
        raise RuntimeError(f"antietcd did not start (log {self.log_path}):\n{tail}")

    def _ready(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
        try:
            conn.request("POST", "/v3/kv/range", b'{"key":"Lw=="}', {"Content-Type": "application/json"})
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None

    def __enter__(self) -> AntiEtcdServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
