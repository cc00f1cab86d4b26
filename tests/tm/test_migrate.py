"""tm/mv, premigrate, postmigrate and failmigrate through their dist/remotes links, in both job
modes. The VM directory lives on the "hosts", which are all this machine over ssh: mv uses
different paths for source and destination; the live-migration hooks (one path for both hosts)
see node2's disk through ``SSH``, a wrapper that maps node1's datastore directory to another one
for node2. Without it, node1 and node2 share the directory, like a shared system datastore."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from tests.cloud import SYSTEM_DS, Cloud, Result
from tests.harness import documents as docs
from tests.harness.sshd import Sshd
from tests.harness.user import HOST_PYTHON

MIB = 1 << 20
SPARSE_SIZE = 64 * MIB
LCM_PROLOG_MIGRATE_UNKNOWN = 60

# node2's view: every path under FROM (node1's datastore directory) is read under TO instead.
VIEW_SSH = """#!{python}
import os, shlex, sys
args = sys.argv[1:]
at = 2 if args[:1] == ["-F"] else 0
if args[at] == "node2":
    words = shlex.split(args[at + 1])
    args[at + 1] = shlex.join([{to!r} + w[len({frm!r}):] if w == {frm!r} or w.startswith({frm!r} + "/")
                               else w for w in words])
