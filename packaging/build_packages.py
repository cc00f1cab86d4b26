"""The Debian and rpm packages of onevita, built from ``dist/onevita.pyz`` (build.py calls ``build``).

Both hold the zipapp as ``/usr/lib/onevita/onevita.pyz``, ``/usr/bin/onevita`` linking to it
and the docs; their scripts (``packaging/debian/*``, ``packaging/rpm/*.spec``, sharing
``packaging/common.sh``) run the zipapp's ``install``/``uninstall``, which place the driver in
OpenNebula's remotes and edit its config files. The packages are architecture-specific because
the zipapp carries compiled wheels of the build machine's architecture. Builds are reproducible:
fixed modes, owners root:root, every timestamp SOURCE_DATE_EPOCH.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tomllib

from onevita.install import remotes_tree

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

__all__ = ["DOC_FILES", "PACKAGE", "Meta", "build", "build_deb", "build_rpm", "metadata"]

PACKAGE = "opennebula-vitastor"
MAINTAINER = "onevita maintainers <onevita@localhost>"
# Repository files installed into /usr/share/doc/opennebula-vitastor/ under their own names.
DOC_FILES = ("README.md", "examples/vitastor-image-datastore.conf", "examples/vitastor-system-datastore.conf")
# platform.machine() → (Debian, rpm) architecture; build.py fetches wheels for the same machine.
ARCHES = {"x86_64": ("amd64", "x86_64"), "aarch64": ("arm64", "aarch64")}
# SOURCE_DATE_EPOCH when unset, for the zipapp (build.py) and the packages alike: reproducible builds.
DEFAULT_EPOCH = "1700000000"

PAYLOAD_PYZ = "usr/lib/onevita/onevita.pyz"
PAYLOAD_LINK = "usr/bin/onevita"
LINK_TARGET = "../lib/onevita/onevita.pyz"  # relative, so it also works under dpkg --root
DOC_DIR = f"usr/share/doc/{PACKAGE}"


@dataclass(frozen=True)
class Meta:
    """Everything the templates need that comes from the project and the build."""

    version: str              # as in pyproject.toml (PEP 440)
    pythons: tuple[str, ...]  # the CPython versions the zipapp carries wheels for
    deb_arch: str
    rpm_arch: str
    summary: str
    license: str
    epoch: int

    @property
    def package_version(self) -> str:
        """The version in Debian and rpm spelling: pre-releases (``0.2.0rc1``, ``0.2.0.dev1``) sort
        before the release (``~``), post-releases and local versions after it (``+``)."""
        match = re.fullmatch(r"(\d+(?:\.\d+)*)(.*)", self.version)
        if not match:
            raise ValueError(f"cannot turn version {self.version!r} into a package version")
        base, rest = match.groups()
        rest = re.sub(r"[^A-Za-z0-9.+]", "", rest).lstrip(".")
        if not rest:
            return base
        if rest.startswith(("post", "+")):
            return f"{base}+{rest.lstrip('+')}"
        return f"{base}~{rest}"

    def python_ranges(self) -> tuple[str, str, list[tuple[str, str]]]:
        """(lowest, first unsupported above, [(gap, next supported), ...]) of the minor versions:
        3.9, 3.11, 3.12 → ("3.9", "3.13", [("3.10", "3.11")])."""
        minors = sorted(int(v.split(".")[1]) for v in self.pythons)
        gaps = [(f"3.{m}", f"3.{min(n for n in minors if n > m)}")
                for m in range(minors[0], minors[-1]) if m not in minors]
        return f"3.{minors[0]}", f"3.{minors[-1] + 1}", gaps

    @property
    def deb_name(self) -> str:
        return f"{PACKAGE}_{self.package_version}_{self.deb_arch}.deb"

    @property
    def rpm_name(self) -> str:
        return f"{PACKAGE}-{self.package_version}-1.{self.rpm_arch}.rpm"

    def deb_depends(self) -> str:
        """python3 within the built range, minus the versions the zipapp has no wheels for."""
        low, high, gaps = self.python_ranges()
        return ", ".join([f"python3 (>= {low}~)", f"python3 (<< {high})",
                          *(f"python3 (<< {gap}) | python3 (>= {then}~)" for gap, then in gaps)])

    def rpm_requires(self) -> str:
        """The same as rpm Requires lines (rich dependencies for the gaps: rpm >= 4.13)."""
        low, high, gaps = self.python_ranges()
        lines = [f"python3 >= {low}", f"python3 < {high}",
                 *(f"(python3 < {gap} or python3 >= {then})" for gap, then in gaps)]
        return "\n".join(f"Requires:       {line}" for line in lines)


def metadata(pyz: Path) -> Meta:
    """Version, summary and license from pyproject.toml; Pythons from the zipapp; the machine."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    machine = platform.machine()
    if machine not in ARCHES:
        raise SystemExit(f"no Debian/rpm architecture known for machine {machine!r}: add it to ARCHES")
    deb_arch, rpm_arch = ARCHES[machine]
    return Meta(version=project["version"], pythons=tuple(remotes_tree.build_info(pyz)[1]), deb_arch=deb_arch,
                rpm_arch=rpm_arch, summary=project["description"], license=project["license"]["text"],
                epoch=int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH)))


