"""Build onevita: ``dist/onevita.pyz`` (shiv) and ``dist/remotes/`` (the tree for /var/lib/one/remotes).

One zipapp serves several CPython versions: the pinned wheels of every target version are
unpacked into one site-packages (pure files are identical, extension modules carry the ABI tag
in their names), and the launcher refuses interpreters the build does not cover. By default
these are the system Pythons of every host OS OpenNebula 6.8 to 7.4 supports (README.md).
Of the wheels the zipapp keeps only what a run can reach (KEEP).

    python3 build.py [--python 3.9,3.10,3.11,3.12,3.13]
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
# the /usr/bin/python3 of EL 9 and Debian 11 (3.9), Ubuntu 22.04 (3.10), Debian 12 (3.11),
# Ubuntu 24.04 and EL 10 (3.12), Debian 13 (3.13)
DEFAULT_PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13")
# What the zipapp keeps of each third-party package, by file name; "{ext}" stands for every target
# Python's extension suffix (cpython-312-x86_64-linux-gnu), and each of those files must exist.
# The dist-info folders (licences, metadata) stay whole. onevita imports lxml.etree and orjson,
# and its ABI-mode onevita/vitastor/_ffi.py imports only _cffi_backend, a top-level module that
# stays (tests/test_pythons.py checks that every module onevita imports is in the zipapp).
# What goes, none of which a run reaches:
#   lxml    lxml.etree imports only lxml._elementpath (etree.pyx; it imports lxml.cssselect only in
#           Element.cssselect(), which onevita never calls and which needs the cssselect package).
#           Gone: lxml.objectify (a 2.8 MB extension per Python, with its own copy of libxml2),
#           lxml.html with its compiled diff and _difflib, lxml.isoschematron, the builder and
#           sax modules (compiled and pure), the other pure modules (ElementInclude, cssselect,
#           doctestcompare, usedoctest, pyclasslookup), the C headers (includes/, *.h) and Cython
#           sources (*.pyx, *.pxi) for compiling against lxml, _elementpath.py (its compiled
#           twin is found first by every target Python) and one Python's bytecode (__pycache__).
#   orjson  the type stubs (__init__.pyi, py.typed) and one Python's bytecode.
#   cffi    the whole Python package: it generates _ffi.py at build time (from the build
#           environment's cffi) and runs no part of it. Its dependency pycparser is not installed.
KEEP = {
    "lxml": ("__init__.py", "etree.{ext}.so", "_elementpath.{ext}.so"),
    "orjson": ("__init__.py", "orjson.{ext}.so"),
    "cffi": (),
}
TOP_LEVEL = ("_cffi_backend.{ext}.so",)  # extension modules outside packages, checked the same way
sys.path.insert(0, str(ROOT / "src"))
from onevita.install import remotes_tree  # noqa: E402

# packaging/ is no Python package: as one it would shadow PyPI's "packaging" for tools run here
sys.path.insert(0, str(ROOT / "packaging"))
import build_packages  # noqa: E402


def pinned_requirements() -> list[str]:
    """The exact runtime requirements from pyproject.toml (not cffi's dependency pycparser, which
    only cffi's Python package uses: see KEEP)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def extension_suffix(version: str) -> str:
    """The ABI part of CPython ``version``'s extension module names on this machine."""
    return "cpython-{}-{}-linux-gnu".format(version.replace(".", ""), platform.machine())


def keep_only_what_runs(site: Path, pythons: list[str]) -> int:
    """Remove from ``site`` what KEEP leaves out; the bytes removed. A kept file missing for a
    target Python (a wheel that changed its layout) stops the build."""
    removed = 0
    missing = []
    for package, names in KEEP.items():
        kept = {name.format(ext=extension_suffix(v)) for name in names for v in pythons}
        missing += [f"{package}/{name}" for name in sorted(kept) if not (site / package / name).is_file()]
        for path in sorted((site / package).iterdir()):
            if path.name in kept:
                continue
            if path.is_dir():
                removed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                shutil.rmtree(path)
            else:
                removed += path.stat().st_size
                path.unlink()
        if not names:
            (site / package).rmdir()
    top_level = {name.format(ext=extension_suffix(v)) for name in TOP_LEVEL for v in pythons}
    missing += [name for name in sorted(top_level) if not (site / name).is_file()]
    if missing:
        raise SystemExit(f"the wheels lack files every target Python needs: {', '.join(missing)}")
    return removed


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
    removed = keep_only_what_runs(site, pythons)
    print(f"left out {removed // 1024} KiB of the wheels that no run needs (build.py KEEP)")
    subprocess.run([*pip, "--target", str(site), str(ROOT)], check=True, cwd=build)
    shutil.rmtree(site / "bin", ignore_errors=True)
    build_native(site)
    (site / "onevita" / remotes_tree.BUILD_INFO).write_text(json.dumps({"pythons": pythons}))
    return site


def build_pyz(site: Path, dist: Path) -> Path:
    """Pack the tree with shiv (reproducible, interpreter pinned, no site, isolated); its entry
    point refuses Pythons the build does not cover, as the launcher does."""
    dist.mkdir(parents=True, exist_ok=True)
    pyz = dist / "onevita.pyz"
    epoch = os.environ.get("SOURCE_DATE_EPOCH", build_packages.DEFAULT_EPOCH)
    env = {**os.environ, "SOURCE_DATE_EPOCH": epoch}
    subprocess.run([sys.executable, "-m", "shiv", "--site-packages", str(site), "--reproducible",
                    "--compile-pyc", "-p", "/usr/bin/python3 -IS", "-e", "onevita.launcher:zipapp",
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
