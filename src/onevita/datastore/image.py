"""Datastore actions on whole images: cp, rm, clone (stat: ``stat.py``)."""

from __future__ import annotations

import sys

from .. import log
from ..cluster import run_job
from ..errors import BadRequest
from ..names import check_image, image_name
from ..one.args import int_arg
from ..one.model import YES
from .common import read_action

MIB = 1 << 20
STAGING_DIR = "/var/tmp"  # noqa: S108 (the bash driver's default; jobs use mkdtemp in it)


def cp(image_id: str) -> None:
    """``cp IMAGE_ID``: register IMAGE/PATH (a local file or an http(s) URL) as the new image
    ``<prefix>-<id>``; prints ``<SOURCE> raw``. Like the bash driver, the data is fetched here,
    on the front-end (so RESTRICTED_DIRS, SAFE_DIRS and local paths mean what they mean to
    OpenNebula), and written on a BRIDGE_LIST host, streamed over the job's ssh call; raw data
    goes into the image directly, other formats through STAGING_DIR on that host."""
    from .source import open_source, parse_bandwidth

    action = read_action(image_id)
    image, template = action.image, action.data.datastore.template
    name = image_name(action.settings.prefix, int_arg(image_id, "IMAGE_ID"))
    staging_dir = template.get("STAGING_DIR") or STAGING_DIR
    if not staging_dir.startswith("/"):
        raise BadRequest(f"STAGING_DIR must be an absolute path, got {staging_dir!r}")
    with open_source(image.path, restricted=template.get("RESTRICTED_DIRS", ""),
                     safe=template.get("SAFE_DIRS", ""), md5=image.template.get("MD5", ""),
                     sha1=image.template.get("SHA1", ""),
                     limit=parse_bandwidth(template.get("LIMIT_TRANSFER_BW", "")),
                     decompress=template.get("NO_DECOMPRESS", "") not in YES) as source:
        log.info(f"importing {image.path} ({source.compression or 'uncompressed'} {source.format}) as {name}")
        run_job(action.host, "import_image", stream=source, conf=action.settings.conf,
                pool=action.settings.pool, name=name, size=image.size_mb * MIB, fmt=source.format,
                staging_dir=staging_dir)
    sys.stdout.write(f"{name} raw\n")


def rm(image_id: str) -> None:
    """``rm IMAGE_ID``: remove the image with every ``@N`` snapshot layer (the bash driver left
    those behind) and ``@backup-N`` backup checkpoint. Layers another image reads through keep
    their data in that image."""
    action = read_action(image_id)
    source = action.image.source
    if not source:
        log.info(f"image {image_id} has no SOURCE, nothing to remove")
        return
    run_job(action.host, "delete", conf=action.settings.conf, name=check_image(source))


def clone(image_id: str) -> None:
    """``clone IMAGE_ID``: a new image ``<prefix>-<id>`` with the data of IMAGE/PATH (the source
    image's SOURCE) and no parent, copied through libvitastor_client; prints ``<SOURCE> raw``."""
    action = read_action(image_id)
    name = image_name(action.settings.prefix, int_arg(image_id, "IMAGE_ID"))
    source = check_image(action.image.path)
    run_job(action.host, "copy_to_new", conf=action.settings.conf, pool=action.settings.pool,
            source=source, name=name)
    sys.stdout.write(f"{name} raw\n")
