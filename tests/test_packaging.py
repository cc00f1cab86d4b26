"""The .deb and the .rpm: their metadata and contents, and their scripts run for real.

The real dpkg installs the .deb into scratch roots (``--root`` with chrootless scripts, which get
DPKG_ROOT): without OpenNebula, and with a stand-in ``opennebula`` package carrying 7.0's files
at their real paths, whose upgrade must fire our trigger and whose removal must not break us.
The rpm's scriptlets run the same way (they share the shell code) after ``rpm --root`` unpacks it.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from onevita import __version__
from tests.cloud import ROOT

sys.path.insert(0, str(ROOT / "packaging"))
import build_packages  # noqa: E402

PACKAGE = "opennebula-vitastor"
OLD_DRIVER = "vitastor-opennebula"
DOCS = [Path(name).name for name in build_packages.DOC_FILES]
ONEFILES = ROOT / "tests/install/onefiles/7.0"
# Where OpenNebula's front-end package puts the files onevita install edits.
ONE_PATHS = {"oned.conf": "etc/one/oned.conf", "vmm_execrc": "etc/one/vmm_exec/vmm_execrc",
             "downloader.sh": "var/lib/one/remotes/datastore/downloader.sh"}
CONFFILES = ("etc/one/oned.conf", "etc/one/vmm_exec/vmm_execrc")
LAUNCHER_LINK = "../../onevita/onevita"
NOTE = "run 'onevita install' after installing OpenNebula"
TRIGGERS = {"/var/lib/one/remotes/datastore/downloader.sh", "/etc/one/oned.conf",
            "/etc/one/vmm_exec/vmm_execrc", "/etc/apparmor.d/local/abstractions/libvirt-qemu"}

needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="installing into a scratch root needs root (or run pytest under fakeroot)")


def need(tool: str, package: str) -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed (Debian package {package})")


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def clean_env(tmp_path: Path) -> dict[str, str]:
    """What a root shell running apt would pass: no ONE_* or SHIV_* of the test session."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(home), "LC_ALL": "C.UTF-8"}


@dataclass(frozen=True)
class Packages:
    meta: build_packages.Meta
    pyz: Path
    deb: Path
    rpm: Path


