"""Build onevita: ``dist/onevita.pyz`` (shiv) and ``dist/remotes/`` (the tree for /var/lib/one/remotes).

One zipapp serves several CPython versions: the pinned wheels of every target version are
unpacked into one site-packages (pure files are identical, extension modules carry the ABI tag
in their names), and the launcher refuses interpreters the build does not cover.

    python3 build.py [--python 3.9,3.11,3.12]
    python3 build.py --inplace     # only the data-plane helper, into src/ (tests, development)

It also packs the zipapp into ``dist/opennebula-vitastor_<version>_<arch>.deb`` and
``dist/opennebula-vitastor-<version>-1.<arch>.rpm`` (packaging/build_packages.py).

The data-plane helper (csrc/) is a plain shared object without Python headers plus an
out-of-line ABI-mode cffi module (pure Python), so one copy serves every target version.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent
DEFAULT_PYTHONS = ("3.9", "3.11", "3.12")
sys.path.insert(0, str(ROOT / "src"))
from onevita.install import remotes_tree  # noqa: E402

# packaging/ is no Python package: as one it would shadow PyPI's "packaging" for tools run here
sys.path.insert(0, str(ROOT / "packaging"))
import build_packages  # noqa: E402


def pinned_requirements() -> list[str]:
    """The exact runtime requirements from pyproject.toml (plus cffi's pure dependency)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], "pycparser==2.23"]


def build_native(package_root: Path) -> None:
    """``onevita/vitastor/_lib/libonevita_vitastor.so`` (gcc) and ``onevita/vitastor/_ffi.py``
    (cffi, ABI mode: no compiler or pycparser needed at run time) under ``package_root``."""
    from cffi import FFI

    package = package_root / "onevita" / "vitastor"
    (package / "_lib").mkdir(parents=True, exist_ok=True)
    library = package / "_lib" / "libonevita_vitastor.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-o", str(library),
                    str(ROOT / "csrc" / "onevita_vitastor.c"), "-ldl"], check=True)
    ffi = FFI()
    ffi.cdef((ROOT / "csrc" / "vitastor.cdef").read_text())
    ffi.set_source("onevita.vitastor._ffi", None)
    module = package / "_ffi.py"
    ffi.emit_python_code(str(module))
    module.write_text("# mypy: ignore-errors\n" + module.read_text())


def build_site_packages(pythons: list[str], build: Path) -> Path:
    """Unpack the pinned wheels of every target Python, and onevita itself, into one tree."""
    site = build / "site-packages"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    platform_tag = f"manylinux2014_{platform.machine()}"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check"]
    for version in pythons:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([*pip, "--target", tmp, "--only-binary=:all:", "--implementation", "cp",
                            "--python-version", version, "--platform", platform_tag,
                            *pinned_requirements()], check=True)
            shutil.copytree(tmp, site, dirs_exist_ok=True)
    subprocess.run([*pip, "--target", str(site), str(ROOT)], check=True, cwd=build)
    shutil.rmtree(site / "bin", ignore_errors=True)
    build_native(site)
    (site / "onevita" / remotes_tree.BUILD_INFO).write_text(json.dumps({"pythons": pythons}))
    return site


def build_pyz(site: Path, dist: Path) -> Path:
    """Pack the tree with shiv (reproducible, interpreter pinned, no site, isolated)."""
    dist.mkdir(parents=True, exist_ok=True)
    pyz = dist / "onevita.pyz"
    epoch = os.environ.get("SOURCE_DATE_EPOCH", build_packages.DEFAULT_EPOCH)
    env = {**os.environ, "SOURCE_DATE_EPOCH": epoch}
    subprocess.run([sys.executable, "-m", "shiv", "--site-packages", str(site), "--reproducible",
                    "--compile-pyc", "-p", "/usr/bin/python3 -IS", "-e", "onevita.__main__:main",
                    "-o", str(pyz)], check=True, env=env)
    return pyz


def build_remotes(pyz: Path) -> Path:
    """``dist/remotes``: the zipapp once, the launcher, and one link per driver action."""
    remotes = pyz.parent / "remotes"
    shutil.rmtree(remotes, ignore_errors=True)
    (remotes / remotes_tree.HOME).mkdir(parents=True)
    shutil.copy2(pyz, remotes / remotes_tree.ZIPAPP)
    launcher = remotes / remotes_tree.LAUNCHER
    launcher.write_text(remotes_tree.launcher_text(*remotes_tree.build_info(pyz)))
    launcher.chmod(0o755)
    for path, target in remotes_tree.action_links().items():
        (remotes / path).parent.mkdir(parents=True, exist_ok=True)
        (remotes / path).symlink_to(target)
    return remotes


def main() -> None:
    """Build everything into dist/."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=",".join(DEFAULT_PYTHONS),
                        help="comma-separated CPython versions the zipapp must run on")
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="output directory")
    parser.add_argument("--inplace", action="store_true",
                        help="only build the data-plane helper into src/ (for tests and development)")
    args = parser.parse_args()
    if args.inplace:
        build_native(ROOT / "src")
        return
    pythons = sorted({*args.python.split(","), "{}.{}".format(*sys.version_info[:2])},
                     key=lambda v: tuple(map(int, v.split("."))))
    with tempfile.TemporaryDirectory(prefix="onevita-build-") as build:
        pyz = build_pyz(build_site_packages(pythons, Path(build)), args.dist.resolve())
    remotes = build_remotes(pyz)
    print(f"built {pyz} ({pyz.stat().st_size // 1024} KiB) for Python {', '.join(pythons)} and {remotes}")
    for package in build_packages.build(pyz, args.dist.resolve()):
        print(f"built {package}")


if __name__ == "__main__":
    main()
