"""tm/clone, ln, mvds, delete, resize through their dist/remotes links, in both job modes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import orjson
import pytest

from tests.cloud import SYSTEM_DS, Cloud
from tests.harness import documents as docs
from tests.tm.conftest import (
    MIB,
    catalog,
    checkpoint,
    disk_path,
    etcd_value,
    interleave,
    layers,
    make_image,
    parent_name,
)

DISK0 = "node1:/var/lib/one//datastores/100/12/disk.0"
Hosts = Callable[[], list[str]]


class TestClone:
    def test_clone_creates_writable_child_of_the_image(self, cloud: Cloud) -> None:
        """The clone is <SOURCE>-<vm>-<disk>, a child of SOURCE with the disk's SIZE, reading its data."""
        src = f"{cloud.prefix}-5"
        make_image(cloud, src, 64, b"A" * 8192)
        cloud.add_vm(12, [docs.image_disk(0, 5, source=src, clone=True, size_mb=128)])
        cloud.ok("tm/clone", f"one-fe:{src}", DISK0, "12", "101")
        cat = catalog(cloud)
        child, base = cat.get(f"{src}-12-0"), cat.get(src)
        assert (child.parent_id, child.size, child.readonly) == (base.id, 128 * MIB, False)
        assert cloud.cluster.read(f"{src}-12-0", 0, 8192) == b"A" * 8192
        raw = etcd_value(cloud, f"/config/inode/{child.pool_id}/{child.id}")
        assert raw == ('{"name": "%s-12-0", "parent_id": %d, "size": %d}' % (src, base.id, 128 * MIB)).encode()
        assert orjson.loads(etcd_value(cloud, f"/index/image/{src}-12-0")) == {
            "id": child.id, "pool_id": child.pool_id}

    def test_clone_retry_is_success_and_changes_nothing(self, cloud: Cloud) -> None:
        """A second identical clone (oned retrying) succeeds without creating anything."""
        src = f"{cloud.prefix}-5"
        make_image(cloud, src)
        cloud.add_vm(12, [docs.image_disk(0, 5, source=src, clone=True, size_mb=64)])
        cloud.ok("tm/clone", f"one-fe:{src}", DISK0, "12", "101")
        before = cloud.own_inodes()
        cloud.ok("tm/clone", f"one-fe:{src}", DISK0, "12", "101")
        assert cloud.own_inodes() == before

    def test_clone_onto_a_foreign_image_fails(self, cloud: Cloud) -> None:
        """An existing image of that name that is not a clone of SOURCE is never taken over."""
        src = f"{cloud.prefix}-5"
        make_image(cloud, src)
        make_image(cloud, f"{src}-12-0")
        cloud.add_vm(12, [docs.image_disk(0, 5, source=src, clone=True, size_mb=64)])
        result = cloud.run("tm/clone", f"one-fe:{src}", DISK0, "12", "101")
        assert result.rc == 1
        assert result.reason == f"Vitastor image {src}-12-0 already exists and is not a clone of {src}"
        assert result.errors

    def test_clone_of_missing_image_fails_and_creates_nothing(self, cloud: Cloud) -> None:
        src = f"{cloud.prefix}-5"
        cloud.add_vm(12, [docs.image_disk(0, 5, source=src, clone=True, size_mb=64)])
        result = cloud.run("tm/clone", f"one-fe:{src}", DISK0, "12", "101")
        assert (result.rc, result.reason) == (1, f"Vitastor image {src} does not exist")
        assert cloud.own_inodes() == {}

    @pytest.mark.parametrize("source", ["one-5;touch /tmp/x", "one-5 $(id)", "-rf", "../etc"])
    def test_clone_refuses_names_with_shell_metacharacters(self, cloud: Cloud, source: str) -> None:
        cloud.add_vm(12, [docs.image_disk(0, 5, source=source, clone=True, size_mb=64)])
        result = cloud.run("tm/clone", f"one-fe:{source}", DISK0, "12", "101")
        assert result.rc == 1
        assert result.reason == f"invalid Vitastor image name {source!r}"