@pytest.fixture(scope="session")
def packages(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Packages:
    """build.py's packages next to its zipapp; when there are none newer than that zipapp (a
    dist/ from before packaging, or without dpkg-deb/rpmbuild), the same built here from it."""
    pyz = built.parent / "onevita.pyz"
    meta = build_packages.metadata(pyz)
    deb, rpm = built.parent / meta.deb_name, built.parent / meta.rpm_name
    if not all(p.exists() and p.stat().st_mtime >= pyz.stat().st_mtime for p in (deb, rpm)):
        out = tmp_path_factory.mktemp("packages")
        build_packages.build(pyz, out)
        deb, rpm = out / meta.deb_name, out / meta.rpm_name
    return Packages(meta, pyz, deb, rpm)


@pytest.fixture()
def deb(packages: Packages) -> Path:
    need("dpkg-deb", "dpkg")
    return packages.deb


@pytest.fixture()
def rpm(packages: Packages) -> Path:
    need("rpmbuild", "rpm")
    return packages.rpm


def meta_for(version: str = "0.1.0", pythons: tuple[str, ...] = ("3.9", "3.11", "3.12")) -> build_packages.Meta:
    return build_packages.Meta(version=version, pythons=pythons, deb_arch="amd64", rpm_arch="x86_64",
                               summary="s", license="l", epoch=0)


def tm_mad_drivers(oned_conf: str) -> list[str]:
    """The -d list of oned.conf's TM_MAD block."""
    block = re.search(r"^TM_MAD\s*=\s*\[(.*?)\]", oned_conf, re.M | re.S)
    assert block, "no TM_MAD block"
    drivers = re.search(r"-d\s+([\w,-]+)", block.group(1))
    assert drivers, block.group(1)
    return drivers.group(1).split(",")


class TestVersionsAndDependencies:
    @pytest.mark.parametrize(("version", "expected"), [("0.1.0", "0.1.0"), ("0.2.0rc1", "0.2.0~rc1"),
                                                       ("0.2.0.dev3", "0.2.0~dev3"), ("1.0.post1", "1.0+post1")])
    def test_pep440_versions_become_package_versions(self, version: str, expected: str) -> None:
        assert meta_for(version).package_version == expected

    def test_a_pre_release_sorts_before_its_release(self) -> None:
        need("dpkg", "dpkg")
        assert run("dpkg", "--compare-versions", "0.2.0~rc1", "lt", "0.2.0").returncode == 0
        assert run("dpkg", "--compare-versions", "0.2.0", "lt", "0.2.0+post1").returncode == 0

    def test_python_dependency_leaves_out_versions_without_wheels(self) -> None:
        """The zipapp runs only on the Pythons it carries wheels for: here (build.py --python
        3.9,3.11,3.12) 3.10 is not among them."""
        meta = meta_for()
        assert meta.deb_depends() == "python3 (>= 3.9~), python3 (<< 3.13), python3 (<< 3.10) | python3 (>= 3.11~)"
        assert meta.rpm_requires().splitlines() == ["Requires:       python3 >= 3.9", "Requires:       python3 < 3.13",
                                                    "Requires:       (python3 < 3.10 or python3 >= 3.11)"]
        assert meta_for(pythons=("3.11",)).deb_depends() == "python3 (>= 3.11~), python3 (<< 3.12)"


class TestDeb:
    def test_control_fields(self, deb: Path, packages: Packages) -> None:
        fields = dict(re.findall(r"^(\S+): (.*)$", run("dpkg-deb", "-f", str(deb)).stdout, re.M))
        assert fields["Package"] == PACKAGE
        assert fields["Version"] == __version__
        assert deb.name == f"{PACKAGE}_{__version__}_{fields['Architecture']}.deb"
        if shutil.which("dpkg"):
            assert fields["Architecture"] == run("dpkg", "--print-architecture").stdout.strip()
        assert fields["Architecture"] == {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]
        assert fields["Depends"] == packages.meta.deb_depends()
        assert fields["Depends"].startswith("python3 (>= 3.9~), ")
        assert fields["Recommends"] == "opennebula, vitastor-client"
        for relation in ("Conflicts", "Replaces", "Provides"):
            assert fields[relation] == OLD_DRIVER
        assert abs(int(fields["Installed-Size"]) - packages.pyz.stat().st_size // 1024) < 64

    def test_files_modes_and_owners(self, deb: Path) -> None:
        entries = {}
        for line in run("dpkg-deb", "-c", str(deb)).stdout.splitlines():
            mode, owner, _size, _date, _time, path, *link = line.split()
            entries[path] = (mode, owner, link[-1] if link else None)
        assert set(entries) == {"./", "./usr/", "./usr/bin/", "./usr/lib/", "./usr/lib/onevita/", "./usr/share/",
                                "./usr/share/doc/", f"./usr/share/doc/{PACKAGE}/",
                                "./usr/lib/onevita/onevita.pyz", "./usr/bin/onevita",
                                *(f"./usr/share/doc/{PACKAGE}/{name}" for name in DOCS)}
        assert {owner for _mode, owner, _link in entries.values()} == {"root/root"}
        assert entries["./usr/lib/onevita/onevita.pyz"][0] == "-rwxr-xr-x"
        assert entries["./usr/bin/onevita"] == ("lrwxrwxrwx", "root/root", "../lib/onevita/onevita.pyz")
        assert entries[f"./usr/share/doc/{PACKAGE}/README.md"][0] == "-rw-r--r--"

    def test_payload_is_the_built_zipapp_and_the_readme(self, deb: Path, packages: Packages, tmp_path: Path) -> None:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
        assert (tmp_path / "usr/lib/onevita/onevita.pyz").read_bytes() == packages.pyz.read_bytes()
        assert (tmp_path / "usr/lib/onevita/onevita.pyz").read_bytes().startswith(b"#!/usr/bin/python3 -IS\n")
        # (the README may have changed since the build)
        assert (tmp_path / f"usr/share/doc/{PACKAGE}/README.md").read_text().startswith("# onevita\n")

    def test_maintainer_scripts_are_posix_sh(self, deb: Path, tmp_path: Path) -> None:
        subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path)], check=True)
        for name, command in (("postinst", "onevita install"), ("prerm", "onevita uninstall"),
                              ("postrm", "purge_leftovers")):
            script = tmp_path / name
            assert os.access(script, os.X_OK), name
            text = script.read_text()
            assert text.startswith("#!/bin/sh\n") and "\nset -e\n" in text, name
            assert command in text, name
            assert '--root "${DPKG_ROOT:-/}"' in text and '"${DPKG_ROOT:-}/usr/lib/onevita/onevita.pyz"' in text
            check = run("sh", "-n", str(script))
            assert check.returncode == 0, check.stderr

    def test_triggers_watch_the_files_install_edits(self, deb: Path, tmp_path: Path) -> None:
        subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path)], check=True)
        directives = [line.split("#")[0].split() for line in (tmp_path / "triggers").read_text().splitlines()]
        directives = [d for d in directives if d]
        assert {kind for kind, _path in directives} == {"interest-noawait"}
        assert {path for _kind, path in directives} == TRIGGERS


