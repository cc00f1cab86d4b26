"""``tm/vitastor/prebackup[_live]`` and ``postbackup[_live]``: the VM's Vitastor disks staged
for the backup datastore, and the staging directory removed afterwards.

one_vmm_exec runs them on the front-end, around the backup datastore's ``backup``, with
``<host>:<vm_dir> <disk ids> <deploy_id> <backup job id|-> <vm_id> <system ds id>`` and the
plain ``<VM>`` XML on stdin (backup contract §1); the ``_live`` ones while the VM runs. The
staging directory is ``<BACKUP_BASE_PATH>/<vm_id>/backup`` when datastore.conf sets
BACKUP_BASE_PATH, else ``<vm_dir>/backup``, on BACKUP_CONFIG/LAST_BRIDGE (7.0+) or the VM's
host, where the backup datastore looks for it; the disk jobs run there, since the files must
land on that machine.

prebackup: every listed disk is checked to be Vitastor's first; then the checkpoint layers of
all of them are taken in one etcd transaction per cluster (live: inside FS_FREEZE's freeze or
suspend, always undone), older checkpoints are pruned, and each disk is written from its
checkpoint (with a vTPM, its state too, as ``disk.tpm.0``: 7.0+): ``disk.<id>.0`` whole for a
FULL backup or a new chain (LAST_INCREMENT_ID -1), else ``disk.<id>.<LAST_INCREMENT_ID+1>``
with what changed since checkpoint LAST_INCREMENT_ID.
That checkpoint is kept until a later prebackup names a newer one as the last: oned advances
LAST_INCREMENT_ID only when the datastore stored the backup, so a failed upload is retried
against the same checkpoint. A failure removes the staging directory and the new checkpoints.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from lxml import etree

from .. import log
from ..cluster import job_host, run_job
from ..errors import BadRequest, OnevitaError
from ..formatting import read_datastore_conf
from ..names import check_deploy_id, check_host
from ..one.args import int_arg, split_location
from ..one.model import VM, Disk, VitastorSettings, parse_vm
from .common import datastore, disk_name

__all__ = ["postbackup", "postbackup_live", "prebackup", "prebackup_live"]

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
FS_FREEZE_MODES = ("NONE", "AGENT", "SUSPEND")


def _vm_document() -> tuple[str, etree._Element]:
    """The ``<VM>`` on stdin, as oned wrote it (it goes to vm.xml unchanged) and parsed."""
    data = sys.stdin.buffer.read()
    if not data.strip():
        raise BadRequest("no VM document on stdin")
    try:
        return data.decode(), etree.fromstring(data, parser=_PARSER)
    except (etree.XMLSyntaxError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed VM document on stdin: {e}") from e


def _backup_config(vm: etree._Element) -> dict[str, str]:
    """BACKUPS/BACKUP_CONFIG of the VM document."""
    node = vm.find("BACKUPS/BACKUP_CONFIG")
    return {c.tag: (c.text or "").strip() for c in node if isinstance(c.tag, str)} if node is not None else {}


@dataclass(frozen=True)
class Increment:
    """Which backup this is: the id its files carry, and the checkpoint it is taken against
    (-1: none, the whole disk)."""

    id: int
    since: int

    @classmethod
    def from_config(cls, config: dict[str, str]) -> Increment:
        """MODE and LAST_INCREMENT_ID: FULL, or a new chain, is ``disk.<id>.0``."""
        mode = (config.get("MODE") or "FULL").upper()
        if mode not in ("FULL", "INCREMENT"):
            raise BadRequest(f"BACKUP_CONFIG/MODE {config.get('MODE')!r} is neither FULL nor INCREMENT")
        last = int_arg(config.get("LAST_INCREMENT_ID") or "-1", "BACKUP_CONFIG/LAST_INCREMENT_ID")
        if last < -1:
            raise BadRequest(f"BACKUP_CONFIG/LAST_INCREMENT_ID {last} is below -1")
        return cls(last + 1, last) if mode == "INCREMENT" and last >= 0 else cls(0, -1)

    @property
    def keep(self) -> list[int]:
        """The checkpoints a successful prebackup leaves: this one and the one it is taken against."""
        return [self.since, self.id] if self.since >= 0 else [self.id]


@dataclass(frozen=True)
class BackupDisk:
    """A disk to back up: its id, its Vitastor image and the cluster it is in."""

    id: int
    name: str
    settings: VitastorSettings


def _disk_ids(ids: str) -> list[int]:
    """``0:1`` (6.8 adds a trailing colon)."""
    return [int_arg(part, "disk id") for part in ids.split(":") if part]


def _is_vitastor(disk: Disk) -> bool:
    """An image disk of a Vitastor datastore, or a volatile disk (it lives in the system
    datastore, which is Vitastor's since oned called this driver)."""
    return disk.attrs.get("TM_MAD") == "vitastor" or (not disk.source and disk.volatile)


def _backup_disks(vm: VM, ids: str) -> list[BackupDisk]:
    """The listed disks, all checked before anything is done."""
    disks = [vm.disk(disk_id) for disk_id in _disk_ids(ids)]
    others = [str(d.id) for d in disks if not _is_vitastor(d)]
    if others:
        raise BadRequest(f"VM {vm.id}: disk(s) {', '.join(others)} are not on Vitastor; onevita backs up "
                         "Vitastor disks only")
    result = []
    for disk in disks:
        settings = datastore(vm.datastore_of(disk)).vitastor()
        result.append(BackupDisk(disk.id, disk_name(vm.id, disk, settings), settings))
    return result


def _has_vtpm(vm: etree._Element) -> bool:
    """A vTPM (7.0+): its state goes along as ``disk.tpm.0``, taken on the VM's host."""
    return bool((vm.findtext("TEMPLATE/TPM/MODEL") or "").strip())


def _by_cluster(disks: list[BackupDisk]) -> dict[str | None, list[BackupDisk]]:
    """Disks grouped by vitastor.conf: one etcd transaction can only span one cluster."""
    groups: dict[str | None, list[BackupDisk]] = {}
    for disk in disks:
        groups.setdefault(disk.settings.conf, []).append(disk)
    return groups


def _stage(vm_dir: str, vm_id: int) -> str:
    base = read_datastore_conf().get("BACKUP_BASE_PATH", "").rstrip("/")
    return f"{base}/{vm_id}/backup" if base else f"{vm_dir.rstrip('/')}/backup"


def _job_host(host: str, config: dict[str, str]) -> str:
    return check_host(config.get("LAST_BRIDGE") or host)


@contextmanager
def _quiesced(host: str, deploy_id: str, mode: str) -> Iterator[None]:
    """FS_FREEZE around the checkpoints of a running VM: AGENT freezes the guest's file
    systems through its agent, SUSPEND pauses the VM; either is undone however the block ends."""
    if mode == "AGENT":
        frozen = run_job(host, "fsfreeze", deploy_id=deploy_id)
        try:
            yield
        finally:
            if frozen:
                run_job(host, "fsthaw", deploy_id=deploy_id)
    elif mode == "SUSPEND":
        run_job(host, "suspend", deploy_id=deploy_id)
        try:
            yield
        finally:
            run_job(host, "resume", deploy_id=deploy_id)
    else:
        yield


def _backup(location: str, ids: str, deploy_id: str, vm_id: str, *, live: bool) -> None:
    host, vm_dir = split_location(location)
    text, root = _vm_document()
    vm = parse_vm(root)
    if vm.id != int_arg(vm_id, "VMID"):
        raise BadRequest(f"VM document is for VM {vm.id}, not {vm_id}")
    config = _backup_config(root)
    increment = Increment.from_config(config)
    freeze = (config.get("FS_FREEZE") or "NONE").upper()
    if freeze not in FS_FREEZE_MODES:
        raise BadRequest(f"BACKUP_CONFIG/FS_FREEZE {config.get('FS_FREEZE')!r} is not one of "
                         f"{', '.join(FS_FREEZE_MODES)}")
    if live:
        check_deploy_id(deploy_id)
    disks = _backup_disks(vm, ids)
    stage, target = _stage(vm_dir, vm.id), _job_host(host, config)
    groups = _by_cluster(disks)
    taken = False
    try:
        with _quiesced(host, deploy_id, freeze if live else "NONE"):
            for conf, group in groups.items():
                run_job(job_host(group[0].settings, host), "backup_checkpoint", conf=conf,
                        names=[d.name for d in group], increment_id=increment.id)
                taken = True
        _prune(host, groups, increment.keep)
        tpm = run_job(host, "tpm_save", deploy_id=deploy_id, vm_dir=vm_dir) if _has_vtpm(root) else None
        staged = [{"conf": d.settings.conf, "name": d.name, "disk_id": d.id} for d in disks]
        run_job(target, "backup_write", stage=stage, vm_xml=text, disks=staged, increment_id=increment.id,
                since=increment.since, tpm=tpm)
    except BaseException:
        _undo(target, stage, host, groups, increment if taken else None)
        raise


def _prune(host: str, groups: dict[str | None, list[BackupDisk]], keep: list[int]) -> None:
    """Remove the disks' checkpoints but those of ``keep``, in each cluster."""
    for conf, group in groups.items():
        run_job(job_host(group[0].settings, host), "backup_prune", conf=conf, names=[d.name for d in group],
                keep=keep)


def _undo(target: str, stage: str, host: str, groups: dict[str | None, list[BackupDisk]],
          increment: Increment | None) -> None:
    """After a failure: the staging directory goes, and the new checkpoints (the one the
    backup is taken against stays for the retry). Errors here are logged: the failure that
    brought us here is the one oned must see."""
    try:
        run_job(target, "backup_clean", stage=stage)
        if increment is not None:
            _prune(host, groups, [increment.since] if increment.since >= 0 else [])
    except OnevitaError as e:
        log.error(f"cleaning up after the failed backup: {e}")


def prebackup(location: str, ids: str, deploy_id: str, job_id: str, vm_id: str, ds_id: str) -> None:
    """A powered-off VM's disks: ``vm.xml`` and one qcow2 per disk in the staging directory."""
    _backup(location, ids, deploy_id, vm_id, live=False)


def prebackup_live(location: str, ids: str, deploy_id: str, job_id: str, vm_id: str, ds_id: str) -> None:
    """A running VM's disks, checkpointed inside BACKUP_CONFIG/FS_FREEZE's freeze or suspend."""
    _backup(location, ids, deploy_id, vm_id, live=True)


def postbackup(location: str, ids: str, deploy_id: str, job_id: str, vm_id: str, ds_id: str) -> int:
    """Remove the staging directory; always a success, since a failure here would fail a backup
    the datastore has already stored (contract §1). The checkpoints stay for the next one."""
    try:
        host, vm_dir = split_location(location)
        config = _backup_config(_vm_document()[1])
        run_job(_job_host(host, config), "backup_clean", stage=_stage(vm_dir, int_arg(vm_id, "VMID")))
    except OnevitaError as e:
        log.warn(f"backup staging directory not removed: {e}")
    return 0


postbackup_live = postbackup