def render(template: Path, values: dict[str, str]) -> str:
    """The template with every ``@NAME@`` replaced; a name without a value is an error."""
    text = template.read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise ValueError(f"{template}: no value for {', '.join(sorted(set(left)))}")
    return text


def common_shell() -> str:
    """packaging/common.sh, pasted into every maintainer script and scriptlet."""
    text = (HERE / "common.sh").read_text().rstrip("\n")
    if "%" in text:  # rpm would expand it as a macro in the scriptlets
        raise ValueError("packaging/common.sh must not contain '%'")
    return text


def stage_payload(pyz: Path, tree: Path) -> None:
    """The files both packages install, with fixed modes."""
    (tree / PAYLOAD_PYZ).parent.mkdir(parents=True)
    shutil.copyfile(pyz, tree / PAYLOAD_PYZ)
    (tree / PAYLOAD_PYZ).chmod(0o755)
    (tree / PAYLOAD_LINK).parent.mkdir(parents=True)
    (tree / PAYLOAD_LINK).symlink_to(LINK_TARGET)
    (tree / DOC_DIR).mkdir(parents=True)
    for name in DOC_FILES:
        shutil.copyfile(ROOT / name, tree / DOC_DIR / Path(name).name)
        (tree / DOC_DIR / Path(name).name).chmod(0o644)


def settle(tree: Path, epoch: int) -> None:
    """Directories 0755 and every timestamp ``epoch``, whatever the umask and checkout times."""
    for path in [tree, *tree.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def installed_size(tree: Path) -> int:
    """Debian's Installed-Size as dpkg-gencontrol counts it: KiB per regular file or link, rounded
    up, and 1 for anything else (directories)."""
    return sum(max(1, (p.lstat().st_size + 1023) // 1024) if p.is_symlink() or p.is_file() else 1
               for p in tree.rglob("*"))


def build_deb(meta: Meta, pyz: Path, dist: Path) -> Path:
    """``dist/opennebula-vitastor_<version>_<arch>.deb`` with dpkg-deb."""
    out = dist / meta.deb_name
    with tempfile.TemporaryDirectory(prefix="onevita-deb-") as tmp:
        tree = Path(tmp, "tree")
        stage_payload(pyz, tree)
        values = {"PACKAGE": PACKAGE, "DEB_VERSION": meta.package_version, "DEB_ARCH": meta.deb_arch,
                  "MAINTAINER": MAINTAINER, "INSTALLED_SIZE": str(installed_size(tree)),
                  "DEB_DEPENDS": meta.deb_depends(), "SUMMARY": meta.summary, "COMMON": common_shell()}
        control = tree / "DEBIAN"
        control.mkdir()
        for name, mode in (("control", 0o644), ("triggers", 0o644), ("postinst", 0o755),
                           ("prerm", 0o755), ("postrm", 0o755)):
            (control / name).write_text(render(HERE / "debian" / name, values))
            (control / name).chmod(mode)
        settle(tree, meta.epoch)
        # gzip, not xz: the zipapp is compressed already, and xz saves under 1% in 20x the time.
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(meta.epoch)}
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z9", "--build", str(tree), str(out)],
                       check=True, env=env, stdout=subprocess.DEVNULL)
    return out


def build_rpm(meta: Meta, pyz: Path, dist: Path) -> Path:
    """``dist/opennebula-vitastor-<version>-1.<arch>.rpm`` with rpmbuild (Debian's ``rpm`` has it)."""
    with tempfile.TemporaryDirectory(prefix="onevita-rpm-") as tmp:
        tree, top = Path(tmp, "tree"), Path(tmp, "top")
        stage_payload(pyz, tree)
        settle(tree, meta.epoch)
        spec = Path(tmp, f"{PACKAGE}.spec")
        spec.write_text(render(HERE / "rpm" / f"{PACKAGE}.spec", {
            "PACKAGE": PACKAGE, "RPM_VERSION": meta.package_version, "SUMMARY": meta.summary,
            "LICENSE": meta.license, "RPM_REQUIRES": meta.rpm_requires(), "TREE": str(tree),
            "COMMON": common_shell()}))
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(meta.epoch)}
        # Its output only matters on failure (it warns about the unversioned Obsoletes, on purpose).
        proc = subprocess.run(["rpmbuild", "-bb", "--quiet", "--target", meta.rpm_arch,
                               "--define", f"_topdir {top}", str(spec)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"rpmbuild failed:\n{proc.stdout}")
        out = dist / meta.rpm_name
        shutil.move(top / "RPMS" / meta.rpm_arch / meta.rpm_name, out)
    return out


def build(pyz: Path, dist: Path) -> list[Path]:
    """Both packages into ``dist``; a missing tool skips its package with a note on stderr."""
    meta = metadata(pyz)
    packages = []
    for kind, tool, builder, apt in (("Debian", "dpkg-deb", build_deb, "dpkg"),
                                     ("rpm", "rpmbuild", build_rpm, "rpm")):
        if shutil.which(tool):
            packages.append(builder(meta, pyz, dist))
        else:
            sys.stderr.write(f"{tool} not found, so no {kind} package (on Debian: apt-get install {apt})\n")
    return packages