class TestReproducible:
    def test_two_builds_are_identical(self, packages: Packages, tmp_path: Path) -> None:
        need("dpkg-deb", "dpkg")
        need("rpmbuild", "rpm")
        first, second = tmp_path / "a", tmp_path / "b"
        for out in (first, second):
            out.mkdir()
            build_packages.build(packages.pyz, out)
        for name in (packages.meta.deb_name, packages.meta.rpm_name):
            assert (first / name).read_bytes() == (second / name).read_bytes(), name


class DpkgRoot:
    """A scratch root with a dpkg database, driven by the real dpkg; maintainer scripts run
    outside it (--force-script-chrootless) with DPKG_ROOT set, as for a chrootless install.

    The database starts with a python3 stand-in of the version the scripts will run (this
    machine's python3), so our Depends hold: dpkg would process no trigger of ours otherwise."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path = path
        self.env = env
        admin = path / "var/lib/dpkg"
        for directory in ("info", "updates", "triggers"):
            (admin / directory).mkdir(parents=True)
        for name in ("status", "available"):
            (admin / name).touch()
        version = run("python3", "-c", "import platform; print(platform.python_version())").stdout.strip()
        stub = path.parent / "python3-stub"
        self.ok("-i", str(build_deb(stub, stub.with_suffix(".deb"),
                                    f"Package: python3\nVersion: {version}-1\nArchitecture: all\n", {})))

    def dpkg(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run("dpkg", f"--root={self.path}", "--force-script-chrootless", "--log=/dev/null", *args,
                   env=self.env)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = self.dpkg(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def status(self, package: str) -> str:
        """dpkg-query's two-letter status ("ii", "rc", ...), or "" for a package it does not know."""
        proc = run("dpkg-query", f"--admindir={self.path}/var/lib/dpkg", "-W", "-f=${db:Status-Abbrev}", package)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def files(self) -> dict[str, bytes]:
        """Every regular file and link outside dpkg's database (links as their target)."""
        found = {}
        for path in sorted(self.path.rglob("*")):
            key = str(path.relative_to(self.path))
            if key.startswith("var/lib/dpkg/"):
                continue
            if path.is_symlink():
                found[key] = b"-> " + os.readlink(path).encode()
            elif path.is_file():
                found[key] = path.read_bytes()
        return found

    def read(self, path: str) -> bytes:
        return (self.path / path).read_bytes()


def build_deb(tree: Path, out: Path, control: str, files: dict[str, bytes], conffiles: tuple[str, ...] = ()) -> Path:
    """A small .deb with these files (paths relative to the root)."""
    for path, data in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(data)
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(control + "Maintainer: onevita tests <tests@localhost>\n"
                                         "Description: stand-in for the packaging tests\n")
    if conffiles:
        (tree / "DEBIAN/conffiles").write_text("".join(f"/{path}\n" for path in conffiles))
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Znone", "--build", str(tree), str(out)], check=True,
                   capture_output=True)
    return out


