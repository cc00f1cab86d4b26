"""``tm/vitastor/prebackup`` and ``postbackup``: the VM's Vitastor disks staged for the backup
datastore, and the staging directory removed afterwards.

one_vmm_exec runs both on the front-end, around the backup datastore's ``backup``, with
``<host>:<vm_dir> <disk ids> <deploy_id> <backup job id|-> <vm_id> <system ds id>`` and the
plain ``<VM>`` XML on stdin (backup contract §1). The staging directory is
``<BACKUP_BASE_PATH>/<vm_id>/backup`` when datastore.conf sets BACKUP_BASE_PATH, else
``<vm_dir>/backup``, on BACKUP_CONFIG/LAST_BRIDGE (7.0+) or the VM's host, where the backup
datastore looks for it; the jobs run there, since the files must land on that machine.

This is the first part of onevita's backups: full backups of powered-off VMs. Increments and
live backups are not there yet and fail with a clear reason instead of writing a backup that
would not restore.
"""

from __future__ import annotations

import sys

from lxml import etree

from ..cluster import run_job
from ..errors import BadRequest, OnevitaError
from ..formatting import read_datastore_conf
from ..names import check_host
from ..one.args import int_arg, split_location
from ..one.model import parse_vm
from .common import datastore, disk_name

__all__ = ["postbackup", "prebackup"]

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


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


def _disk_ids(ids: str) -> list[int]:
    """``0:1`` (6.8 adds a trailing colon)."""
    return [int_arg(part, "disk id") for part in ids.split(":") if part]


def _stage(vm_dir: str, vm_id: int) -> str:
    base = read_datastore_conf().get("BACKUP_BASE_PATH", "").rstrip("/")
    return f"{base}/{vm_id}/backup" if base else f"{vm_dir.rstrip('/')}/backup"


def _job_host(host: str, config: dict[str, str]) -> str:
    return check_host(config.get("LAST_BRIDGE") or host)


def _increment_id(config: dict[str, str]) -> int:
    """The id this backup's files carry: 0 for a full backup and a new chain."""
    last = int_arg(config.get("LAST_INCREMENT_ID", "-1") or "-1", "LAST_INCREMENT_ID")
    if config.get("MODE", "FULL").upper() == "INCREMENT" and last >= 0:
        raise OnevitaError("incremental backups of Vitastor disks are not implemented yet: "
                           "set the VM's BACKUP_CONFIG MODE to FULL (or reset the chain)")
    return 0


def prebackup(location: str, ids: str, deploy_id: str, job_id: str, vm_id: str, ds_id: str) -> None:
    """Stage ``vm.xml`` and ``disk.<id>.0`` (qcow2) of every listed disk, all of them Vitastor's."""
    host, vm_dir = split_location(location)
    text, root = _vm_document()
    vm = parse_vm(root)
    if vm.id != int_arg(vm_id, "VMID"):
        raise BadRequest(f"VM document is for VM {vm.id}, not {vm_id}")
    config = _backup_config(root)
    increment = _increment_id(config)
    disks = [vm.disk(disk_id) for disk_id in _disk_ids(ids)]
    others = [str(d.id) for d in disks if d.attrs.get("TM_MAD") != "vitastor"]
    if others:
        raise BadRequest(f"VM {vm.id}: disk(s) {', '.join(others)} are not on Vitastor; onevita backs up "
                         "Vitastor disks only")
    stage, job_host = _stage(vm_dir, vm.id), _job_host(host, config)
    run_job(job_host, "backup_stage", stage=stage, vm_xml=text)
    try:
        for disk in disks:
            ds_of_disk = vm.system_ds_id if not disk.source else disk.datastore_id
            if ds_of_disk is None:
                raise BadRequest(f"VM {vm.id} disk {disk.id}: no datastore to read VITASTOR_CONF from")
            settings = datastore(ds_of_disk).vitastor()
            run_job(job_host, "backup_disk", conf=settings.conf, name=disk_name(vm.id, disk, settings),
                    stage=stage, disk_id=disk.id, increment_id=increment)
    except BaseException:
        run_job(job_host, "backup_clean", stage=stage)
        raise


def postbackup(location: str, ids: str, deploy_id: str, job_id: str, vm_id: str, ds_id: str) -> int:
    """Remove the staging directory; always a success, since a failure here would fail a backup
    the datastore has already stored (contract §1)."""
    from .. import log

    try:
        host, vm_dir = split_location(location)
        config = _backup_config(_vm_document()[1])
        run_job(_job_host(host, config), "backup_clean", stage=_stage(vm_dir, int_arg(vm_id, "VMID")))
    except OnevitaError as e:
        log.warn(f"backup staging directory not removed: {e}")
    return 0

