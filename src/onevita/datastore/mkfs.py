"""datastore/mkfs: an empty datablock, or the name a disk-saveas will fill."""

from __future__ import annotations

import sys

from ..formatting import make_empty
from ..names import image_name
from ..one.args import int_arg
from .common import read_action

__all__ = ["mkfs"]

SAVE_AS = "save_as"


def mkfs(image_id: str) -> None:
    """``mkfs IMAGE_ID``: create ``<prefix>-<id>`` of IMAGE/SIZE MB, with a file system when
    IMAGE/FS names one of SUPPORTED_FS; prints the SOURCE. For a disk-saveas (IMAGE/FORMAT
    ``save_as``) only the name is printed: tm/cpds creates and fills the image."""
    action = read_action(image_id)
    image = action.image
    name = image_name(action.settings.prefix, int_arg(image_id, "IMAGE_ID"))
    if image.format != SAVE_AS:
        make_empty(action.host, action.settings, action.data.datastore.template, name, image.size_mb,
                   image.fs)
    sys.stdout.write(f"{name}\n")
