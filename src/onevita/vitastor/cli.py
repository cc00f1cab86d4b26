"""``vitastor-cli`` for the jobs that move data and have no C API: layer removal and flatten.

``rm`` merges a removed layer's data into its children and ``flatten`` copies the parents'
data into an image; both need the OSD object listing that only the C++ client has.
The binary is ``$ONEVITA_VITASTOR_CLI`` or ``vitastor-cli`` from PATH.
"""

from __future__ import annotations

import os

from ..errors import OnevitaError
from ..names import check_image
from ..run import CommandFailed, run

__all__ = ["flatten", "remove"]


def _cli(conf: str | None, *args: str) -> None:
    argv = [os.environ.get("ONEVITA_VITASTOR_CLI", "vitastor-cli")]
    if conf:
        argv += ["--config_path", conf]
    try:
        run([*argv, *args])
    except CommandFailed as e:
        raise OnevitaError(str(e)) from e


def remove(conf: str | None, name: str) -> None:
    """``vitastor-cli rm NAME``: delete one layer, merging its data into any children."""
    _cli(conf, "rm", check_image(name))


def flatten(conf: str | None, name: str) -> None:
    """``vitastor-cli flatten NAME``: copy the parents' data into NAME and detach it from them."""
    _cli(conf, "flatten", check_image(name))
