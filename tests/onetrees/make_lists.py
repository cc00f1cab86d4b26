"""Write ``<version>.txt``: the files OpenNebula's install.sh puts under ``remotes/`` for the
tm, datastore and vmm drivers, one path a line, for the test trees in ``tests/onetrees``.

Run by hand against a git directory of OpenNebula/one (``fetch github:OpenNebula/one``)::

    python3 tests/onetrees/make_lists.py GITDIR

It reads install.sh's ``NAME="src/... src/..."`` file lists and the ``NAME:$VAR_LOCATION/
remotes/<dir>`` entries of INSTALL_FILES that place them; only the path names are kept.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TAGS = {"6.8": "release-6.8.3", "6.10": "release-6.10.5", "7.0": "release-7.0.2", "7.2": "release-7.2.0",
        "7.4": "release-7.4.0"}
FAMILIES = ("tm/", "datastore/", "vmm/", "etc/vmm/", "etc/datastore/", "etc/tm/")
_LIST = re.compile(r'^([A-Z0-9_]+)="([^"]*)"', re.M)
_PLACE = re.compile(r'^\s*"?([A-Z0-9_]+):\$VAR_LOCATION/remotes(/[^"\s]*)?"?\s*$', re.M)


def remotes_files(install_sh: str) -> list[str]:
    lists = {name: body.replace("\\\n", " ").split() for name, body in _LIST.findall(install_sh)}
    paths = set()
    for name, directory in _PLACE.findall(install_sh):
        for source in lists.get(name, []):
            path = f"{directory.strip('/')}/{source.rsplit('/', 1)[-1]}" if directory else source.rsplit("/", 1)[-1]
            if path.startswith(FAMILIES) or "/" not in path:
                paths.add(path)
    return sorted(paths)


def main(gitdir: str) -> None:
    here = Path(__file__).parent
    for version, tag in TAGS.items():
        text = subprocess.run(["git", "-C", gitdir, "show", f"{tag}:install.sh"], capture_output=True,
                              text=True, check=True).stdout
        files = remotes_files(text)
        (here / f"{version}.txt").write_text(f"# remotes files of OpenNebula {tag} (install.sh)\n"
                                             + "\n".join(files) + "\n")
        print(f"{version}: {len(files)} files")


if __name__ == "__main__":
    main(sys.argv[1])
