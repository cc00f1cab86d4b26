"""What every datastore action starts with: the decoded message and where its job runs."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..cluster import bridge
from ..errors import BadRequest
from ..one.args import int_arg
from ..one.model import ActionData, Image, VitastorSettings, parse_action_data

__all__ = ["DsAction", "read_action"]


@dataclass(frozen=True)
class DsAction:
    """A datastore action's input: the message, the datastore's settings and the job host."""

    data: ActionData
    settings: VitastorSettings
    host: str | None

    @property
    def image(self) -> Image:
        """The IMAGE of the message; BadRequest when oned sent none."""
        if self.data.image is None:
            raise BadRequest("DS_DRIVER_ACTION_DATA has no IMAGE")
        return self.data.image


def read_action(object_id: str) -> DsAction:
    """Decode stdin and pick the BRIDGE_LIST host for ``object_id`` (image or datastore id)."""
    data = parse_action_data(sys.stdin.buffer.read())
    settings = data.datastore.vitastor()
    return DsAction(data=data, settings=settings, host=bridge(settings, int_arg(object_id, "ID")))
