"""Small admin commands of the zipapp."""

from __future__ import annotations

import sys

from . import __version__


def version() -> None:
    """Print the onevita version."""
    sys.stdout.write(f"onevita {__version__}\n")


def noop() -> None:
    """Do nothing: what the start-up benchmark times."""