def opennebula_deb(tmp_path: Path, version: str, trailer: bytes = b"") -> tuple[Path, dict[str, bytes]]:
    """A stand-in for OpenNebula's front-end package: 7.0's oned.conf and vmm_execrc (conffiles)
    and downloader.sh at their real paths; ``trailer`` ends each file, so an upgrade changes all."""
    files = {path: (ONEFILES / name).read_bytes() + trailer for name, path in ONE_PATHS.items()}
    out = build_deb(tmp_path / f"opennebula-{version}", tmp_path / f"opennebula_{version}_all.deb",
                    f"Package: opennebula\nVersion: {version}\nArchitecture: all\n", files, CONFFILES)
    return out, files


@pytest.fixture()
def scratch(tmp_path: Path) -> DpkgRoot:
    need("dpkg", "dpkg")
    return DpkgRoot(tmp_path / "root", clean_env(tmp_path))


@pytest.fixture()
def opennebula(scratch: DpkgRoot, tmp_path: Path) -> dict[str, bytes]:
    """The OpenNebula stand-in installed in the scratch root; its files as shipped."""
    one_deb, files = opennebula_deb(tmp_path, "7.0.0")
    scratch.ok("-i", str(one_deb))
    return files


def assert_installed_into_opennebula(root: DpkgRoot) -> None:
    assert "vitastor" in tm_mad_drivers(root.read("etc/one/oned.conf").decode())
    clone = root.path / "var/lib/one/remotes/tm/vitastor/clone"
    assert os.readlink(clone) == LAUNCHER_LINK
    assert clone.resolve().is_file()
    assert b"vitastor" in root.read(ONE_PATHS["downloader.sh"])


