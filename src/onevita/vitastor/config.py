"""vitastor.conf: where a Vitastor cluster's etcd is and under which key prefix.

Resolved like libvitastor_client does (``read_config``/``parse_config``): one JSON object in
``config_path`` (default /etc/vitastor/vitastor.conf); ``etcd_address`` is a comma-separated
string or a list of ``host:port[/path]``; ``http://`` is stripped and ``https://`` is refused
(the library would exit(1)); ``etcd_prefix`` defaults to ``/vitastor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/vitastor/vitastor.conf"

__all__ = ["DEFAULT_CONFIG_PATH", "VitastorConfig", "read_config"]


@dataclass(frozen=True)
class VitastorConfig:
    """The parts of vitastor.conf onevita needs, plus the whole object for the C client."""

    path: str
    etcd_address: tuple[str, ...]
    etcd_prefix: str
    raw: dict[str, Any]


def _addresses(value: Any, path: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    addresses = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        if item.startswith("https://"):
            raise ConfigError(f"{path}: etcd_address {item!r}: https is not supported by Vitastor clients")
        addresses.append(item.removeprefix("http://"))
    return tuple(addresses)


def read_config(path: str | None) -> VitastorConfig:
    """Read the cluster configuration at ``path`` (VITASTOR_CONF), or the default one."""
    path = path or DEFAULT_CONFIG_PATH
    try:
        with open(path, "rb") as f:
            raw = orjson.loads(f.read())
    except FileNotFoundError as e:
        raise ConfigError(f"Vitastor configuration {path} does not exist") from e
    except (OSError, orjson.JSONDecodeError) as e:
        raise ConfigError(f"cannot read Vitastor configuration {path}: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: not a JSON object")
    addresses = _addresses(raw.get("etcd_address", ""), path)
    if not addresses:
        raise ConfigError(f"{path}: etcd_address is not set")
    prefix = str(raw.get("etcd_prefix") or "/vitastor")
    if not prefix.startswith("/"):
        prefix = "/" + prefix
    return VitastorConfig(path=path, etcd_address=addresses, etcd_prefix=prefix.rstrip("/"), raw=raw)
