"""``tm/vitastor/restore``: a powered-off VM's disks restored in place from a backup image.

one_tm runs it on the front-end (OpenNebula 6.10+) as ``restore <host>:<vm_dir> <vm_id>
<backup image id> <increment id> <disk id>`` with nothing on stdin; ``-1`` means the last
increment, or every disk (backup-contract §4.1). onevita asks oned for the VM, the backup image
and its datastore, has the backup datastore list the backup (``<remotes>/datastore/<DS_MAD>/ls
-i <increment>``, the plain DS_DRIVER_ACTION_DATA on stdin, as Datastore#ls_increment sends
it), and per disk reads the reassembled qcow2 through OpenNebula's downloader.sh here, on the
front-end, streaming it to the job that writes it into a new image ``NAME.restore`` (on the
front-end with VITASTOR_ON_FRONTEND, else a BRIDGE_LIST host, else the VM's host; the qcow2 is
staged in STAGING_DIR there and its raw bytes go in through qemu-nbd). Then one etcd
transaction per cluster swaps all restored disks in, and the replaced layers (the old heads,
their snapshots and backup checkpoints) are removed; a backup's vTPM state (``tpm``, listed
only when disk 0 is restored) replaces ``<vm_dir>/tpm`` on the VM's host last. A failure before
the swap removes the new images and leaves the disks as they were; a retry after a failure
after it finishes the removal.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import orjson
from lxml import etree

from .. import log
from ..cluster import bridge, run_job
from ..datastore.image import STAGING_DIR
from ..errors import BadRequest, OnevitaError
from ..names import check_host
from ..one.args import int_arg, split_location
from ..one.model import VM, Disk, VitastorSettings, parse_datastore, parse_image, parse_vm
from ..remotes import script
from ..run import CommandFailed, run
from .common import datastore, disk_name, oned

__all__ = ["restore"]

IMAGE_TYPE_BACKUP = "6"  # Image::IMAGE_TYPE BACKUP
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


@dataclass(frozen=True)
class _Target:
    """One disk to restore: its Vitastor image, where its jobs run, the backup's URL."""

    disk: Disk
    name: str
    settings: VitastorSettings
    host: str | None
    staging_dir: str
    url: str


def _list_backup(ds_xml: str, vm_xml: str, image_xml: str, ds_mad: str, increment: int) -> dict[str, str]:
    """``ls -i <increment>`` of the backup datastore: disk id (or ``tpm``) → download URL."""
    argv = [script("datastore", ds_mad, "ls"), "-i", str(increment)]
    data = f"<DS_DRIVER_ACTION_DATA>\n{ds_xml}\n{vm_xml}\n{image_xml}\n\n</DS_DRIVER_ACTION_DATA>\n"
    try:
        out = run(argv, input=data.encode()).stdout
    except CommandFailed as e:
        raise OnevitaError(f"cannot list the backup's disks with {argv[0]}: {e}") from e
    try:
        listing = orjson.loads(out)
    except orjson.JSONDecodeError:
        listing = None
    if not isinstance(listing, dict) or not all(isinstance(v, str) for v in listing.values()):
        raise OnevitaError(f"{argv[0]} did not answer a JSON object of URLs: {out[:200]!r}")
    return {str(k): v for k, v in listing.items()}


def _selected(listing: dict[str, str], disk_id: int) -> dict[str, str]:
    """Datastore#ls_increment's filter: the disk asked for (all with -1); ``tpm`` only along
    with disk 0."""
    chosen = {k: v for k, v in listing.items() if k == "tpm" or disk_id == -1 or k == str(disk_id)}
    if "0" not in chosen:
        chosen.pop("tpm", None)
    return chosen


def _target(vm: VM, host: str, disk_id: int, url: str) -> _Target:
    disk = vm.disk(disk_id)
    if disk.attrs.get("TM_MAD") != "vitastor":
        tm_mad = disk.attrs.get("TM_MAD")
        raise BadRequest(f"VM {vm.id} disk {disk_id} is not on Vitastor (TM_MAD {tm_mad!r})")
    ds = datastore(vm.datastore_of(disk))
    settings = ds.vitastor()
    staging = ds.template.get("STAGING_DIR") or STAGING_DIR
    if not staging.startswith("/"):
        raise BadRequest(f"STAGING_DIR must be an absolute path, got {staging!r}")
    job_host = None if settings.on_frontend else (bridge(settings, vm.id) if settings.bridges else host)
    return _Target(disk=disk, name=disk_name(vm.id, disk, settings), settings=settings, host=job_host,
                   staging_dir=staging, url=url)