@needs_root
class TestDpkgInstall:
    def test_without_opennebula_installs_says_what_to_do_and_purges_clean(self, scratch: DpkgRoot, deb: Path,
                                                                           tmp_path: Path) -> None:
        proc = scratch.ok("-i", str(deb))
        assert NOTE in proc.stdout
        assert scratch.status(PACKAGE) == "ii"
        onevita = scratch.path / "usr/bin/onevita"
        assert os.readlink(onevita) == "../lib/onevita/onevita.pyz"
        version = run(str(onevita), "version", env={**scratch.env, "SHIV_ROOT": str(tmp_path / "shiv")})
        assert version.returncode == 0, version.stderr
        assert version.stdout == f"onevita {__version__}\n"
        scratch.ok("--purge", PACKAGE)
        assert scratch.status(PACKAGE) == ""
        assert scratch.files() == {}

    def test_opennebula_installed_after_us_fires_the_trigger(self, scratch: DpkgRoot, deb: Path,
                                                             tmp_path: Path) -> None:
        """As when apt configures us before it unpacks OpenNebula (Recommends sets no order)."""
        assert NOTE in scratch.ok("-i", str(deb)).stdout
        one_deb, files = opennebula_deb(tmp_path, "7.0.0")
        proc = scratch.ok("-i", str(one_deb))
        assert f"Processing triggers for {PACKAGE}" in proc.stdout
        assert_installed_into_opennebula(scratch)
        scratch.ok("--purge", PACKAGE)
        assert scratch.files() == files

    def test_into_opennebula_and_purged_back_to_the_original_bytes(self, scratch: DpkgRoot, opennebula: dict[str, bytes],
                                                                    deb: Path) -> None:
        proc = scratch.ok("-i", str(deb))
        assert NOTE not in proc.stdout
        assert_installed_into_opennebula(scratch)
        scratch.ok("--purge", PACKAGE)
        assert scratch.files() == opennebula

    def test_an_opennebula_upgrade_fires_the_trigger_that_reinstalls(self, scratch: DpkgRoot,
                                                                    opennebula: dict[str, bytes], deb: Path,
                                                                    tmp_path: Path) -> None:
        """The upgrade puts back its own downloader.sh, and (taking the maintainer's versions)
        its oned.conf and vmm_execrc: the trigger must put the driver back in all of them."""
        scratch.ok("-i", str(deb))
        upgrade, upgraded = opennebula_deb(tmp_path, "7.0.1", trailer=b"# upgraded\n")
        proc = scratch.ok("--force-confnew", "-i", str(upgrade))
        assert f"Processing triggers for {PACKAGE}" in proc.stdout
        assert scratch.status(PACKAGE) == "ii"
        assert scratch.read("etc/one/oned.conf").endswith(b"# upgraded\n")
        assert_installed_into_opennebula(scratch)
        scratch.ok("--purge", PACKAGE)
        for path, data in upgraded.items():
            assert scratch.read(path) == data, path

    def test_opennebula_removed_first_then_us(self, scratch: DpkgRoot, opennebula: dict[str, bytes],
                                              deb: Path) -> None:
        """Removing OpenNebula fires the trigger too (its downloader.sh goes), which must not
        reinstall; removing us afterwards still undoes our oned.conf edits (the conffile stays)."""
        scratch.ok("-i", str(deb))
        proc = scratch.ok("--remove", "opennebula")
        assert f"Processing triggers for {PACKAGE}" in proc.stdout
        assert scratch.status(PACKAGE) == "ii"
        assert scratch.status("opennebula") == "rc"
        scratch.ok("--purge", PACKAGE)
        assert scratch.read("etc/one/oned.conf") == opennebula["etc/one/oned.conf"]
        assert not (scratch.path / "var/lib/one/remotes/tm/vitastor").exists()
        assert not (scratch.path / "var/lib/one/remotes/onevita").exists()

    def test_replaces_the_bash_driver_package(self, scratch: DpkgRoot, opennebula: dict[str, bytes], deb: Path,
                                              tmp_path: Path) -> None:
        """Vitastor's bash driver owns files where our links go: it is removed, and the links
        are placed after its files are gone."""
        old = build_deb(tmp_path / "old", tmp_path / "old.deb",
                        f"Package: {OLD_DRIVER}\nVersion: 3.0.8\nArchitecture: all\n",
                        {"var/lib/one/remotes/tm/vitastor/clone": b"#!/bin/bash\n# bash driver\n",
                         "var/lib/one/remotes/datastore/vitastor/cp": b"#!/bin/bash\n# bash driver\n"})
        scratch.ok("-i", str(old))
        scratch.ok("-i", str(deb))
        assert scratch.status(OLD_DRIVER)[1:2] in ("", "n", "c")  # not installed
        assert_installed_into_opennebula(scratch)
        assert os.readlink(scratch.path / "var/lib/one/remotes/datastore/vitastor/cp") == LAUNCHER_LINK
        scratch.ok("--purge", PACKAGE)
        assert scratch.files() == opennebula


