"""The built zipapp on the system Python of every host OS OpenNebula 6.8 to 7.4 supports.

Each CPython of the build's list runs the real entry points: the launcher under an action's name
(``tm/clone``, a metadata action, and ``datastore/cp``, which moves data through
libvitastor_client in front-end mode), and the zipapp itself (``install --dry-run``, ``install``
then ``doctor``, as an admin or the package scripts run it). The launcher's shebang is
``#!/usr/bin/python3 -IS``, so another interpreter runs it as ``<python> -IS <link> ARGS``: argv[0]
stays the link's path. In ssh mode the host job still runs on the host's own /usr/bin/python3.

The interpreters are pyenv's under /root (mode 0700), which the unprivileged action user cannot
reach, and pyenv builds find their libpython through an absolute RUNPATH under /root. Actions,
which oned runs as oneadmin, therefore run as the action user on a copy of each interpreter
(binary, libpython, standard library without its tests; LD_LIBRARY_PATH names the copy's lib),
made once per session where that user can read it; a copy, not hard links, so that giving a
test's files to the user can never change the owner of a file under /root. install and doctor
run as root, as admins and package scripts run them, on the interpreter itself.

Interpreters this machine lacks are skipped, with the version in the reason.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from onevita.actions import DRIVER_DIRS
from onevita.install import remotes_tree
from tests.captures import plugin as captures
from tests.cloud import REMOTES, ROOT, Cloud, Result
from tests.datastore.util import MIB, catalog, image_data, make_image
from tests.harness import documents as docs
from tests.harness.oned import OnedStandIn
from tests.harness.sshd import Sshd
from tests.harness.user import ActionUser
from tests.install.conftest import ZIPAPP, FrontEnd, vitastor_site
from tests.sim.cluster import SimCluster

# The host OSes of OpenNebula 6.8 to 7.4 and their /usr/bin/python3 (README.md has the table)
HOST_PYTHONS = {"Debian 11": "3.9", "Debian 12": "3.11", "Debian 13": "3.13", "Ubuntu 22.04": "3.10",
                "Ubuntu 24.04": "3.12", "EL 9": "3.9", "EL 10": "3.12"}
COVERED = sorted(set(HOST_PYTHONS.values()), key=lambda v: tuple(map(int, v.split("."))))
OUTSIDE = ("3.8", "3.14")  # below and above the list: refused with a plain reason
PYENV = Path("/root/.pyenv/versions")
# left out of the action user's copy of an interpreter: what no run with -I -S reads
NOT_COPIED = {"test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3"}
VERSION_LINE = "onevita 0.1.0\n"


def interpreter(version: str) -> Path:
    """An interpreter of that minor version on this machine (pyenv's, else /usr/bin's), or skip."""
    candidates = sorted(PYENV.glob(f"{version}.*/bin/python{version}")) + [Path(f"/usr/bin/python{version}")]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    pytest.skip(f"no Python {version} on this machine (pyenv or /usr/bin)")


def load_build() -> object:
    """build.py as a module (its name would clash with the build/ folder and PyPI's build)."""
    spec = importlib.util.spec_from_file_location("onevita_build", ROOT / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def built_pythons(zipapp: Path) -> list[str]:
    return remotes_tree.build_info(zipapp)[1]


# the action user's interpreters -------------------------------------------------------------
@dataclass(frozen=True)
class Python:
    """An interpreter the action user can run: its path and the environment it needs."""

    path: str
    env: dict[str, str]


def copy_interpreter(source: Path, target: Path) -> Python:
    """The binary behind ``source``, its libpython and its standard library under ``target``."""
    prefix = source.resolve().parent.parent
    version = source.name.removeprefix("python")
    (target / "bin").mkdir(parents=True)
    shutil.copy2(source.resolve(), target / "bin" / source.name)
    libraries = sorted(prefix.glob("lib/libpython*.so*"))
    (target / "lib").mkdir()
    for lib in libraries:
        shutil.copy2(lib, target / "lib" / lib.name, follow_symlinks=False)
    stdlib = prefix / "lib" / f"python{version}"
    shutil.copytree(stdlib, target / "lib" / stdlib.name, symlinks=True,
                    ignore=lambda folder, names: [n for n in names if Path(folder) == stdlib
                                                  and (n in NOT_COPIED or n.startswith("config-"))])
    env = {"LD_LIBRARY_PATH": str(target / "lib")} if libraries else {}
    return Python(str(target / "bin" / source.name), env)


@pytest.fixture(scope="session")
def user_pythons(tmp_path_factory: pytest.TempPathFactory, action_user: ActionUser) -> Callable[[str], Python]:
    """version → that interpreter as the action user can run it: itself if the user can already
    (a system Python), else a copy made on first use (see the module's docstring)."""
    made: dict[str, Python] = {}
    base: list[Path] = []

    def get(version: str) -> Python:
        if version not in made:
            source = interpreter(version)
            python = Python(str(source), {})
            try:
                reachable = subprocess.run([str(source), "-IS", "-c", "pass"], capture_output=True,
                                           check=False, **action_user.credentials()).returncode == 0
            except PermissionError:  # a folder on its path the user may not enter
                reachable = False
            if not reachable:
                if not base:
                    base.append(tmp_path_factory.mktemp("pythons"))
                    base[0].chmod(0o755)  # root's, readable: never given to the user
                python = copy_interpreter(source, base[0] / version)
            made[version] = python
        return made[version]

    return get


@pytest.fixture(scope="session")
def user_shiv_roots(tmp_path_factory: pytest.TempPathFactory, action_user: ActionUser,
                    user_pythons: Callable[[str], Python], built: Path) -> Callable[[str], Path]:
    """version → a shiv cache of the action user's where that Python extracted the zipapp, as on a
    host where an action ran once: the actions of the tests take the launcher's fast path."""
    made: dict[str, Path] = {}

    def get(version: str) -> Path:
        if version not in made:
            shiv = tmp_path_factory.mktemp(f"shiv-{version}")
            action_user.own(shiv)
            python = user_pythons(version)
            proc = subprocess.run([python.path, "-IS", str(built / remotes_tree.LAUNCHER), "version"],
                                  capture_output=True, text=True, env={**python.env, "SHIV_ROOT": str(shiv)},
                                  check=False, **action_user.credentials())
            assert (proc.returncode, proc.stdout) == (0, VERSION_LINE), proc.stderr
            # shiv compiled the extracted tree with the Python that ran: this one
            tag = "cpython-" + version.replace(".", "")
            assert list(shiv.glob(f"onevita.pyz_*/site-packages/onevita/__pycache__/__init__.{tag}.pyc"))
            made[version] = shiv
        return made[version]

    return get


def run_action(cloud: Cloud, python: Python, shiv: Path, action: str, *args: str,
               stdin: bytes = b"") -> Result:
    """``Cloud.run`` with the link run by ``python``: the action through its dist/remotes link,
    as the action user, in the cloud's environment."""
    family, _, name = action.partition("/")
    link = REMOTES / DRIVER_DIRS[family] / name
    argv = [python.path, "-IS", str(link), *args]
    start = time.monotonic()
    proc = cloud.process(argv, stdin=stdin, env={**python.env, "SHIV_ROOT": str(shiv)})
    result = Result(argv, proc.returncode, proc.stdout.decode(), proc.stderr.decode(), time.monotonic() - start)
    cloud.history.append(result)
    if result.rc == 0:
        captures.record(action, stdin)
    return result


def admin(frontend: FrontEnd, python: Path, *args: str, shiv: Path) -> subprocess.CompletedProcess[str]:
    """``FrontEnd.onevita`` on ``python``: ``<python> -IS onevita.pyz COMMAND --root ROOT ...`` as
    root, as an admin or the package scripts run it, with a shiv cache of its own."""
    command, *rest = args
    return subprocess.run([str(python), "-IS", str(ZIPAPP), command, "--root", str(frontend.root), *rest],
                          capture_output=True, text=True, env={**frontend.env, "SHIV_ROOT": str(shiv)},
                          timeout=120, check=False)


@pytest.fixture()
def doctor_site(oned: OnedStandIn, cluster: SimCluster, sshd: Sshd, world: Path, tmp_path: Path,
                sim_libvitastor: Path) -> FrontEnd:
    """``vitastor_site`` (as tests/install/test_doctor.py's), whose oned also knows host node1."""
    oned.hosts[0] = docs.host_xml(0, "node1")
    return vitastor_site(oned, cluster, sshd, world, tmp_path, sim_libvitastor)


# the build ----------------------------------------------------------------------------------
class TestTheBuild:
    def test_the_default_build_covers_every_host_python(self, built: Path) -> None:
        build = load_build()
        assert set(HOST_PYTHONS.values()) <= set(build.DEFAULT_PYTHONS)  # type: ignore[attr-defined]
        assert set(HOST_PYTHONS.values()) <= set(built_pythons(built / remotes_tree.ZIPAPP))

    def test_the_zipapp_keeps_of_the_wheels_only_what_runs(self, built: Path) -> None:
        """lxml: the package's __init__, etree and _elementpath per Python; orjson: its module per
        Python; cffi: only _cffi_backend per Python; no pycparser; every licence."""
        pyz = built / remotes_tree.ZIPAPP
        names = set(zipfile.ZipFile(pyz).namelist())
        site = "site-packages/"
        suffixes = [f"cpython-{v.replace('.', '')}-{os.uname().machine}-linux-gnu" for v in built_pythons(pyz)]
        packages = {top: sorted(n.removeprefix(f"{site}{top}/") for n in names if n.startswith(f"{site}{top}/"))
                    for top in ("lxml", "orjson", "cffi", "pycparser")}
        assert packages == {
            "lxml": sorted(["__init__.py", *(f"{m}.{s}.so" for m in ("etree", "_elementpath") for s in suffixes)]),
            "orjson": sorted(["__init__.py", *(f"orjson.{s}.so" for s in suffixes)]),
            "cffi": [], "pycparser": []}
        assert {f"{site}_cffi_backend.{s}.so" for s in suffixes} <= names
        assert not [n for n in names if n.startswith(site + "pycparser")]
        for dist in ("lxml-6.0.2", "orjson-3.11.4", "cffi-2.0.0"):
            assert [n for n in names if n.startswith(f"{site}{dist}.dist-info/licenses/")], dist

    def test_every_module_onevita_imports_is_in_the_zipapp(self, built: Path) -> None:
        """Every import statement in the zipapp's onevita (the generated _ffi module too, and
        imports inside functions) of a module outside onevita and the standard library names a
        module the zipapp holds, as an extension for each Python or as Python source."""
        pyz = built / remotes_tree.ZIPAPP
        archive = zipfile.ZipFile(pyz)
        names = set(archive.namelist())
        suffixes = [f"cpython-{v.replace('.', '')}-{os.uname().machine}-linux-gnu" for v in built_pythons(pyz)]

        def held(module: str) -> bool:
            path = "site-packages/" + module.replace(".", "/")
            return (f"{path}/__init__.py" in names or f"{path}.py" in names
                    or all(f"{path}.{s}.so" in names for s in suffixes))

        imported: set[str] = set()
        for name in names:
            if not (name.startswith("site-packages/onevita/") and name.endswith(".py")):
                continue
            for node in ast.walk(ast.parse(archive.read(name))):
                if isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module)
                    # "from lxml import etree": etree is a module of lxml, or a name in it
                    imported.update(f"{node.module}.{alias.name}" for alias in node.names
                                    if held(f"{node.module}.{alias.name}"))
        outside = {m for m in imported
                   if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "onevita"}
        # what the launcher imports from the zipapp (shiv's, at its root) is checked by running it
        outside.discard("_bootstrap")
        assert outside >= {"lxml", "lxml.etree", "orjson", "_cffi_backend"}
        assert sorted(m for m in outside if not held(m)) == []


# every Python of the list ---------------------------------------------------------------------
@pytest.mark.parametrize("version", COVERED)
class TestOnEveryHostPython:
    def test_the_launcher_and_the_zipapp_run(self, built: Path, version: str, tmp_path: Path) -> None:
        """A fresh shiv cache: the launcher's first run extracts the zipapp (shiv's bootstrap),
        the second imports from the cache; ``python onevita.pyz`` runs too."""
        python = str(interpreter(version))
        env = {**os.environ, "SHIV_ROOT": str(tmp_path)}
        for _ in range(2):
            proc = subprocess.run([python, "-IS", str(built / remotes_tree.LAUNCHER), "version"],
                                  capture_output=True, text=True, env=env, check=False)
            assert (proc.returncode, proc.stdout, proc.stderr) == (0, VERSION_LINE, "")
        proc = subprocess.run([python, "-IS", str(built / remotes_tree.ZIPAPP), "version"], capture_output=True,
                              text=True, env=env, check=False)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, VERSION_LINE, "")

    def test_every_onevita_module_imports(self, built: Path, version: str, tmp_path: Path) -> None:
        """Every module of the zipapp's onevita imports on this Python (no syntax or runtime
        annotation it lacks, no missing dependency), and lxml.etree, orjson and the cffi module work."""
        python = str(interpreter(version))
        env = {**os.environ, "SHIV_ROOT": str(tmp_path)}
        subprocess.run([python, "-IS", str(built / remotes_tree.ZIPAPP), "version"], env=env, check=True,
                       capture_output=True)
        (site,) = tmp_path.glob("onevita.pyz_*/site-packages")
        code = (
            "import sys, pkgutil, importlib\n"
            f"sys.path.insert(0, {str(site)!r})\n"
            "import onevita\n"
            "names = [m.name for m in pkgutil.walk_packages(onevita.__path__, 'onevita.')]\n"
            "for name in names: importlib.import_module(name)\n"
            "from lxml import etree\n"
            "import orjson\n"
            "from onevita.vitastor._ffi import ffi\n"
            "root = etree.fromstring(b'<VM><ID>7</ID><TEMPLATE><DISK><SIZE>1</SIZE></DISK></TEMPLATE></VM>')\n"
            "assert root.find('TEMPLATE/DISK/SIZE').text == '1' and root.xpath('string(ID)') == '7'\n"
            "assert orjson.loads(orjson.dumps({'a': [1]})) == {'a': [1]}\n"
            "assert ffi.sizeof('int') == 4\n"
            "print(len(names))\n")
        proc = subprocess.run([python, "-I", "-S", "-c", code], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        assert int(proc.stdout) > 50

    def test_a_metadata_action(self, cloud: Cloud, version: str, user_pythons: Callable[[str], Python],
                               user_shiv_roots: Callable[[str], Path]) -> None:
        """tm/clone (oned over XML-RPC, the etcd read and create transaction, here or on the host),
        and its retry, as the action user."""
        src = f"{cloud.prefix}-5"
        make_image(cloud, src, 64, b"A" * 8192)
        cloud.add_vm(12, [docs.image_disk(0, 5, source=src, clone=True, size_mb=128)])
        args = (f"one-fe:{src}", "node1:/var/lib/one//datastores/100/12/disk.0", "12", "101")
        for _ in range(2):
            result = run_action(cloud, user_pythons(version), user_shiv_roots(version), "tm/clone", *args)
            assert result.rc == 0, result.stderr
        cat = catalog(cloud)
        child, base = cat.get(f"{src}-12-0"), cat.get(src)
        assert (child.parent_id, child.size, child.readonly) == (base.id, 128 * MIB, False)
        assert cloud.cluster.read(f"{src}-12-0", 0, 8192) == b"A" * 8192

    def test_a_data_action(self, cloud: Cloud, version: str, tmp_path: Path, user_pythons: Callable[[str], Python],
                           user_shiv_roots: Callable[[str], Path]) -> None:
        """datastore/cp of a sparse raw file: in front-end mode this Python moves the data through
        libvitastor_client (cffi), in ssh mode it streams the file to the host's job."""
        path = tmp_path / "disk.raw"
        data = os.urandom(64 << 10)
        with open(path, "wb") as f:
            f.truncate(4 * MIB)
            f.write(data)
            f.seek(3 * MIB)
            f.write(data)
        stdin = image_data(cloud, 7, path=str(path), size_mb=4)
        result = run_action(cloud, user_pythons(version), user_shiv_roots(version), "datastore/cp", "7",
                            stdin=stdin)
        assert (result.rc, result.stdout, result.reason) == (0, f"{cloud.prefix}-7 raw\n", "")
        assert cloud.cluster.read(f"{cloud.prefix}-7", 0, 4 * MIB) == path.read_bytes()

    def test_install_dry_run_then_install_and_doctor(self, doctor_site: FrontEnd, version: str,
                                                     tmp_path: Path) -> None:
        """As root through the zipapp: ``install --dry-run`` writes nothing, ``install`` places the
        driver, ``doctor --hosts`` passes (the host's copy compared over ssh)."""
        python, shiv = interpreter(version), tmp_path / "shiv"
        before = doctor_site.files()
        proc = admin(doctor_site, python, "install", "--dry-run", shiv=shiv)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[-1] == "dry run: nothing written"
        assert any(line.startswith("would change: oned.conf:") for line in lines)
        assert doctor_site.files() == before
        proc = admin(doctor_site, python, "install", shiv=shiv)
        assert proc.returncode == 0, proc.stderr
        proc = admin(doctor_site, python, "doctor", "--hosts", shiv=shiv)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout.splitlines()
        assert "OK   oned.conf: configured for Vitastor" in out
        assert any(line.startswith("OK   remotes: onevita and its ") for line in out)
        assert "OK   host node1: remotes in sync" in out
        assert any(line.startswith("OK   libvitastor_client: ") for line in out)
        assert not [line for line in out if line.startswith("FAIL")]


# outside the list -----------------------------------------------------------------------------
@pytest.mark.parametrize("version", OUTSIDE)
class TestOtherPythons:
    @pytest.mark.parametrize("entry", ["launcher", "zipapp"])
    def test_refused_with_a_plain_reason(self, built: Path, version: str, entry: str, tmp_path: Path) -> None:
        """Under an action's name and as ``python onevita.pyz``: exit 1, one line naming the built
        Pythons and this one, and nothing run (the shiv cache stays empty on the launcher's path)."""
        python = interpreter(version)
        target = built / ("tm/vitastor/clone" if entry == "launcher" else remotes_tree.ZIPAPP)
        proc = subprocess.run([str(python), "-IS", str(target), "a", "b", "12", "101"], capture_output=True,
                              text=True, env={**os.environ, "SHIV_ROOT": str(tmp_path)}, check=False)
        built_list = ", ".join(built_pythons(built / remotes_tree.ZIPAPP))
        assert (proc.returncode, proc.stdout) == (1, "")
        assert proc.stderr == (f"onevita was built for Python {built_list}, but {python} is Python {version}: "
                               "rebuild it with build.py --python\n")
        if entry == "launcher":
            assert list(tmp_path.iterdir()) == []
