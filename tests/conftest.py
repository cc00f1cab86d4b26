"""Session-wide real parts (etcd, sshd, the oned stand-in, the built zipapp copied to a "host"
with rsync -L) and a per-test ``cloud`` in both job modes.

The tests run as root; the driver actions and the hosts' sessions run as the unprivileged
``action_user`` (tests/harness/user.py), which owns the temporary directories they work in.

Point the suite at a real Vitastor cluster with ONEVITA_TEST_VITASTOR_CONF (its vitastor.conf)
and ONEVITA_TEST_VITASTOR_CLI (the real vitastor-cli); etcd is then the cluster's own. Each test
names its images under its own ``image_prefix``; on a real cluster they are removed when the test
ends, and the run fails if any is left at the session's end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.captures import plugin as captures
from tests.cloud import REMOTES, ROOT, Cloud, action_env
from tests.harness.antietcd_server import AntiEtcdServer
from tests.harness.etcd_server import EtcdServer
from tests.harness.oned import OnedStandIn
from tests.harness.sshd import Sshd
from tests.harness.user import PATH, ActionUser
from tests.sim.cluster import SimCluster, real_conf, real_leftovers
from tests.sim.conftest import sim_libvitastor  # noqa: F401 (the actions and hosts load it too)

SIM_CLI = str(ROOT / "tests" / "sim" / "bin" / "vitastor-cli")
VITASTOR_CLI = os.environ.get("ONEVITA_TEST_VITASTOR_CLI", SIM_CLI)
SIMULATED = not real_conf()  # else the real libvitastor_client
# the test modules also run against antietcd, the etcd replacement Vitastor's monitor can use
ANTIETCD_MODULES = {"tests.vitastor.test_catalog", "tests.tm.test_disk", "tests.tm.test_snap",
                    "tests.datastore.test_image"}
_OWN_BASETEMP = pytest.StashKey[bool]()  # whether pytest_configure made the base temporary directory
_PREFIXES = pytest.StashKey[list[str]]()  # every test's image_prefix, for the session-end check
BASETEMP_PREFIX = "pytest-onevita-"  # then the pid of the session
KEEP_BASETEMPS = 3  # of finished sessions, as pytest keeps its own


def _running(basetemp: Path) -> bool:
    """Whether the session that made ``basetemp`` still runs (without a pid in the name: as if
    it did, so nothing that may be in use is removed)."""
    try:
        os.kill(int(basetemp.name.removeprefix(BASETEMP_PREFIX).split("-")[0]), 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError):
        return True
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """A fresh base temporary directory in /tmp unless --basetemp names one: pytest's own
    /tmp/pytest-of-root is root's alone (pytest takes group and other bits off it at every
    start, also under a session still running), and the action user must reach the tests'
    directories below it. Of those that finished sessions left (after failures), the newest
    KEEP_BASETEMPS stay. The ``etcd_only`` marker is declared here too."""
    config.addinivalue_line("markers", "etcd_only: run an ANTIETCD_MODULES test on etcd only")
    if config.option.basetemp is None:
        kept = [path for path in Path(tempfile.gettempdir()).glob(BASETEMP_PREFIX + "*")
                if not _running(path)]
        for path in sorted(kept, key=lambda path: path.stat().st_mtime)[:-KEEP_BASETEMPS]:
            shutil.rmtree(path, ignore_errors=True)
        config.option.basetemp = tempfile.mkdtemp(prefix=f"{BASETEMP_PREFIX}{os.getpid()}-")
        config.stash[_OWN_BASETEMP] = True


def report_leftovers(session: pytest.Session) -> bool:
    """Write the images the session's tests left in the real cluster to the terminal; whether
    there were none (a test's own cleanup failed, or it made an image outside its prefix's)."""
    left = real_leftovers(session.config.stash.get(_PREFIXES, []))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if left and reporter is not None:
        reporter.write_line("")  # the progress line is still open at the session's end
        reporter.write_sep("=", "images the tests left in the real Vitastor cluster", red=True)
        for name in left:
            reporter.write_line(name)
    return not left


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a test sent a document a real oned would not (tests/captures), or left an
    image in a real cluster; remove the base temporary directory after a run without failures,
    keep it to look into otherwise."""
    if not captures.report(session):
        exitstatus = session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if not report_leftovers(session):
        exitstatus = session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if session.config.stash.get(_OWN_BASETEMP, False) and exitstatus == 0:
        shutil.rmtree(session.config.option.basetemp, ignore_errors=True)


@pytest.fixture(scope="session")
def built() -> Path:
    """dist/remotes as built by build.py (./dev test builds it first)."""
    if not (REMOTES / "onevita" / "onevita.pyz").exists():
        subprocess.run([sys.executable, str(ROOT / "build.py"), "--dist", str(REMOTES.parent)], check=True)
    return REMOTES


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real etcd (Debian's etcd-server) for the whole session; its client URL."""
    with EtcdServer(tmp_path_factory.mktemp("etcd")) as server:
        yield server.url


@pytest.fixture(scope="session")
def action_user(tmp_path_factory: pytest.TempPathFactory) -> ActionUser:
    """The unprivileged user every action and host session runs as; it owns the base temporary
    directory (each test's own directory is given to it by the test's cloud)."""
    user = ActionUser.lookup()
    user.own(tmp_path_factory.getbasetemp())
    return user


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory, built: Path, action_user: ActionUser) -> Path:
    """A session directory for the shiv cache, the hosts' copy of the remotes and oned's files,
    the action user's as /var/lib/one and /var/tmp/one are oneadmin's."""
    base = tmp_path_factory.mktemp("world")
    subprocess.run(["rsync", "-aL", f"{built}/", str(base / "host-remotes")], check=True)
    (base / "shiv").mkdir()
    (base / "one" / "etc").mkdir(parents=True)
    action_user.give(base)
    return base


