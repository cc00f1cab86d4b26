"""The unprivileged user the test world runs driver actions as, in place of OpenNebula's oneadmin.

oned runs every driver action as oneadmin, with Debian's PATH for users other than root, and
its hosts run the jobs as the ssh user. Run as root with root's PATH, the tests would hide what
only root can do (read any file, find the tools in /usr/sbin), so the tests, which stay root
themselves (installing packages, mounting, starting sshd need it), start every action and log in
to every "host" as this user. ``./dev setup`` creates it; files the tests prepare for the actions
are given to it, as oneadmin owns /var/lib/one, instead of being opened to everyone.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["HOST_PYTHON", "NAME", "PATH", "ActionUser"]

NAME = "onevita-test"  # ./dev setup creates it (a system user with a home, like oneadmin)
# /etc/login.defs ENV_PATH: what su, login and cron give a user other than root on Debian
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
# the interpreter every host has (the launcher's); test scripts that run as the user use it, since
# the venv's may live where only root can go (a pyenv build under /root)
HOST_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class ActionUser:
    """Who the actions run as: name, ids and home."""

    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def lookup(cls, name: str = NAME) -> ActionUser:
        """The user ``name``; an error that says how to create it if there is none."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise RuntimeError(f"user {name} does not exist: ./dev setup creates it") from None
        if entry.pw_uid == 0:
            raise RuntimeError(f"user {name} is root: actions must run unprivileged")
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    def environment(self) -> dict[str, str]:
        """The login environment oned's drivers inherit from oneadmin: Debian's PATH, HOME."""
        return {"PATH": PATH, "HOME": self.home, "USER": self.name, "LOGNAME": self.name}

    def credentials(self) -> dict[str, Any]:
        """``subprocess`` keyword arguments that start a child as this user, keeping none of
        root's supplementary groups."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def own(self, *paths: Path) -> None:
        """Make ``paths`` themselves this user's (links, not what they point to)."""
        for path in paths:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def give(self, *trees: Path) -> None:
        """Make ``trees`` and everything in them this user's: the tests, as root, keep adding
        files there for the actions to read, write or remove."""
        for tree in trees:
            self.own(tree)
            for top, dirs, files in os.walk(tree):
                self.own(*(Path(top, name) for name in (*dirs, *files)))