class TestRpm:
    def query(self, rpm: Path, *args: str) -> str:
        proc = run("rpm", "-qp", *args, str(rpm))
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def test_header(self, rpm: Path, packages: Packages) -> None:
        name, version, release, arch, license_ = self.query(
            rpm, "--qf", "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{LICENSE}").split("|")
        assert (name, version, release, arch) == (PACKAGE, __version__, "1", platform.machine())
        assert license_ == "GPL-2.0-or-later"
        assert rpm.name == f"{PACKAGE}-{__version__}-1.{platform.machine()}.rpm"
        requires = self.query(rpm, "--requires").splitlines()
        expected = {line.removeprefix("Requires:").strip() for line in packages.meta.rpm_requires().splitlines()}
        assert expected <= set(requires)
        assert "python3 >= 3.9" in requires
        assert not [r for r in requires if r.startswith(("/usr/bin/python", "python(abi)"))]  # no automatic ones
        assert OLD_DRIVER in self.query(rpm, "--provides").split()
        assert self.query(rpm, "--obsoletes").split() == [OLD_DRIVER]
        assert self.query(rpm, "--conflicts").split() == [OLD_DRIVER]
        assert self.query(rpm, "--recommends").split() == ["opennebula", "vitastor-client"]

    def test_files(self, rpm: Path) -> None:
        files = {}
        for line in self.query(rpm, "--qf", "[%{FILENAMES}|%{FILEMODES:perms}|%{FILEUSERNAME}:%{FILEGROUPNAME}|"
                                            "%{FILELINKTOS}\n]").splitlines():
            path, mode, owner, link = line.split("|")
            files[path] = (mode, owner, link)
        assert files == {
            "/usr/bin/onevita": ("lrwxrwxrwx", "root:root", "../lib/onevita/onevita.pyz"),
            "/usr/lib/onevita": ("drwxr-xr-x", "root:root", ""),
            "/usr/lib/onevita/onevita.pyz": ("-rwxr-xr-x", "root:root", ""),
            f"/usr/share/doc/{PACKAGE}": ("drwxr-xr-x", "root:root", ""),
            **{f"/usr/share/doc/{PACKAGE}/{name}": ("-rw-r--r--", "root:root", "") for name in DOCS},
        }

    def test_scriptlets(self, rpm: Path) -> None:
        scripts = self.query(rpm, "--scripts")
        for heading in ("postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet"):
            assert heading in scripts
        assert "triggerin scriptlet (using /bin/sh) -- opennebula" in self.query(rpm, "--triggers")
        for tag, command in (("POSTIN", "install_or_note"), ("PREUN", "onevita uninstall"),
                             ("POSTUN", "purge_leftovers"), ("TRIGGERSCRIPTS", "onevita install")):
            body = self.query(rpm, "--qf", f"%{{{tag}}}")
            assert body.startswith("set -e\n") and command in body, tag
            check = subprocess.run(["sh", "-n"], input=body, capture_output=True, text=True)
            assert check.returncode == 0, (tag, check.stderr)

    @needs_root
    def test_scriptlets_install_and_uninstall(self, rpm: Path, tmp_path: Path) -> None:
        """rpm --root unpacks the files (scriptlets would run chrooted in a root without a shell),
        then each scriptlet runs with rpm's arguments and DPKG_ROOT pointing at that root."""
        root = tmp_path / "root"
        rpm_root = ["rpm", f"--root={root}", "--dbpath=/var/lib/rpm"]
        subprocess.run([*rpm_root, "--initdb"], check=True)
        installed = run(*rpm_root, "-i", "--nodeps", "--noscripts", str(rpm))
        assert installed.returncode == 0, installed.stderr
        for name, path in ONE_PATHS.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ONEFILES / name, root / path)
        env = {**clean_env(tmp_path), "DPKG_ROOT": str(root)}

        def scriptlet(tag: str, *args: str) -> subprocess.CompletedProcess[str]:
            body = self.query(rpm, "--qf", f"%{{{tag}}}")
            proc = run("sh", "-c", body, tag, *args, env=env)
            assert proc.returncode == 0, (tag, proc.stdout, proc.stderr)
            return proc

        scriptlet("POSTIN", "1")
        assert "vitastor" in tm_mad_drivers((root / "etc/one/oned.conf").read_text())
        assert os.readlink(root / "var/lib/one/remotes/tm/vitastor/clone") == LAUNCHER_LINK
        scriptlet("TRIGGERSCRIPTS", "1", "1")
        scriptlet("PREUN", "1")  # an upgrade: stays installed
        assert "vitastor" in tm_mad_drivers((root / "etc/one/oned.conf").read_text())
        scriptlet("PREUN", "0")
        scriptlet("POSTUN", "0")
        for name, path in ONE_PATHS.items():
            assert (root / path).read_bytes() == (ONEFILES / name).read_bytes(), path
        assert not (root / "var/lib/one/onevita").exists()
        erased = run(*rpm_root, "-e", "--noscripts", PACKAGE)
        assert erased.returncode == 0, erased.stderr
        assert not (root / "usr/lib/onevita").exists() and not (root / "usr/bin/onevita").is_symlink()
