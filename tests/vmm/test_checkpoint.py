"""vmm/kvm/save.vitastor and restore.vitastor through their dist/remotes links: as the kvm
driver's local actions on the front-end (base64 action data; they run the host's stock save and
restore, stand-ins of our own here, and move the file through Vitastor), and as the hook the
stock host-side scripts would call (plain XML on stdin, on the host)."""

from __future__ import annotations

import base64
import os
import random
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from onevita.vitastor.catalog import Catalog
from onevita.vitastor.jobs import open_catalog
from tests.cloud import SYSTEM_DS, Cloud
from tests.harness import documents as docs
from tests.harness.user import ActionUser

VM_ID = 12
MIB = 1 << 20
DEPLOY_ID = "267e65ab-0e48-4d2a-bf00-36ad450a3e29"  # a kvm deploy id is the domain's UUID


def catalog(cloud: Cloud) -> Catalog:
    return open_catalog(str(cloud.cluster.config_path))


def action_data(cloud: Cloud, vm_id: int = VM_ID) -> bytes:
    """The plain VMM_DRIVER_ACTION_DATA of a save or restore: the VM and the system datastore."""
    vm = docs.vm_xml(vm_id, disks=[], deploy_id=DEPLOY_ID)
    ds = docs.datastore_xml(SYSTEM_DS, name="vitastor-system", ds_type=1, ds_mad="-", template=cloud.ds_template())
    checkpoint = f"/var/lib/one//datastores/{SYSTEM_DS}/{vm_id}/checkpoint"
    return docs.vmm_action_data(vm, ds, host="node1", deploy_id=DEPLOY_ID, checkpoint_file=checkpoint).encode()


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
    names = [i.name for i in cloud.own_inodes().values() if i.name.startswith(name)]
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


# the kvm driver's local actions (-l save=save.vitastor,restore=restore.vitastor) -------------------
# Stand-ins for the host's stock vmm/kvm/save and restore, in OpenNebula's argv. save does what
# its "virsh save DEPLOY_ID FILE" does: write the domain's memory (kvm/memory) to FILE; restore
# what "virsh restore FILE" does: read it (kept as kvm/restored-by-<host>), and removes FILE as
# the stock script does. A file kvm/<action>.fail makes it fail as the stock scripts do.
STOCK = """#!/bin/sh
here=$(dirname "$0")
printf '%s\\n' "$0" "$@" "stdin:$(cat | wc -c)" > "$here/{action}.argv"
if [ -e "$here/{action}.fail" ]; then
    echo "ERROR: {action}: Command \\"virsh {action}\\" failed: error: {action} failed" >&2
    echo "Could not {action} $1" >&2
    exit 1
fi
{body}
"""
BODIES = {"save": 'cp "$here/memory" "$2"',
          "restore": 'cp "$1" "$here/restored-by-$2" && rm "$1"'}


@pytest.fixture()
def stock(world: Path, action_user: ActionUser) -> Iterator[Path]:
    """The hosts' ``vmm/kvm`` with stand-ins for the stock save and restore."""
    kvm = world / "host-remotes" / "vmm" / "kvm"
    kvm.mkdir(parents=True, exist_ok=True)
    made = []
    for action, body in BODIES.items():
        script = kvm / action
        script.write_text(STOCK.format(action=action, body=body))
        script.chmod(0o755)
        made.append(script)
    action_user.give(kvm)
    yield kvm
    for path in made:
        path.unlink()
    for leftover in kvm.glob("*"):
        if leftover.name.startswith(("memory", "restored-by-", "save.", "restore.")):
            leftover.unlink()


def local(data: bytes) -> bytes:
    return base64.b64encode(data)


def checkpoint_path(tmp_path: Path, user: ActionUser) -> str:
    """The VM's checkpoint file, named as oned names it (DATASTORE_LOCATION's "//" kept, which
    pathlib would drop)."""
    sysdir(tmp_path)
    user.give(tmp_path / "datastores")
    return f"{tmp_path}//datastores/{SYSTEM_DS}/{VM_ID}/checkpoint"


