"""vmm/kvm/save.vitastor and restore.vitastor through their dist/remotes links, run as the stock
host-side kvm/save and kvm/restore run them: on the host, with the plain VMM XML on stdin."""

from __future__ import annotations

import os
import random
from pathlib import Path

from onevita.vitastor.catalog import Catalog
from onevita.vitastor.jobs import open_catalog
from tests.cloud import SYSTEM_DS, Cloud
from tests.harness import documents as docs

VM_ID = 12
MIB = 1 << 20
DEPLOY_ID = f"one-{VM_ID}"


def catalog(cloud: Cloud) -> Catalog:
    return open_catalog(str(cloud.cluster.config_path))


def action_data(cloud: Cloud, vm_id: int = VM_ID) -> bytes:
    """The plain VMM_DRIVER_ACTION_DATA: the VM and the system datastore."""
    vm = docs.vm_xml(vm_id, disks=[])
    ds = docs.datastore_xml(SYSTEM_DS, name="vitastor-system", ds_type=1, ds_mad="-", template=cloud.ds_template())
    strip = [part.split("?>", 1)[1] if part.startswith("<?xml") else part for part in (vm, ds)]
    return ("<VMM_DRIVER_ACTION_DATA><HOST>node1</HOST><MIGR_HOST/><DEPLOY_ID>" + DEPLOY_ID
            + "</DEPLOY_ID><LOCAL_DEPLOYMENT_FILE/><REMOTE_DEPLOYMENT_FILE/><DATASTORE_LOCATION/>"
            + "".join(strip) + "</VMM_DRIVER_ACTION_DATA>").encode()


def checkpoint_file(path: Path, size: int = 8 * MIB) -> bytes:
    """A sparse file with random parts (the last one unaligned); its full contents."""
    rng = random.Random(7)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in ((0, 12345), (3 * MIB + 100, 70000), (size - 5000, 5000)):
            f.seek(offset)
            f.write(rng.randbytes(length))
    return path.read_bytes()


def save(cloud: Cloud, path: Path, vm_id: str = str(VM_ID)) -> None:
    cloud.ok("vmm/save.vitastor", DEPLOY_ID, str(path), "node1", vm_id, "node1", stdin=action_data(cloud))


def restore(cloud: Cloud, path: Path) -> None:
    cloud.ok("vmm/restore.vitastor", str(path), "node1", DEPLOY_ID, str(VM_ID), "node1", stdin=action_data(cloud))


def sysdir(tmp_path: Path) -> Path:
    path = tmp_path / "datastores" / str(SYSTEM_DS) / str(VM_ID)
    path.mkdir(parents=True)
    return path


def test_round_trip(cloud: Cloud, tmp_path: Path) -> None:
    path = sysdir(tmp_path) / "checkpoint"
    data = checkpoint_file(path, 8 * MIB - 1000)
    save(cloud, path)
    assert not path.exists()
    name = f"{cloud.prefix}-sys-{VM_ID}-checkpoint"
    inode = catalog(cloud).get(name)
    assert inode.size == 8 * MIB
    assert inode.meta == {"onevita_checkpoint_size": len(data)}
    assert catalog(cloud).find(name + ".importing") is None
    if cloud.cluster.data_dir is not None:
        assert 0 < cloud.cluster.allocated(name) < MIB
    restore(cloud, path)
    assert path.read_bytes() == data
    assert os.stat(path).st_blocks * 512 < 2 * MIB  # written back sparse
    assert catalog(cloud).find(name) is not None  # kept for tm/delete or the next save
    assert not path.with_name("checkpoint.restoring").exists()


def test_save_replaces_an_older_checkpoint(cloud: Cloud, tmp_path: Path) -> None:
    path = sysdir(tmp_path) / "checkpoint"
    checkpoint_file(path, 16 * MIB)
    save(cloud, path)
    path.write_bytes(b"new checkpoint" * 1000)
    save(cloud, path)
    name = f"{cloud.prefix}-sys-{VM_ID}-checkpoint"
    names = [i.name for i in catalog(cloud).inodes.values() if i.name.startswith(name)]
    assert names == [name]
    assert catalog(cloud).get(name).size == 16 * 1024
    restore(cloud, path)
    assert path.read_bytes() == b"new checkpoint" * 1000


def test_delete_of_the_vm_dir_removes_the_checkpoint(cloud: Cloud, tmp_path: Path) -> None:
    directory = sysdir(tmp_path)
    checkpoint_file(directory / "checkpoint", MIB)
    save(cloud, directory / "checkpoint")
    cloud.add_vm(VM_ID, [])
    cloud.ok("tm/delete", f"node1:{directory}", str(VM_ID), str(SYSTEM_DS))
    assert catalog(cloud).find(f"{cloud.prefix}-sys-{VM_ID}-checkpoint") is None
    assert not directory.exists()


def test_bad_arguments(cloud: Cloud, tmp_path: Path) -> None:
    path = sysdir(tmp_path) / "checkpoint"
    checkpoint_file(path, MIB)
    result = cloud.run("vmm/save.vitastor", DEPLOY_ID, str(path), "node1", "13", "node1", stdin=action_data(cloud))
    assert (result.rc, result.reason) == (1, f"VM document is for VM {VM_ID}, not 13")
    assert result.errors
    other = path.with_name("disk.0")
    result = cloud.run("vmm/save.vitastor", DEPLOY_ID, str(other), "node1", str(VM_ID), "node1",
                       stdin=action_data(cloud))
    assert (result.rc, result.reason) == (
        1, f"unexpected checkpoint file {str(other)!r}: expected <system datastore dir>/checkpoint")
    result = cloud.run("vmm/restore.vitastor", str(path), "node1", DEPLOY_ID, "x", "node1", stdin=action_data(cloud))
    assert (result.rc, result.reason) == (1, "VMID must be an integer, got 'x'")
    assert path.exists()
    assert catalog(cloud).find(f"{cloud.prefix}-sys-{VM_ID}-checkpoint") is None
    result = cloud.run("vmm/restore.vitastor", str(path), "node1", DEPLOY_ID, str(VM_ID), "node1",
                       stdin=action_data(cloud))
    assert (result.rc, result.reason) == (1, f"Vitastor image {cloud.prefix}-sys-{VM_ID}-checkpoint does not exist")
