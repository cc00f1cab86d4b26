"""Datastore snapshot actions on persistent images (``oneimage snapshot-*``)."""

from __future__ import annotations

from ..cluster import run_job
from ..errors import BadRequest
from ..names import check_image
from .common import read_action


def _snapshot_job(job: str, image_id: str) -> None:
    action = read_action(image_id)
    snap_id = action.image.target_snapshot
    if snap_id is None:
        raise BadRequest(f"image {image_id}: TARGET_SNAPSHOT is missing")
    run_job(action.host, job, conf=action.settings.conf, name=check_image(action.image.source),
            snap_id=snap_id)


def snap_delete(image_id: str) -> None:
    """``snap_delete IMAGE_ID``: remove ``SOURCE@TARGET_SNAPSHOT``, its data merged upwards."""
    _snapshot_job("snapshot_delete", image_id)


def snap_revert(image_id: str) -> None:
    """``snap_revert IMAGE_ID``: SOURCE becomes a fresh child of ``SOURCE@TARGET_SNAPSHOT``."""
    _snapshot_job("snapshot_revert", image_id)


def snap_flatten(image_id: str) -> None:
    """``snap_flatten IMAGE_ID``: SOURCE becomes an independent copy of the snapshot and every
    snapshot layer is removed (the bash driver's rename onto an existing name always failed)."""
    _snapshot_job("snapshot_flatten", image_id)