def clone_disk(cloud: Cloud, vm_id: int = 12, data: bytes = b"") -> str:
    """Image ``<prefix>-5`` (made with ``data`` unless it exists) and VM ``vm_id`` on node1 whose
    disk 0 is its clone, made by tm/clone; the clone's name."""
    src = f"{cloud.prefix}-5"
    if catalog(cloud).find(src) is None:
        make_image(cloud, src, 64, data)
    cloud.add_vm(vm_id, [docs.image_disk(0, 5, source=src, clone=True, size_mb=64)])
    cloud.ok("tm/clone", f"one-fe:{src}", disk_path(vm_id), str(vm_id), "101")
    return f"{src}-{vm_id}-0"


def set_system_prefix(cloud: Cloud, prefix: str) -> None:
    """Give the system datastore (100) its own IMAGE_PREFIX."""
    cloud.oned.datastores[SYSTEM_DS] = docs.datastore_xml(
        SYSTEM_DS, name="vitastor-system", ds_type=1, ds_mad="-", template=cloud.ds_template(IMAGE_PREFIX=prefix))


class TestLn:
    def test_ln_of_a_persistent_image_uses_it_in_place(self, cloud: Cloud) -> None:
        src = f"{cloud.prefix}-7"
        make_image(cloud, src, 64, b"P" * 4096)
        cloud.add_vm(12, [docs.image_disk(1, 7, source=src, clone=False, persistent=True, size_mb=64)])
        before = cloud.own_inodes()
        result = cloud.ok("tm/ln", f"one-fe:{src}", disk_path(disk_id=1), "12", "101")
        assert cloud.own_inodes() == before
        assert (result.errors, result.reason) == ([], "")

    def test_ln_of_a_missing_image_fails(self, cloud: Cloud) -> None:
        """Fails here, not later inside QEMU."""
        src = f"{cloud.prefix}-7"
        cloud.add_vm(12, [docs.image_disk(1, 7, source=src, clone=False, persistent=True, size_mb=64)])
        result = cloud.run("tm/ln", f"one-fe:{src}", disk_path(disk_id=1), "12", "101")
        assert (result.rc, result.reason) == (1, f"Vitastor image {src} does not exist")
        assert result.errors == [f"ERROR: tm/ln: Vitastor image {src} does not exist"]
        assert cloud.own_inodes() == {}


class TestMvds:
    def test_mvds_keeps_the_image_in_place(self, cloud: Cloud) -> None:
        """The VM wrote into the persistent image itself: nothing to move, nothing changes."""
        src = f"{cloud.prefix}-7"
        make_image(cloud, src, 64, b"P" * 4096)
        cloud.add_vm(12, [docs.image_disk(1, 7, source=src, clone=False, persistent=True, size_mb=64)])
        before = cloud.own_inodes()
        result = cloud.ok("tm/mvds", disk_path(disk_id=1), src, "12", "101")
        assert f"INFO: tm/mvds: {src} kept in place" in result.stderr.splitlines()
        assert cloud.own_inodes() == before
        assert cloud.cluster.read(src, 0, 4096) == b"P" * 4096

    def test_mvds_refuses_a_bad_source(self, cloud: Cloud) -> None:
        result = cloud.run("tm/mvds", disk_path(disk_id=1), "one-7;reboot", "12", "101")
        assert (result.rc, result.reason) == (1, "invalid Vitastor image name 'one-7;reboot'")