os.execvp("ssh", ["ssh", *args])
"""

# A stand-in for another TM driver's script: records its argv and stdin, exits with $RC_FILE's code.
RECORDER = """#!/bin/sh
printf '%s\\n' "$@" > {record}.argv
cat > {record}.stdin
exit $(cat {record}.rc 2>/dev/null || echo 0)
"""


def populate(vm_dir: Path) -> None:
    """A VM directory as a host has it: deployment file, context ISO and its link, a checkpoint
    file that is mostly a hole."""
    vm_dir.mkdir(parents=True)
    (vm_dir / "deployment.0").write_text("<domain type='kvm'><name>one-12</name></domain>\n")
    (vm_dir / "disk.3").write_bytes(os.urandom(64 * 1024))
    (vm_dir / "disk.3.iso").symlink_to("disk.3")
    with open(vm_dir / "checkpoint", "wb") as f:
        f.truncate(SPARSE_SIZE)
        f.seek(32 * MIB)
        f.write(b"C" * 4096)
    (vm_dir / "checkpoint").chmod(0o600)


def tree(vm_dir: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``vm_dir``: kind, mode and content digest or link target."""
    entries: dict[str, tuple[object, ...]] = {}
    for path in sorted(vm_dir.rglob("*")):
        rel, st = str(path.relative_to(vm_dir)), path.lstat()
        if path.is_symlink():
            entries[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            entries[rel] = ("dir", st.st_mode)
        else:
            entries[rel] = ("file", st.st_mode, st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return entries


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def run_tree(cloud: Cloud, remotes: Path, action: str, *args: str, stdin: bytes = b"",
             env: dict[str, str] | None = None) -> Result:
    """Run an action through its link in another remotes tree, like one_tm does."""
    return cloud.run(action, *args, stdin=stdin, env=env, remotes=remotes)


def vm_b64(vm_id: int = 12, *, other_tm: str | None = None, lcm_state: int = 3) -> bytes:
    """The VM document oned passes to the migration hooks, base64; ``other_tm`` adds a disk of
    that TM driver next to a Vitastor one."""
    disks = [docs.image_disk(0, 5, source="one-5", clone=True, size_mb=64)]
    if other_tm:
        disks.append(docs.image_disk(1, 9, source="/var/lib/one//datastores/1/0a1b2c", clone=False,
                                     size_mb=64, ds_id=1, tm_mad=other_tm))
    return docs.encode_b64(docs.vm_xml(vm_id, disks=disks, lcm_state=lcm_state)).encode()


@pytest.fixture()
def ds_dir(tmp_path: Path) -> Path:
    """node1's DATASTORE_LOCATION."""
    return tmp_path / "datastores"


@pytest.fixture()
def node2_view(tmp_path: Path, ds_dir: Path) -> tuple[Path, dict[str, str]]:
    """node2's own DATASTORE_LOCATION and the environment that makes node2 see it at ds_dir."""
    node2 = tmp_path / "node2-datastores"
    wrapper = tmp_path / "view-ssh"
    wrapper.write_text(VIEW_SSH.format(python=HOST_PYTHON, frm=str(ds_dir), to=str(node2)))
    wrapper.chmod(0o755)
    return node2, {"SSH": str(wrapper)}


@pytest.fixture()
def other_tm(built: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the built remotes tree with a recording ``tm/shared`` driver; (tree, record)."""
    remotes, record = tmp_path / "remotes", tmp_path / "shared-call"
    subprocess.run(["rsync", "-a", f"{built}/", str(remotes)], check=True)
    (remotes / "tm" / "shared").mkdir()
    for action in ("premigrate", "postmigrate"):
        script = remotes / "tm" / "shared" / action
        script.write_text(RECORDER.format(record=f"{record}-{action}"))
        script.chmod(0o755)
    return remotes, record


class TestMv:
    def test_a_disk_is_not_moved(self, cloud: Cloud, ds_dir: Path) -> None:
        """Disks live in Vitastor: mv of disk.N does nothing, without asking oned."""
        src, dst = ds_dir / "100/12/disk.0", ds_dir / "b/100/12/disk.0"
        cloud.ok("tm/mv", f"node1:{src}", f"node2:{dst}", "12", "101")
        assert not ds_dir.exists()
        assert cloud.oned.calls == []

    def test_the_vm_directory_moves_to_the_other_host(self, cloud: Cloud, tmp_path: Path) -> None:
        """Every file, link and mode arrives; the checkpoint stays sparse; the source is gone."""
        src, dst = tmp_path / "a/100/12", tmp_path / "b/100/12"
        populate(src)
        before = tree(src)
        cloud.add_vm(12, [], host="node1")
        result = cloud.ok("tm/mv", f"node1:{src}", f"node2:{dst}", "12", str(SYSTEM_DS))
        assert tree(dst) == before
        assert not src.exists()
        assert allocated(dst / "checkpoint") < MIB
        assert (dst / "checkpoint").read_bytes()[32 * MIB:32 * MIB + 4096] == b"C" * 4096
        assert f"INFO: tm/mv: copied node1:{src} to node2:{dst}" in result.stderr
        assert result.reason == ""

    def test_front_end_path_with_double_slash(self, cloud: Cloud, tmp_path: Path) -> None:
        """oned's paths carry DATASTORE_LOCATION's ``//``; stop moves the directory to the front-end."""
        src, dst = tmp_path / "a/100/12", tmp_path / "fe/100/12"
        populate(src)
        before = tree(src)
        cloud.add_vm(12, [], host="node1")
        cloud.ok("tm/mv", f"node1:{tmp_path}/a//100/12", f"one-fe:{tmp_path}/fe//100/12/", "12", "100")
        assert (tree(dst), src.exists()) == (before, False)

    def test_retry_after_success_is_success(self, cloud: Cloud, tmp_path: Path) -> None:
        src, dst = tmp_path / "a/100/12", tmp_path / "b/100/12"
        populate(src)
        cloud.add_vm(12, [], host="node1")
        cloud.ok("tm/mv", f"node1:{src}", f"node2:{dst}", "12", "100")
        after = tree(dst)
        result = cloud.ok("tm/mv", f"node1:{src}", f"node2:{dst}", "12", "100")
        assert tree(dst) == after
        assert f"INFO: tm/mv: node1:{src} does not exist, nothing to move" in result.stderr

    def test_same_host_and_path_is_a_no_op(self, cloud: Cloud, tmp_path: Path) -> None:
        src = tmp_path / "a/100/12"
        populate(src)
        before = tree(src)
        cloud.ok("tm/mv", f"node1:{src}", f"node1:{src}/", "12", "100")
        assert tree(src) == before
        assert cloud.oned.calls == []

    def test_a_directory_shared_by_both_hosts_is_kept(self, cloud: Cloud, tmp_path: Path) -> None:
        """node1 and node2 see one directory (a shared system datastore): it is neither copied
        onto itself nor removed, and no marker file is left in it."""
        src = tmp_path / "a/100/12"
        populate(src)
        before = tree(src)
        cloud.add_vm(12, [], host="node1")
        result = cloud.ok("tm/mv", f"node1:{src}", f"node2:{src}", "12", "100")
        assert tree(src) == before
        assert f"INFO: tm/mv: node1:{src} and node2:{src} are the same directory, nothing to move" in result.stderr

    def test_nothing_moves_from_a_lost_host(self, cloud: Cloud, tmp_path: Path) -> None:
        """PROLOG_MIGRATE_UNKNOWN: the source host is down, nothing is copied and no ssh to it
        is tried (like the stock mv)."""
        dst = tmp_path / "b/100/12"
        cloud.add_vm(12, [], host="deadhost", lcm_state=LCM_PROLOG_MIGRATE_UNKNOWN)
        result = cloud.ok("tm/mv", f"deadhost:{tmp_path}/a/100/12", f"node2:{dst}", "12", "100")
        assert not dst.exists()
        assert "INFO: tm/mv: VM 12 is in LCM state 60 (host lost): not moving files from deadhost" in result.stderr

    def test_a_dead_destination_fails_and_keeps_the_source(self, cloud: Cloud, tmp_path: Path,
                                                           sshd: Sshd) -> None:
        src = tmp_path / "a/100/12"
        populate(src)
        before = tree(src)
        cloud.add_vm(12, [], host="node1")
        result = cloud.run("tm/mv", f"node1:{src}", f"deadhost:{tmp_path}/b/100/12", "12", "100")
        assert (result.rc, result.reason) == (
            1, f"ssh to deadhost failed: ssh: connect to host 127.0.0.1 port {sshd.dead_port}: Connection refused")
        assert result.errors
        assert tree(src) == before

    @pytest.mark.parametrize("path", ["{tmp}/a/100/13", "{tmp}/a/101/12", "{tmp}/a/100/12/x",
                                      "{tmp}/a/../a/100/12", "relative/100/12", "{tmp}/a b/100/12",
                                      "/100/12"])
    def test_a_path_that_is_not_the_vm_directory_is_refused(self, cloud: Cloud, tmp_path: Path,
                                                            path: str) -> None:
        src = tmp_path / "a/100/12"
        populate(src)
        before = tree(src)
        bad = path.format(tmp=tmp_path)
        for args in ((f"node1:{src}", f"node2:{bad}"), (f"node1:{bad}", f"node2:{src}")):
            result = cloud.run("tm/mv", *args, "12", "100")
            assert (result.rc, result.reason) == (1, f"{bad!r} is not the directory of VM 12 in datastore 100")
            assert result.errors
        assert tree(src) == before
        assert not (tmp_path / "a/101").exists()

    def test_a_location_without_host_is_refused(self, cloud: Cloud, tmp_path: Path) -> None:
        result = cloud.run("tm/mv", f"{tmp_path}/a/100/12", f"node2:{tmp_path}/b/100/12", "12", "100")
        assert (result.rc, result.reason) == (1, f"expected host:path, got '{tmp_path}/a/100/12'")


class TestLiveMigration:
    def test_premigrate_copies_and_postmigrate_removes(self, cloud: Cloud, ds_dir: Path,
                                                        node2_view: tuple[Path, dict[str, str]]) -> None:
        node2, env = node2_view
        sysdir = ds_dir / "100/12"
        populate(sysdir)
        before = tree(sysdir)
        args = ("node1", "node2", f"{ds_dir}//100/12", "12", "100")
        pre = cloud.run("tm/premigrate", *args, stdin=vm_b64(), env=env)
        assert pre.rc == 0, pre.stderr
        assert tree(node2 / "100/12") == before
        assert tree(sysdir) == before
        assert allocated(node2 / "100/12/checkpoint") < MIB
        for _ in range(2):  # the second time: a retry, the source is gone already
            post = cloud.run("tm/postmigrate", *args, stdin=vm_b64(), env=env)
            assert post.rc == 0, post.stderr
            assert not sysdir.exists()
            assert tree(node2 / "100/12") == before

    def test_a_shared_directory_is_neither_copied_nor_removed(self, cloud: Cloud, ds_dir: Path) -> None:
        sysdir = ds_dir / "100/12"
        populate(sysdir)
        before = tree(sysdir)
        args = ("node1", "node2", str(sysdir), "12", "100")
        pre = cloud.ok("tm/premigrate", *args, stdin=vm_b64())
        post = cloud.ok("tm/postmigrate", *args, stdin=vm_b64())
        assert tree(sysdir) == before
        assert f"INFO: tm/premigrate: {sysdir} is shared by node1 and node2, nothing to copy" in pre.stderr
        assert f"INFO: tm/postmigrate: {sysdir} is shared by node1 and node2, kept" in post.stderr

    def test_within_one_host_nothing_happens(self, cloud: Cloud, ds_dir: Path) -> None:
        sysdir = ds_dir / "100/12"
        populate(sysdir)
        before = tree(sysdir)
        for action in ("tm/premigrate", "tm/postmigrate", "tm/failmigrate"):
            cloud.ok(action, "node1", "node1", str(sysdir), "12", "100", stdin=vm_b64())
        assert tree(sysdir) == before

    def test_premigrate_of_a_missing_directory_fails(self, cloud: Cloud, ds_dir: Path,
                                                     node2_view: tuple[Path, dict[str, str]]) -> None:
        node2, env = node2_view
        sysdir = ds_dir / "100/12"
        result = cloud.run("tm/premigrate", "node1", "node2", str(sysdir), "12", "100", stdin=vm_b64(), env=env)
        assert (result.rc, result.reason) == (1, f"node1:{sysdir} does not exist, cannot copy it to node2")
        assert not node2.exists()

    def test_other_tm_drivers_get_the_same_call(self, cloud: Cloud, ds_dir: Path,
                                                other_tm: tuple[Path, Path]) -> None:
        """migrate_other: a VM with a ``shared`` disk gets ``tm/shared/premigrate <args> vitastor``
        with the same base64 VM on stdin, after the directory was copied."""
        remotes, record = other_tm
        sysdir = ds_dir / "100/12"
        populate(sysdir)
        stdin = vm_b64(other_tm="shared")
        args = ["node1", "node2", f"{ds_dir}//100/12", "12", "100"]
        for action in ("premigrate", "postmigrate"):
            result = run_tree(cloud, remotes, f"tm/{action}", *args, stdin=stdin)
            assert result.rc == 0, result.stderr
            assert Path(f"{record}-{action}.argv").read_text().splitlines() == [*args, "vitastor"]
            assert Path(f"{record}-{action}.stdin").read_bytes() == stdin
            assert f"INFO: tm/{action}: calling shared/{action}" in result.stderr

    def test_a_failing_other_tm_fails_the_hook(self, cloud: Cloud, ds_dir: Path,
                                               other_tm: tuple[Path, Path]) -> None:
        remotes, record = other_tm
        populate(ds_dir / "100/12")
        Path(f"{record}-premigrate.rc").write_text("3\n")
        result = run_tree(cloud, remotes, "tm/premigrate", "node1", "node2", str(ds_dir / "100/12"), "12",
                          "100", stdin=vm_b64(other_tm="shared"))
        assert (result.rc, result.reason) == (1, "tm/shared/premigrate failed (exit 3)")

    def test_a_missing_other_tm_is_reported(self, cloud: Cloud, ds_dir: Path, other_tm: tuple[Path, Path]) -> None:
        remotes, _ = other_tm
        populate(ds_dir / "100/12")
        result = run_tree(cloud, remotes, "tm/premigrate", "node1", "node2", str(ds_dir / "100/12"), "12",
                          "100", stdin=vm_b64(other_tm="ceph"))
        assert (result.rc, result.reason) == (
            1, f"VM disks use TM_MAD ceph, but there is no {remotes}/tm/ceph/premigrate")

    def test_called_by_another_tm_does_nothing(self, cloud: Cloud, ds_dir: Path,
                                               node2_view: tuple[Path, dict[str, str]],
                                               other_tm: tuple[Path, Path]) -> None:
        """A 6th argument: another TM's migrate_other calls us; it moved its own files."""
        node2, env = node2_view
        remotes, record = other_tm
        sysdir = ds_dir / "100/12"
        populate(sysdir)
        before = tree(sysdir)
        for action in ("premigrate", "postmigrate"):
            result = run_tree(cloud, remotes, f"tm/{action}", "node1", "node2", str(sysdir), "12", "100",
                              "shared", stdin=vm_b64(other_tm="shared"), env=env)
            assert result.rc == 0, result.stderr
        assert tree(sysdir) == before
        assert not node2.exists()
        assert not Path(f"{record}-premigrate.argv").exists()

    def test_failmigrate_succeeds(self, cloud: Cloud, ds_dir: Path) -> None:
        """The VM stays on the source, which still has everything."""
        sysdir = ds_dir / "100/12"
        populate(sysdir)
        before = tree(sysdir)
        cloud.ok("tm/failmigrate", "node1", "node2", str(sysdir), "12", "100", stdin=vm_b64())
        assert tree(sysdir) == before

    @pytest.mark.parametrize("action", ["tm/premigrate", "tm/postmigrate", "tm/failmigrate"])
    def test_a_bad_sysdir_is_refused(self, cloud: Cloud, ds_dir: Path, action: str) -> None:
        bad = f"{ds_dir}/100/12/../13"
        result = cloud.run(action, "node1", "node2", bad, "12", "100", stdin=vm_b64())
        assert (result.rc, result.reason) == (1, f"{bad!r} is not the directory of VM 12 in datastore 100")

    def test_stdin_that_is_not_a_vm_changes_nothing(self, cloud: Cloud, ds_dir: Path,
                                                    node2_view: tuple[Path, dict[str, str]]) -> None:
        node2, env = node2_view
        populate(ds_dir / "100/12")
        result = cloud.run("tm/premigrate", "node1", "node2", str(ds_dir / "100/12"), "12", "100",
                           stdin=b"not base64!", env=env)
        assert result.rc == 1
        assert result.reason.startswith("VM XML on stdin is not base64: ")
        assert not node2.exists()
