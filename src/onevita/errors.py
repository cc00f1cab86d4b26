"""The onevita error tree.

Every failure an action can meet is an ``OnevitaError``; ``__main__.main`` turns it into
OpenNebula's format (the message as a plain stderr line, an ``ERROR:`` log line, exit 1).
Cases that callers handle get their own class. ``kind`` names the class on the wire, so an
error raised on a host travels back over ssh as the same class.
"""

from __future__ import annotations

__all__ = [
    "BadName",
    "BadRequest",
    "ClusterUnreachable",
    "CompareFailed",
    "ConfigError",
    "EtcdError",
    "ImageExists",
    "ImageNotFound",
    "OnevitaError",
    "OpenNebulaError",
    "PoolNotFound",
    "RemoteError",
    "ShrinkRefused",
    "ImageBusy",
    "by_kind",
]


class OnevitaError(Exception):
    """Base class: a failure with a message fit for oned.log."""


class BadRequest(OnevitaError):
    """The arguments or input OpenNebula passed are malformed."""


class BadName(BadRequest):
    """A name (image, pool, host) contains characters onevita refuses to handle."""


class ConfigError(OnevitaError):
    """A datastore attribute, vitastor.conf or local setting is missing or wrong."""


class OpenNebulaError(OnevitaError):
    """oned answered an XML-RPC call with an error, or could not be reached."""


class EtcdError(OnevitaError):
    """etcd answered with an error."""


class ClusterUnreachable(EtcdError):
    """No etcd endpoint of the Vitastor cluster answered."""


class CompareFailed(EtcdError):
    """A conditional etcd transaction lost a race; the caller re-reads and retries."""


class ImageNotFound(OnevitaError):
    """The named Vitastor image does not exist."""


class ImageExists(OnevitaError):
    """A Vitastor image with that name exists already (and differs from what was asked)."""


class ImageBusy(OnevitaError):
    """The image is in use in a way that forbids the operation (children, readonly...)."""


class PoolNotFound(ConfigError):
    """The Vitastor pool named by POOL_NAME does not exist."""


class ShrinkRefused(OnevitaError):
    """Shrinking is refused: vitastor-cli's shrink deletes all data of the image."""


class RemoteError(OnevitaError):
    """Running onevita on a host over ssh failed before it could report an error itself."""



def by_kind(kind: str) -> type[OnevitaError]:
    """Return the error class named ``kind`` (from a host's JSON reply), else OnevitaError."""
    cls = globals().get(kind)
    if isinstance(cls, type) and issubclass(cls, OnevitaError):
        return cls
    return OnevitaError