class TestDeleteDisk:
    def test_delete_clone_removes_it_and_its_snapshot_layers(self, cloud: Cloud, ssh_hosts: Hosts) -> None:
        """<SOURCE>-<vm>-<disk> and every NAME@N go (the bash driver left the @N layers behind);
        the image and another VM's clone of it keep their data. The job runs on the VM's host."""
        name = clone_disk(cloud, data=b"I" * 8192)
        cloud.ok("tm/snap_create", disk_path(), "0", "12", "101")
        cloud.cluster.write(name, 0, b"0" * 4096)
        cloud.ok("tm/snap_create", disk_path(), "1", "12", "101")
        other = clone_disk(cloud, 13)
        assert set(layers(cloud, name)) == {name, f"{name}@0", f"{name}@1"}
        start = len(ssh_hosts())
        result = cloud.ok("tm/delete", disk_path(), "12", "101")
        assert layers(cloud, name) == {}
        assert set(layers(cloud, other)) == {other}
        assert cloud.cluster.read(f"{cloud.prefix}-5", 0, 8192) == b"I" * 8192
        assert cloud.cluster.read(other, 0, 8192) == b"I" * 8192
        assert ssh_hosts()[start:] == (["node1"] if cloud.mode == "ssh" else [])
        assert result.errors == []

    def test_vitastor_cli_progress_reaches_oned_log_as_a_few_lines(self, cloud: Cloud) -> None:
        """vitastor-cli rm writes a progress line per object (hundreds for 16 MiB of data); oned.log
        gets at most one INFO line per quarter of the job for each layer removed."""
        name = clone_disk(cloud)
        cloud.cluster.write(name, 0, bytes(range(256)) * (16 * MIB // 256))
        cloud.ok("tm/snap_create", disk_path(), "0", "12", "101")
        result = cloud.ok("tm/delete", disk_path(), "12", "101")
        progress = [line for line in result.stderr.splitlines() if "vitastor-cli rm" in line]
        assert progress and all(line.startswith("INFO: ") for line in progress)
        assert len(progress) <= 2 * 4  # two layers, four quarters each
        assert any(f"vitastor-cli rm {name}@0: 100% (Removed " in line for line in progress)
        assert layers(cloud, name) == {}

    def test_delete_clone_after_a_revert_removes_the_whole_tree(self, cloud: Cloud) -> None:
        """After snapshots 0, 1 and a revert to 0, NAME and NAME@1 are both children of NAME@0:
        a non-linear set, removed leaves first."""
        name = clone_disk(cloud, data=b"I" * 4096)
        cloud.ok("tm/snap_create", disk_path(), "0", "12", "101")
        cloud.ok("tm/snap_create", disk_path(), "1", "12", "101")
        cloud.ok("tm/snap_revert", disk_path(), "0", "12", "101")
        cat = catalog(cloud)
        assert (parent_name(cat, name), parent_name(cat, f"{name}@1")) == (f"{name}@0", f"{name}@0")
        cloud.ok("tm/delete", disk_path(), "12", "101")
        assert layers(cloud, name) == {}
        assert cloud.cluster.read(f"{cloud.prefix}-5", 0, 4096) == b"I" * 4096

    def test_delete_clone_with_a_layer_left_by_an_interrupted_revert(self, cloud: Cloud) -> None:
        """NAME.revert (the old head a revert renames aside) goes with the disk too."""
        name = clone_disk(cloud)
        cloud.ok("tm/snap_create", disk_path(), "0", "12", "101")
        cat = catalog(cloud)
        cat.create(f"{name}.revert", 64 * MIB, cat.pool(cloud.pool), parent=cat.get(f"{name}@0"))
        cloud.ok("tm/delete", disk_path(), "12", "101")
        assert layers(cloud, name) == {}

    @pytest.mark.etcd_only
    def test_delete_clone_removes_its_backup_checkpoints_leaves_first(self, cloud: Cloud) -> None:
        """Backup checkpoints (NAME@backup-N) go with the disk, here in a tree: INTERLEAVED's
        snapshots and checkpoints, then a revert to 0, which leaves the checkpoints on a side
        branch. Each layer is a leaf when it is removed, so no data is merged anywhere; the
        image and another VM's clone of it keep their bytes."""
        name = clone_disk(cloud, data=b"I" * 8192)
        other = clone_disk(cloud, 13)
        interleave(cloud, name, lambda snap_id: cloud.ok("tm/snap_create", disk_path(), str(snap_id), "12", "101"))
        cloud.ok("tm/snap_revert", disk_path(), "0", "12", "101")
        assert parent_name(catalog(cloud), f"{name}@backup-3") == f"{name}@0"
        result = cloud.ok("tm/delete", disk_path(), "12", "101")
        assert layers(cloud, name) == {}
        removed = [m[1] for m in (re.fullmatch(r"INFO: [^ ]+: removed (.+)", line)
                                  for line in result.stderr.splitlines()) if m]
        assert removed == [name, f"{name}@backup-4", f"{name}@1", f"{name}@backup-3", f"{name}@0"]
        assert set(layers(cloud, other)) == {other}
        assert cloud.cluster.read(f"{cloud.prefix}-5", 0, 8192) == b"I" * 8192
        assert cloud.cluster.read(other, 0, 8192) == b"I" * 8192

    def test_delete_volatile_disk(self, cloud: Cloud) -> None:
        """A volatile disk is <system datastore's prefix>-sys-<vm>-<disk>; its snapshot layers and
        backup checkpoints go too. The image datastore's prefix plays no part."""
        sys_prefix = f"{cloud.prefix}s"
        set_system_prefix(cloud, sys_prefix)
        name = f"{sys_prefix}-sys-12-2"
        make_image(cloud, name, 16, b"V" * 4096)
        catalog(cloud).snapshot(name, "0")
        checkpoint(cloud, name, 3)
        for kept in (f"{sys_prefix}-sys-12-20", f"{cloud.prefix}-sys-12-2"):
            make_image(cloud, kept)
        cloud.add_vm(12, [docs.volatile_disk(2, size_mb=16)])
        cloud.ok("tm/delete", disk_path(disk_id=2), "12", "100")
        assert layers(cloud, name) == {}
        assert set(layers(cloud, f"{sys_prefix}-sys-12-20")) == {f"{sys_prefix}-sys-12-20"}
        assert set(layers(cloud, f"{cloud.prefix}-sys-12-2")) == {f"{cloud.prefix}-sys-12-2"}

    def test_delete_keeps_a_persistent_disk(self, cloud: Cloud) -> None:
        """CLONE=NO: the disk is the image itself, with its snapshots and backup checkpoints."""
        src = f"{cloud.prefix}-7"
        make_image(cloud, src, 64, b"P" * 4096)
        catalog(cloud).snapshot(src, "0")
        checkpoint(cloud, src, 3)
        cloud.add_vm(12, [docs.image_disk(1, 7, source=src, clone=False, persistent=True, size_mb=64)])
        before = cloud.own_inodes()
        result = cloud.ok("tm/delete", disk_path(disk_id=1), "12", "101")
        assert cloud.own_inodes() == before
        assert f"INFO: tm/delete: {src} is persistent, kept" in result.stderr.splitlines()
        assert cloud.cluster.read(src, 0, 4096) == b"P" * 4096

    def test_delete_of_a_missing_disk_is_success(self, cloud: Cloud) -> None:
        """Already gone (oned retrying, or a clone that never got made): success."""
        src = f"{cloud.prefix}-5"
        cloud.add_vm(12, [docs.image_disk(0, 5, source=src, clone=True, size_mb=64)])
        result = cloud.ok("tm/delete", disk_path(), "12", "101")
        assert f"{src}-12-0 does not exist, nothing to delete" in result.stderr
        assert result.errors == []

    def test_delete_retry_is_success(self, cloud: Cloud) -> None:
        name = clone_disk(cloud)
        cloud.ok("tm/delete", disk_path(), "12", "101")
        cloud.ok("tm/delete", disk_path(), "12", "101")
        assert layers(cloud, name) == {}

    @pytest.mark.parametrize(("vm_id", "bridge"), [(12, "bridge1"), (13, "bridge2")])
    def test_delete_of_an_undeployed_vm_runs_on_a_bridge(self, cloud: Cloud, ssh_hosts: Hosts,
                                                         vm_id: int, bridge: str) -> None:
        """After stop/undeploy oned passes the front-end, not the VM's last host (node1): the job
        goes to BRIDGE_LIST host <vm> % 2, or stays in-process with VITASTOR_ON_FRONTEND."""
        name = clone_disk(cloud, vm_id)
        start = len(ssh_hosts())
        cloud.ok("tm/delete", disk_path(vm_id, host="one-fe"), str(vm_id), "101")
        assert layers(cloud, name) == {}
        assert ssh_hosts()[start:] == ([bridge] if cloud.mode == "ssh" else [])

    @pytest.mark.parametrize("state", [docs.HOST_OFFLINE, docs.HOST_ERROR, docs.HOST_DISABLED])
    def test_unavailable_bridges_are_skipped(self, cloud: Cloud, ssh_hosts: Hosts, state: int) -> None:
        """Like get_destination_host: hosts oned reports offline, in error or disabled are left
        out of BRIDGE_LIST before picking <vm> % N (VM 12 would pick bridge1)."""
        cloud.oned.hosts[0] = docs.host_xml(0, "bridge1", state)
        cloud.oned.hosts[1] = docs.host_xml(1, "bridge2")
        name = clone_disk(cloud, 12)
        start = len(ssh_hosts())
        cloud.ok("tm/delete", disk_path(12, host="one-fe"), "12", "101")
        assert layers(cloud, name) == {}
        assert ssh_hosts()[start:] == (["bridge2"] if cloud.mode == "ssh" else [])

    def test_all_bridges_unavailable(self, cloud: Cloud) -> None:
        cloud.oned.hosts[0] = docs.host_xml(0, "bridge1", docs.HOST_OFFLINE)
        cloud.oned.hosts[1] = docs.host_xml(1, "bridge2", docs.HOST_DISABLED)
        name = clone_disk(cloud, 12)
        result = cloud.run("tm/delete", disk_path(12, host="one-fe"), "12", "101")
        if cloud.mode == "ssh":
            assert (result.rc, result.reason) == (1, "All hosts from 'BRIDGE_LIST' are offline, error or disabled")
            assert set(layers(cloud, name)) == {name}
        else:
            assert result.rc == 0

    def test_delete_of_an_undeployed_vm_without_bridge_list(self, cloud: Cloud) -> None:
        """No BRIDGE_LIST: over ssh there is no host that must reach the cluster, and the
        reason says what is missing; the front-end mode does not need one."""
        cloud.add_datastores(BRIDGE_LIST=None)
        name = clone_disk(cloud)
        result = cloud.run("tm/delete", disk_path(host="one-fe"), "12", "101")
        if cloud.mode == "ssh":
            assert (result.rc, result.reason) == (1, "Datastore template missing 'BRIDGE_LIST' attribute.")
            assert set(layers(cloud, name)) == {name}
        else:
            assert result.rc == 0
            assert layers(cloud, name) == {}


class TestDeleteVmDir:
    @staticmethod
    def vm_dir(tmp_path: Path, vm_id: int = 12) -> Path:
        """A VM directory on the "host" (this machine, reached over ssh), with its files."""
        path = tmp_path / "datastores" / "100" / str(vm_id)
        path.mkdir(parents=True)
        (path / "disk.3").write_bytes(b"context iso")
        (path / "deployment.0").write_text("<domain/>")
        return path

    def test_delete_removes_checkpoint_and_directory(self, cloud: Cloud, tmp_path: Path,
                                                     ssh_hosts: Hosts) -> None:
        """<system prefix>-sys-<vm>-checkpoint goes, then the directory on the host (always over
        ssh: it is on the host's disk). Other VMs' checkpoints stay."""
        path = self.vm_dir(tmp_path)
        sys_prefix = f"{cloud.prefix}s"
        set_system_prefix(cloud, sys_prefix)
        make_image(cloud, f"{sys_prefix}-sys-12-checkpoint", 8, b"M" * 4096)
        make_image(cloud, f"{sys_prefix}-sys-120-checkpoint", 8)
        cloud.add_vm(12, [])
        start = len(ssh_hosts())
        result = cloud.ok("tm/delete", f"node1:{tmp_path}//datastores/100/12", "12", "100")
        cat = catalog(cloud)
        assert cat.find(f"{sys_prefix}-sys-12-checkpoint") is None
        assert cat.find(f"{sys_prefix}-sys-120-checkpoint") is not None
        assert not path.exists() and path.parent.is_dir()
        assert ssh_hosts()[start:] == (["node1", "node1"] if cloud.mode == "ssh" else ["node1"])
        assert result.errors == []

    def test_delete_of_an_undeployed_vm_dir(self, cloud: Cloud, tmp_path: Path, ssh_hosts: Hosts) -> None:
        """After undeploy the directory is on the front-end: the checkpoint is removed from a
        bridge (the front-end need not reach the cluster), the directory on the front-end."""
        path = self.vm_dir(tmp_path)
        make_image(cloud, f"{cloud.prefix}-sys-12-checkpoint", 8)
        cloud.add_vm(12, [], lcm_state=0, state=9)
        start = len(ssh_hosts())
        cloud.ok("tm/delete", f"one-fe:{tmp_path}//datastores/100/12", "12", "100")
        assert catalog(cloud).find(f"{cloud.prefix}-sys-12-checkpoint") is None
        assert not path.exists()
        assert ssh_hosts()[start:] == (["bridge1", "one-fe"] if cloud.mode == "ssh" else ["one-fe"])

    def test_delete_of_a_missing_vm_dir_is_success(self, cloud: Cloud, tmp_path: Path) -> None:
        """No checkpoint (the VM was never stopped) and no directory (retry): success."""
        cloud.add_vm(12, [])
        result = cloud.ok("tm/delete", f"node1:{tmp_path}//datastores/100/12", "12", "100")
        assert result.errors == []

    def test_delete_refuses_a_path_that_is_not_the_vm_dir(self, cloud: Cloud, tmp_path: Path) -> None:
        """Only <DATASTORE_LOCATION>/<sysds>/<vm> is ever removed."""
        path = self.vm_dir(tmp_path, vm_id=13)
        cloud.add_vm(12, [])
        result = cloud.run("tm/delete", f"node1:{path}", "12", "100")
        assert (result.rc, result.reason) == (
            1, f"'{path}' is not the directory of VM 12 in datastore 100")
        assert path.is_dir()


class TestResize:
    @pytest.mark.parametrize("kind", ["clone", "persistent", "volatile"])
    def test_resize_grows_the_disk_image(self, cloud: Cloud, kind: str) -> None:
        """The image named as the bash driver names it grows in etcd; its data stays."""
        name, disk, ds = {
            "clone": (f"{cloud.prefix}-5-12-0", docs.image_disk(
                0, 5, source=f"{cloud.prefix}-5", clone=True, size_mb=64), "101"),
            "persistent": (f"{cloud.prefix}-5", docs.image_disk(
                0, 5, source=f"{cloud.prefix}-5", clone=False, persistent=True, size_mb=64), "101"),
            "volatile": (f"{cloud.prefix}-sys-12-0", docs.volatile_disk(0, size_mb=64), "100"),
        }[kind]
        make_image(cloud, f"{cloud.prefix}-5", 64)
        if kind == "clone":
            cat = catalog(cloud)
            cat.create(name, 64 * MIB, cat.pool(cloud.pool), parent=cat.get(f"{cloud.prefix}-5"))
        elif kind == "volatile":
            make_image(cloud, name, 64)
        cloud.cluster.write(name, 0, b"R" * 4096)
        cloud.add_vm(12, [disk])
        result = cloud.ok("tm/resize", disk_path(), "20480", "12", ds)
        assert catalog(cloud).get(name).size == 20480 * MIB
        assert cloud.cluster.read(name, 0, 4096) == b"R" * 4096
        assert f"resized {name} from 64 to 20480 MiB" in result.stderr

    def test_resize_retry_changes_nothing(self, cloud: Cloud) -> None:
        name = clone_disk(cloud)
        cloud.ok("tm/resize", disk_path(), "128", "12", "101")
        before = catalog(cloud).get(name)
        cloud.ok("tm/resize", disk_path(), "128", "12", "101")
        assert catalog(cloud).get(name) == before  # mod_revision included: no etcd write

    def test_shrink_is_refused_and_changes_nothing(self, cloud: Cloud) -> None:
        """vitastor-cli's shrink would delete every object of the image (vitastor-internals §0.1)."""
        name = clone_disk(cloud)
        cloud.cluster.write(name, 32 * MIB, b"S" * 4096)
        before = catalog(cloud).get(name)
        result = cloud.run("tm/resize", disk_path(), "32", "12", "101")
        reason = (f"refusing to shrink {name} from {64 * MIB} to {32 * MIB} bytes: "
                  "Vitastor's shrink deletes all data of the image")
        assert (result.rc, result.reason) == (1, reason)
        assert result.errors == [f"ERROR: tm/resize: {reason}"]
        assert catalog(cloud).get(name) == before
        assert cloud.cluster.read(name, 32 * MIB, 4096) == b"S" * 4096

    def test_resize_of_a_running_vm_grows_the_image_too(self, cloud: Cloud) -> None:
        """LCM 62 (DISK_RESIZE, running): QEMU's blockresize only follows the etcd size, so it
        must grow first (Ceph skips this state; its rbd resize is done by QEMU)."""
        name = clone_disk(cloud)
        cloud.add_vm(12, [docs.image_disk(0, 5, source=f"{cloud.prefix}-5", clone=True, size_mb=64)],
                     lcm_state=62, deploy_id="one-12")
        cloud.ok("tm/resize", disk_path(), "100", "12", "101")
        assert catalog(cloud).get(name).size == 100 * MIB

    def test_resize_of_a_missing_disk_fails(self, cloud: Cloud) -> None:
        cloud.add_vm(12, [docs.image_disk(0, 5, source=f"{cloud.prefix}-5", clone=True, size_mb=64)])
        result = cloud.run("tm/resize", disk_path(), "100", "12", "101")
        assert (result.rc, result.reason) == (1, f"Vitastor image {cloud.prefix}-5-12-0 does not exist")
