"""What an install step did to a config file, in a form that can be printed and undone.

Every editor (oned.conf, vmm_execrc, downloader.sh, AppArmor) returns its changes as ``Change``
records; ``onevita install`` prints the summaries and stores the undo data, and
``onevita uninstall`` hands the undo data back to the same editor. Undoing what was recorded,
rather than restoring a backup, keeps edits the admin made after the install.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Change"]


@dataclass(frozen=True)
class Change:
    """One thing an editor added or modified: a line for the admin and the data to undo it."""

    summary: str
    undo: dict[str, Any] = field(default_factory=dict)
