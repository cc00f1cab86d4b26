#!/usr/bin/python3 -IS
"""onevita launcher: OpenNebula runs this file under action names (tm/vitastor/clone, ...).

OpenNebula copies its remotes tree to hosts with ``rsync -L``, which turns every link into a
copy, so the links point here and not at the zipapp: this small file is what gets repeated.
It takes the command from its own path (``<remotes>/tm/vitastor/clone`` → ``tm/clone``),
finds ``<remotes>/onevita/onevita.pyz`` and runs it from shiv's extraction cache, skipping
shiv's bootstrap; on the first run of a build the bootstrap extracts the zipapp.
build.py fills in BUILD_ID and PYTHONS. ``zipapp`` is the zipapp's own entry point
(``python3 onevita.pyz COMMAND``), which refuses other Pythons the same way.
"""

import sys

BUILD_ID = "@BUILD_ID@"
PYTHONS = "@PYTHONS@"


def refuse_other_pythons(pythons: str) -> None:
    """Exit 1 with a plain reason unless this interpreter is one of ``pythons`` ("3.9,3.10")."""
    running = "{}.{}".format(*sys.version_info[:2])
    if running not in pythons.split(","):
        built = pythons.replace(",", ", ")
        sys.stderr.write(f"onevita was built for Python {built}, but {sys.executable} is Python {running}: "
                         "rebuild it with build.py --python\n")
        sys.exit(1)


def main() -> None:
    """Check the interpreter, locate the zipapp and run the command."""
    import os

    refuse_other_pythons(PYTHONS)
    script = os.path.abspath(sys.argv[0])
    parts = script.split(os.sep)
    if parts[-2:] == ["onevita", "onevita"]:
        root, argv = os.sep.join(parts[:-2]), sys.argv[1:]
    else:
        root, argv = os.sep.join(parts[:-3]), [parts[-3] + "/" + parts[-1]] + sys.argv[1:]
    os.environ["ONEVITA_REMOTES"] = root
    pyz = os.path.join(root, "onevita", "onevita.pyz")
    cache = os.environ.get("SHIV_ROOT") or os.path.expanduser("~/.shiv")
    site = os.path.join(cache, "onevita.pyz_" + BUILD_ID, "site-packages")
    if not os.path.isdir(site):
        sys.argv = [pyz] + argv
        sys.path.insert(0, pyz)
        import _bootstrap  # type: ignore[import-not-found]  # shiv's, inside the zipapp

        _bootstrap.bootstrap()
        return
    sys.path.insert(0, site)
    from onevita.__main__ import main as run

    sys.exit(run(argv))


def zipapp() -> int:
    """shiv's entry point (build.py): ``python3 onevita.pyz COMMAND ...`` and ``/usr/bin/onevita``
    check the interpreter against the build's build.json, then run the command."""
    import json
    import os

    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "build.json")) as f:
        refuse_other_pythons(",".join(json.load(f)["pythons"]))
    from onevita.__main__ import main as run

    return run()


if __name__ == "__main__":
    main()
