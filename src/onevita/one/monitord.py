"""Sending monitoring data to OpenNebula's monitord over UDP, like ``send_to_monitor``.

The message is ``<TYPE> <SUCCESS|FAILURE> <OID> <TIMESTAMP> <base64(zlib(payload))>``; the
address and port come from monitord.conf (``MONITOR_ADDRESS`` "auto" means 127.0.0.1).
"""

from __future__ import annotations

import base64
import os
import re
import socket
import time
import zlib

from .. import log
from .location import etc_dir

__all__ = ["monitord_address", "send_to_monitor"]


def _conf_path() -> str:
    return f"{etc_dir()}/monitord.conf"


def monitord_address() -> tuple[str, int, bool]:
    """(address, port, encrypted) from monitord.conf; defaults 127.0.0.1:4124. Encrypted means
    PUBKEY names a readable file: the shell helper sends in clear otherwise, and so do we."""
    try:
        with open(_conf_path()) as f:
            text = f.read()
    except OSError:
        text = ""
    text = re.sub(r"#.*", "", text)
    address = re.search(r'MONITOR_ADDRESS\s*=\s*"?([^",\s\]]+)', text)
    port = re.search(r"\bPORT\s*=\s*\"?(\d+)", text)
    pubkey = re.search(r'\bPUBKEY\s*=\s*"?([^",\s\]]*)', text)
    key = pubkey.group(1) if pubkey else ""
    host = address.group(1) if address else "auto"
    return ("127.0.0.1" if "auto" in host else host, int(port.group(1)) if port else 4124,
            bool(key) and os.access(key, os.R_OK))


def send_to_monitor(msg_type: str, success: bool, oid: int, payload: str) -> None:
    """Send one message to monitord (timestamp 0 for oid -1, as the shell helper does)."""
    host, port, encrypted = monitord_address()
    if encrypted:
        log.warn("monitord expects encrypted messages (PUBKEY); onevita does not encrypt, not sending")
        return
    body = base64.b64encode(zlib.compress(payload.encode())).decode()
    timestamp = 0 if oid == -1 else int(time.time())
    message = f"{msg_type} {'SUCCESS' if success else 'FAILURE'} {oid} {timestamp} {body}\n"
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), (host, port))
