"""Entry point: map argv[0] (or the first argument) to a command and run it.

OpenNebula runs ``remotes/<family>/<driver>/<action>``; the launcher passes
``<family>/<action>`` and the arguments here. Run as ``python3 onevita.pyz COMMAND ARGS``, the
command comes first. Only this function turns errors into OpenNebula's failure format:
the reason as a plain stderr line, an ``ERROR:`` line for oned.log, exit 1. It also extends PATH
as OpenNebula's driver scripts do (``one.environment``), before anything runs a command.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Callable

from . import log
from .actions import ACTIONS, ADMIN
from .errors import BadRequest, OnevitaError
from .one.environment import use_tool_path

USAGE = "usage: onevita COMMAND [ARGS...]; commands: " + ", ".join(sorted(ADMIN))


def _resolve(command: str) -> Callable[..., int | None]:
    target = ACTIONS.get(command) or ADMIN.get(command)
    if target is None:
        raise BadRequest(f"unknown onevita command {command!r}; {USAGE}")
    module, _, func = target.partition(":")
    return getattr(import_module(module), func)  # type: ignore[no-any-return]


def _check_arity(func: Callable[..., object], args: list[str], command: str) -> None:
    code = func.__code__
    takes_varargs = bool(code.co_flags & 0x04)
    required = code.co_argcount - len(func.__defaults__ or ())
    if len(args) < required or (not takes_varargs and len(args) > code.co_argcount):
        names = code.co_varnames[:code.co_argcount]
        raise BadRequest(f"{command}: expected arguments {' '.join(n.upper() for n in names)}, "
                         f"got {len(args)}")


def main(argv: list[str] | None = None) -> int:
    """Run one command; return the process exit code."""
    use_tool_path()
    if argv is None:
        argv = sys.argv[1:]
    if not argv:
        sys.stderr.write(USAGE + "\n")
        return 2
    command, args = argv[0], argv[1:]
    log.set_action(command)
    try:
        func = _resolve(command)
        _check_arity(func, args, command)
        return func(*args) or 0
    except OnevitaError as e:
        log.error(str(e))
        log.reason(str(e))
        return 1
    except Exception as e:  # the last resort: oned must get a reason, not a silent traceback
        import traceback

        log.error(traceback.format_exc())
        log.reason(f"internal error in onevita {command}: {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