def test_stop_and_resume_on_another_host(cloud: Cloud, stock: Path, tmp_path: Path,
                                         action_user: ActionUser) -> None:
    """save on node1 leaves no file there and the memory in Vitastor; restore on node2 hands
    virsh restore the same bytes, and the checkpoint image goes."""
    memory = checkpoint_file(stock / "memory", 8 * MIB - 1000)
    path = checkpoint_path(tmp_path, action_user)
    result = cloud.ok("vmm/save.vitastor", DEPLOY_ID, path, "node1", str(VM_ID), "node1",
                      stdin=local(action_data(cloud)))
    assert (stock / "save.argv").read_text().splitlines() == [
        str(stock / "save"), DEPLOY_ID, path, "node1", str(VM_ID), "node1", "stdin:0"]
    assert not os.path.exists(path)
    name = f"{cloud.prefix}-sys-{VM_ID}-checkpoint"
    assert catalog(cloud).get(name).meta == {"onevita_checkpoint_size": len(memory)}
    assert f"INFO: host-job/checkpoint_save: saved checkpoint of VM {VM_ID} (" in result.stderr
    shutil.rmtree(os.path.dirname(path))  # another host: nothing of the VM directory there
    cloud.ok("vmm/restore.vitastor", path, "node2", DEPLOY_ID, str(VM_ID), "node2",
             stdin=local(action_data(cloud)))
    assert (stock / "restore.argv").read_text().splitlines() == [
        str(stock / "restore"), path, "node2", DEPLOY_ID, str(VM_ID), "node2", "stdin:0"]
    assert (stock / "restored-by-node2").read_bytes() == memory
    assert not os.path.exists(path)
    assert catalog(cloud).find(name) is None


def test_a_failed_virsh_save_fails_and_stores_nothing(cloud: Cloud, stock: Path, tmp_path: Path,
                                                      action_user: ActionUser) -> None:
    (stock / "save.fail").touch()
    path = checkpoint_path(tmp_path, action_user)
    result = cloud.run("vmm/save.vitastor", DEPLOY_ID, path, "node1", str(VM_ID), "node1",
                       stdin=local(action_data(cloud)))
    assert (result.rc, result.reason) == (1, f"vmm/kvm/save failed (exit 1): Could not save {DEPLOY_ID}")
    assert cloud.own_inodes() == {}


def test_a_failed_virsh_restore_fails_and_keeps_the_checkpoint(cloud: Cloud, stock: Path, tmp_path: Path,
                                                               action_user: ActionUser) -> None:
    checkpoint_file(stock / "memory", MIB)
    path = checkpoint_path(tmp_path, action_user)
    args = (path, "node1", DEPLOY_ID, str(VM_ID), "node1")
    cloud.ok("vmm/save.vitastor", DEPLOY_ID, path, "node1", str(VM_ID), "node1", stdin=local(action_data(cloud)))
    (stock / "restore.fail").touch()
    result = cloud.run("vmm/restore.vitastor", *args, stdin=local(action_data(cloud)))
    assert (result.rc, result.reason) == (1, f"vmm/kvm/restore failed (exit 1): Could not restore {path}")
    name = f"{cloud.prefix}-sys-{VM_ID}-checkpoint"
    assert catalog(cloud).find(name) is not None  # a retry resumes from it
    (stock / "restore.fail").unlink()
    cloud.ok("vmm/restore.vitastor", *args, stdin=local(action_data(cloud)))
    assert (stock / "restored-by-node1").read_bytes() == (stock / "memory").read_bytes()
    assert catalog(cloud).find(name) is None


def test_resume_without_a_checkpoint_fails_before_virsh(cloud: Cloud, stock: Path, tmp_path: Path,
                                                       action_user: ActionUser) -> None:
    path = checkpoint_path(tmp_path, action_user)
    result = cloud.run("vmm/restore.vitastor", path, "node1", DEPLOY_ID, str(VM_ID), "node1",
                       stdin=local(action_data(cloud)))
    assert (result.rc, result.reason) == (1, f"Vitastor image {cloud.prefix}-sys-{VM_ID}-checkpoint does not exist")
    assert not (stock / "restore.argv").exists()


@pytest.mark.parametrize("deploy_id", ["one-12;id", "-x", "one 12"])
def test_deploy_ids_that_are_not_domain_names(cloud: Cloud, stock: Path, tmp_path: Path, deploy_id: str) -> None:
    path = tmp_path / "checkpoint"
    result = cloud.run("vmm/save.vitastor", deploy_id, str(path), "node1", str(VM_ID), "node1",
                       stdin=local(action_data(cloud)))
    assert (result.rc, result.reason) == (1, f"invalid deploy id {deploy_id!r}")
    assert not (stock / "save.argv").exists()