def _last_backup_only(url: str) -> str:
    """``<scheme>://<ds>/<bj>/<id>:<dir>,…/…/<dir>/disk.tpm.0`` cut to the chain's last
    element, the path to that element's directory. OpenNebula's ls gives the vTPM file the whole
    chain's URL and the path of the directory it listed (the FULL one when asked for the last
    increment), and its downloaders would rebase ``disk.tpm.<id>`` files that no increment has
    (7.0.2); the last backup's own ``disk.tpm.0``, alone in the chain, is sent as it is."""
    scheme, sep, rest = url.partition("://")
    parts = rest.split("/", 3)
    if len(parts) < 4 or ":" not in parts[2]:
        return url
    chain = [element.split(":", 1) for element in parts[2].split(",")]
    dirs = {directory for _, directory in chain}
    path = parts[3].split("/")
    if len(path) >= 2 and path[-2] in dirs:
        path[-2] = chain[-1][1]
    parts[2], parts[3] = ":".join(chain[-1]), "/".join(path)
    return scheme + sep + "/".join(parts)


def _download_tpm(url: str) -> str:
    """The backup's ``disk.tpm.0`` (a small gzip tar), base64 for the host job that unpacks it."""
    import base64

    from ..datastore.source import open_source
    from ..vmm.vtpm import MAX_STATE

    with open_source(_last_backup_only(url)) as source:
        data = source.read(MAX_STATE + 1)
        while len(data) <= MAX_STATE:
            chunk = source.read(MAX_STATE + 1 - len(data))
            if not chunk:
                break
            data += chunk
    if len(data) > MAX_STATE:
        raise OnevitaError(f"the vTPM state at {url} is larger than {MAX_STATE >> 20} MiB")
    return base64.b64encode(data).decode()


def restore(location: str, vm_id: str, image_id: str, increment_id: str, disk_id: str) -> None:
    """Restore the VM's disks from increment ``increment_id`` (-1: the last) of the backup
    image ``image_id``, disk ``disk_id`` only or all of them (-1)."""
    from ..datastore.source import open_source

    host, vm_dir = split_location(location)
    check_host(host)
    vm_num, image_num = int_arg(vm_id, "VMID"), int_arg(image_id, "backup image id")
    increment, only = int_arg(increment_id, "increment id"), int_arg(disk_id, "disk id")
    if increment < -1 or only < -1:
        raise BadRequest(f"increment id and disk id must be -1 or more, got {increment} and {only}")
    vm_xml, image_xml = oned().vm_info(vm_num), oned().image_info(image_num)
    vm, image = parse_vm(vm_xml), parse_image(image_xml)
    if (etree.fromstring(image_xml.encode(), _PARSER).findtext("TYPE") or "").strip() != IMAGE_TYPE_BACKUP:
        raise BadRequest(f"image {image_num} is not a backup")
    ds_xml = oned().datastore_info(image.datastore_id)
    backup_ds = parse_datastore(ds_xml)
    urls = _selected(_list_backup(ds_xml, vm_xml, image_xml, backup_ds.ds_mad, increment), only)
    tpm_url = urls.pop("tpm", None)
    tpm = _download_tpm(tpm_url) if tpm_url else None
    if not urls:
        which = "any disk" if only == -1 else f"disk {only}"
        raise OnevitaError(f"backup image {image_num} has no {which} of VM {vm.id}")
    targets = [_target(vm, host, int_arg(k, "disk id in the backup"), urls[k]) for k in sorted(urls, key=int)]
    done: list[_Target] = []
    try:
        for target in targets:
            with open_source(target.url) as source:
                log.info(f"restoring disk {target.disk.id} of VM {vm.id} into {target.name} "
                         f"from {target.url}")
                run_job(target.host, "restore_disk", stream=source, conf=target.settings.conf,
                        name=target.name, fmt=source.format, staging_dir=target.staging_dir)
            done.append(target)
    except BaseException:
        for target in done:
            with contextlib.suppress(OnevitaError):
                run_job(target.host, "delete", conf=target.settings.conf, name=f"{target.name}.restore")
        raise
    clusters: dict[str | None, list[_Target]] = {}
    for target in targets:
        clusters.setdefault(target.settings.conf, []).append(target)
    for conf, group in clusters.items():  # one transaction per cluster: all its disks, or none
        run_job(group[0].host, "restore_swap", conf=conf, names=[t.name for t in group])
    if tpm is not None:
        run_job(host, "tpm_restore", vm_dir=vm_dir, state=tpm)
    log.info(f"restored disk(s) {', '.join(str(t.disk.id) for t in targets)} of VM {vm.id} from backup "
             f"image {image_num}" + (f" increment {increment}" if increment >= 0 else ""))
