"""Where an OpenNebula installation keeps the files ``onevita install`` touches.

Two layouts exist (OpenNebula's install.sh): system-wide (/etc/one, /var/lib/one/remotes) and
self-contained under ONE_LOCATION ($ONE_LOCATION/etc, $ONE_LOCATION/var/remotes). ``root``
prefixes every path, for packages installed with ``dpkg --root`` and for tests.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Layout", "layout_arguments"]


@dataclass(frozen=True)
class Layout:
    """The paths of one OpenNebula installation, as seen from this process."""

    root: Path
    etc: Path
    remotes: Path
    state_dir: Path

    @classmethod
    def of(cls, root: str = "/", one_location: str | None = None) -> Layout:
        """The system-wide layout, or the self-contained one under ``one_location``."""
        base = Path(root)
        if one_location:
            location = base / one_location.lstrip("/")
            return cls(base, location / "etc", location / "var" / "remotes", location / "var" / "onevita")
        return cls(base, base / "etc/one", base / "var/lib/one/remotes", base / "var/lib/one/onevita")

    @property
    def var(self) -> Path:
        """oned's state directory, the OpenNebula admin's home on both layouts."""
        return self.remotes.parent

    def admin_homes(self) -> list[str]:
        """Where the OpenNebula admin's ``.one/`` files are: the state directory, and oneadmin's
        home on this machine (when not working under another root)."""
        homes = [str(self.var)]
        if self.root == Path("/"):
            import pwd

            with contextlib.suppress(KeyError):
                homes.append(pwd.getpwnam("oneadmin").pw_dir)
        return list(dict.fromkeys(homes))

    @property
    def oned_conf(self) -> Path:
        return self.etc / "oned.conf"

    @property
    def vmm_execrc(self) -> Path:
        return self.etc / "vmm_exec" / "vmm_execrc"

    @property
    def downloader(self) -> Path:
        return self.remotes / "datastore" / "downloader.sh"

    @property
    def apparmor_libvirt_qemu(self) -> Path:
        """The local include of libvirt's qemu abstraction, the place meant for site additions."""
        return self.root / "etc/apparmor.d/local/abstractions/libvirt-qemu"

    @property
    def state_file(self) -> Path:
        """What install did, for uninstall to undo."""
        return self.state_dir / "install-state.json"


def layout_arguments(parser: argparse.ArgumentParser) -> None:
    """``--root`` and ``--one-location``, shared by install, uninstall and doctor."""
    parser.add_argument("--root", default="/", help="prefix for every system path (packaging, tests)")
    parser.add_argument("--one-location", metavar="DIR",
                        help="a self-contained OpenNebula installed under DIR (ONE_LOCATION)")
