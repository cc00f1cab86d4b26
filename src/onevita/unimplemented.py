"""Actions of OpenNebula's contract that onevita does not implement yet: they fail loudly."""

from __future__ import annotations

from . import log
from .errors import NotImplementedAction


def action(*args: str) -> None:
    """Refuse, so oned marks the operation failed instead of believing it happened."""
    raise NotImplementedAction(f"{log.current_action()} is not implemented yet by onevita")