def library(sim_library: Path) -> str | None:
    """ONEVITA_LIBVITASTOR: the stand-in for a simulated cluster; a real one uses its own."""
    return str(sim_library) if SIMULATED else None


@pytest.fixture(scope="session")
def action_library(sim_libvitastor: Path, action_user: ActionUser) -> str | None:  # noqa: F811
    """``library`` for the actions and host jobs, which load it as the action user."""
    action_user.give(sim_libvitastor.parent)
    return library(sim_libvitastor)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory, world: Path, action_user: ActionUser,
         action_library: str | None) -> Iterator[Sshd]:
    """A real sshd on loopback; node1, node2, bridge1, bridge2 and one-fe all lead to it, as the
    action user with Debian's PATH for users other than root."""
    env = {"PATH": PATH, "SHIV_ROOT": str(world / "shiv"), "ONEVITA_VITASTOR_CLI": VITASTOR_CLI}
    if action_library:
        env["ONEVITA_LIBVITASTOR"] = action_library
    with Sshd(tmp_path_factory.mktemp("sshd"), user=action_user, env=env,
              aliases=("node1", "node2", "bridge1", "bridge2", "one-fe")) as server:
        yield server


@pytest.fixture(scope="session")
def oned_server() -> Iterator[OnedStandIn]:
    with OnedStandIn() as server:
        yield server


@pytest.fixture()
def oned(oned_server: OnedStandIn) -> OnedStandIn:
    """The oned stand-in, emptied for this test."""
    oned_server.reset()
    return oned_server


@pytest.fixture(scope="session")
def antietcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real antietcd (npm) for the whole session; its client URL."""
    with AntiEtcdServer(tmp_path_factory.mktemp("antietcd")) as server:
        yield server.url


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The ANTIETCD_MODULES' tests run once on etcd and once on antietcd, but those marked
    ``etcd_only`` (long ones whose etcd traffic the others already cover: suite time)."""
    if "store" in metafunc.fixturenames and metafunc.module.__name__ in ANTIETCD_MODULES and \
            metafunc.definition.get_closest_marker("etcd_only") is None:
        metafunc.parametrize("store", ["etcd", "antietcd"], indirect=True)


@pytest.fixture()
def store(request: pytest.FixtureRequest) -> str:
    """The metadata store of a simulated cluster: etcd, or antietcd for the ANTIETCD_MODULES'
    second run (a real cluster has its own)."""
    name = str(getattr(request, "param", "etcd"))
    if name == "antietcd" and not SIMULATED:
        pytest.skip("a real cluster's metadata store is its own")
    return name


@pytest.fixture()
def image_prefix(request: pytest.FixtureRequest) -> str:
    """The prefix of every image name this test makes (``t`` and 6 hex digits): a real cluster
    is shared with other tests and users, so a test counts and removes its own images only."""
    prefix = f"t{uuid.uuid4().hex[:6]}"
    request.config.stash.setdefault(_PREFIXES, []).append(prefix)
    return prefix


@pytest.fixture()
def cluster(store: str, request: pytest.FixtureRequest, tmp_path: Path, image_prefix: str) -> Iterator[SimCluster]:
    """A Vitastor cluster of this test's own (its own etcd prefix and data directory), or the
    real one, from which the test's images are removed when it ends."""
    url = request.getfixturevalue(store)
    cluster = SimCluster(url, tmp_path / "cluster", prefix=f"/vitastor-{uuid.uuid4().hex[:8]}")
    yield cluster
    if not cluster.simulated:
        cluster.remove_images(image_prefix)


@pytest.fixture(params=["ssh", "frontend"])
def cloud(request: pytest.FixtureRequest, oned: OnedStandIn, cluster: SimCluster, sshd: Sshd, world: Path,
          tmp_path: Path, action_user: ActionUser, action_library: str | None, image_prefix: str) -> Cloud:
    """The test's cloud, once with jobs over ssh on the hosts, once on the front-end; its
    actions run as the action user, to whom ``tmp_path`` is given before each; its IMAGE_PREFIX
    is the test's ``image_prefix``."""
    auth = tmp_path / "one_auth"
    auth.write_text(oned.session + "\n")
    env = action_env(oned=oned, user=action_user, ssh_config=sshd.config_path,
                     host_remotes=world / "host-remotes", auth_file=auth, one_location=world / "one",
                     shiv_root=world / "shiv", vitastor_cli=VITASTOR_CLI, libvitastor=action_library)
    cloud = Cloud(oned=oned, cluster=cluster, env=env, mode=request.param, user=action_user, workdir=tmp_path,
                  prefix=image_prefix, pool=os.environ.get("ONEVITA_TEST_POOL", "testpool"))
    cloud.add_datastores()
    return cloud


@pytest.fixture()
def staging(cloud: Cloud, tmp_path: Path) -> Path:
    """The datastores' STAGING_DIR (on the job host, which is this machine too)."""
    path = tmp_path / "staging"
    path.mkdir()
    cloud.add_datastores(STAGING_DIR=str(path))
    return path


@pytest.fixture()
def tiny_staging(cloud: Cloud, tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs as STAGING_DIR (skipped where tmpfs cannot be mounted)."""
    path = tmp_path / "small"
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    cloud.add_datastores(STAGING_DIR=str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
