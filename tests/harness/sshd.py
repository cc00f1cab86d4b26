"""A real OpenSSH server on loopback that every simulated host name (node1, bridge1, …) reaches.

The driver reaches hypervisors and bridges with ``ssh -F <config_path> <alias> <command>``; here all
aliases land on one sshd whose sessions get a fixed environment (PATH, ONEVITA_* …) through
``SetEnv``, so the remote side of the driver runs for real, with real quoting and exit codes.
Logins are as the unprivileged action user only (as oneadmin logs in to OpenNebula's hosts),
never as root.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Mapping, Optional, Sequence

from ._process import free_ports, log_tail, port_accepts, stop_process, wait_until
from .user import ActionUser

SSHD_BINARY = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
DEFAULT_ALIASES = ("node1", "node2", "bridge1", "bridge2")
DEAD_ALIAS = "deadhost"
START_ATTEMPTS = 3
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# bash sources ~/.bashrc for commands run by sshd unless it is a nested shell (SHLVL >= 2 after its
# own increment). A .bashrc may rewrite PATH (pyenv, cargo …), which would put other interpreters
# ahead of the PATH a test asked for, so sessions start as if nested.
_NO_BASHRC = {"SHLVL": "1"}


def _quote(value: str) -> str:
    """Double-quote a config argument the way OpenSSH's ``argv_split`` unquotes it."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _setenv_line(env: Mapping[str, str]) -> str:
    """``SetEnv "NAME=value" …``; sshd applies these after its own defaults, so PATH can be overridden."""
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"invalid environment variable name {name!r}")
        if "\n" in value or "\r" in value:
            raise ValueError(f"environment variable {name} has a line break, which sshd_config cannot hold")
    return "SetEnv " + " ".join(_quote(f"{name}={value}") for name, value in env.items())


class Sshd:
    """``sshd -D`` on a free 127.0.0.1 port, keys/config/logs all in ``tmp_dir``, login as ``user``
    by key only.

    ``config_path`` is an ssh client config in which each alias (plus ``deadhost``, a closed port)
    maps to that sshd as ``user``, with strict host key checking against a pre-filled known_hosts.
    ``user`` owns ``tmp_dir`` and its side of ssh there (key pair, known_hosts, authorized_keys),
    as oneadmin owns ~/.ssh; the host key and sshd's own files stay root's.
    """

    def __init__(self, tmp_dir: Path | str, *, user: ActionUser, env: Optional[Mapping[str, str]] = None,
                 aliases: Sequence[str] = DEFAULT_ALIASES, start_timeout: float = 15.0) -> None:
        if not aliases:
            raise ValueError("Sshd needs at least one host alias")
        self.tmp_dir = Path(tmp_dir)
        self.user = user
        self.env = dict(env or {})
        self.aliases = tuple(aliases)
        self.start_timeout = start_timeout
        self.port = 0
        self.dead_port = 0
        self.host_key = self.tmp_dir / "ssh_host_ed25519_key"
        self.client_key = self.tmp_dir / "id_ed25519"
        self.sshd_config_path = self.tmp_dir / "sshd_config"
        self.config_path = self.tmp_dir / "ssh_config"
        self.known_hosts = self.tmp_dir / "known_hosts"
        self.authorized_keys = self.tmp_dir / "authorized_keys"
        self.log_path = self.tmp_dir / "sshd.log"
        self._setenv = _setenv_line({**_NO_BASHRC, **self.env})
        self._proc: Optional[subprocess.Popen[bytes]] = None

    def ssh_argv(self, alias: str, command: str) -> list[str]:
        """The argv the driver uses: ``ssh -F <config_path> <alias> <command>``."""
        return ["ssh", "-F", str(self.config_path), alias, command]

    def run(self, alias: str, command: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on ``alias`` over real ssh; never raises on a non-zero exit."""
        return subprocess.run(self.ssh_argv(alias, command), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def start(self) -> Sshd:
        """Generate keys and configs, start sshd and wait until ``ssh <first alias> true`` works.

        A restart keeps the port, so ssh configs handed to the driver stay valid.
        """
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self._keygen(self.host_key)
        self._keygen(self.client_key)
        self.authorized_keys.write_text(self.client_key.with_suffix(".pub").read_text())
        tail = ""
        for attempt in range(START_ATTEMPTS):
            if attempt or not self.port:
                self.port, self.dead_port = free_ports(2)
            self._write_configs()
            self.user.own(self.tmp_dir, self.client_key, self.client_key.with_suffix(".pub"), self.known_hosts,
                          self.authorized_keys)
            self._proc = self._spawn()
            if wait_until(self._ready, self.start_timeout, self._proc):
                return self
            stop_process(self._proc)
            tail = log_tail(self.log_path)
            if "Address already in use" not in tail:
                break
        raise RuntimeError(f"sshd did not start (log {self.log_path}):\n{tail}")

    def stop(self) -> None:
        """Terminate the listening sshd (kill it if it does not exit) and wait for it."""
        stop_process(self._proc)
        self._proc = None

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @staticmethod
    def _keygen(path: Path) -> None:
        """A passphrase-less ed25519 key pair, kept if it exists so a restart keeps host identity."""
        if not path.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"onevita-test-{path.name}",
                            "-f", str(path)], check=True, stdin=subprocess.DEVNULL, capture_output=True)

    def _write_configs(self) -> None:
        self.sshd_config_path.write_text(self._sshd_config())
        self.config_path.write_text(self._client_config())
        host_pub = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")

    def _sshd_config(self) -> str:
        """Key-only login of the action user alone; generous MaxStartups because the driver opens
        parallel sessions."""
        lines = [
            "ListenAddress 127.0.0.1",
            f"Port {self.port}",
            f"HostKey {_quote(str(self.host_key))}",
            f"PidFile {_quote(str(self.tmp_dir / 'sshd.pid'))}",
            f"AuthorizedKeysFile {_quote(str(self.authorized_keys))}",
            "StrictModes no",
            "PermitRootLogin no",
            f"AllowUsers {self.user.name}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
        ]
        return "\n".join([*lines, self._setenv]) + "\n"

    def _client_config(self) -> str:
        """Specific Host blocks first: ssh keeps the first value it finds for each option."""
        blocks = [f"Host {alias}\n    HostName 127.0.0.1\n    Port {self.port}\n" for alias in self.aliases]
        blocks.append(f"Host {DEAD_ALIAS}\n    HostName 127.0.0.1\n    Port {self.dead_port}\n")
        blocks.append(
            "Host *\n"
            f"    User {self.user.name}\n"
            f"    IdentityFile {_quote(str(self.client_key))}\n"
            "    IdentitiesOnly yes\n"
            "    IdentityAgent none\n"
            f"    UserKnownHostsFile {_quote(str(self.known_hosts))}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    CheckHostIP no\n"
            "    UpdateHostKeys no\n"
            "    BatchMode yes\n"
            "    LogLevel ERROR\n"
            "    ConnectTimeout 5\n"
        )
        return "".join(blocks)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            return subprocess.Popen([SSHD_BINARY, "-D", "-e", "-f", str(self.sshd_config_path)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def _ready(self) -> bool:
        """Listening and a full login works (host key, user key and session setup all checked)."""
        return port_accepts(self.port) and self.run(self.aliases[0], "true", timeout=10.0).returncode == 0
