"""Builders for the OpenNebula XML documents the driver consumes (``onevm show -x``, DS stdin, …).

Element names and order follow oned's ``to_xml`` methods and the XSDs in ``share/doc/xsd`` (see
the contract, sections 1, 5 and 10): fixed fields as plain text, template attributes as CDATA.
Output is compact text without an XML declaration, as oned sends it.
"""

from __future__ import annotations

import base64
from typing import Iterable, Mapping, Optional, Sequence

from lxml import etree

STIME = 1727952499  # fixed timestamps keep documents reproducible
DATASTORE_LOCATION = "/var/lib/one//datastores"  # oned's default, double slash included
# Host states (include/Host.h)
HOST_MONITORED = 2
HOST_ERROR = 3
HOST_DISABLED = 4
HOST_OFFLINE = 8
# Re-parsing our own parts must keep their CDATA sections, as oned's concatenated documents do.
_PARSER = etree.XMLParser(strip_cdata=False)

Disk = dict[str, str]


def _text(parent: etree._Element, tag: str, value: object) -> None:
    etree.SubElement(parent, tag).text = str(value)


def _cdata_children(parent: etree._Element, tag: str, attrs: Mapping[str, str]) -> etree._Element:
    """A template element: one CDATA child per attribute, in the order given."""
    element = etree.SubElement(parent, tag)
    for key, value in attrs.items():
        etree.SubElement(element, key).text = etree.CDATA(value)
    return element


def _ids(parent: etree._Element, tag: str, ids: Iterable[int]) -> None:
    element = etree.SubElement(parent, tag)
    for oid in ids:
        _text(element, "ID", oid)


def _owner(root: etree._Element, oid: int, name: str, *, group_use: int) -> None:
    """ID … NAME … PERMISSIONS, common to every pool object; owned by oneadmin."""
    for tag, value in (("ID", oid), ("UID", 0), ("GID", 0), ("UNAME", "oneadmin"), ("GNAME", "oneadmin"),
                       ("NAME", name)):
        _text(root, tag, value)
    perms = etree.SubElement(root, "PERMISSIONS")
    for tag, value in (("OWNER_U", 1), ("OWNER_M", 1), ("OWNER_A", 0), ("GROUP_U", group_use), ("GROUP_M", 0),
                       ("GROUP_A", 0), ("OTHER_U", 0), ("OTHER_M", 0), ("OTHER_A", 0)):
        _text(perms, tag, value)


def _serialize(root: etree._Element) -> str:
    return etree.tostring(root, encoding="unicode")


def _target(index: int) -> str:
    """``vda``, ``vdb`` … ``vdz``, ``vdaa`` …: the device name oned gives the n-th virtio disk."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return "vd" + letters


def image_disk(disk_id: int, image_id: int, *, source: str, clone: bool, persistent: bool = False,
               size_mb: int, ds_id: int = 101, tm_mad: str = "vitastor",
               extra: Optional[Mapping[str, str]] = None) -> Disk:
    """A VM DISK backed by an image (``Image::disk_attribute`` + ``Datastore::disk_attribute``).

    ``extra`` is appended (or replaces in place), e.g. the inherited POOL_NAME / VITASTOR_CONF /
    IMAGE_PREFIX of the image datastore.
    """
    disk = {
        "DISK_ID": str(disk_id), "IMAGE": f"image-{image_id}", "IMAGE_ID": str(image_id), "SOURCE": source,
        "ORIGINAL_SIZE": str(size_mb), "SIZE": str(size_mb), "DISK_SNAPSHOT_TOTAL_SIZE": "0",
        "FORMAT": "raw", "DRIVER": "raw", "IMAGE_STATE": "8" if persistent else "2",
        "CLONE": "YES" if clone else "NO", "SAVE": "YES" if persistent else "NO",
    }
    if persistent:
        disk["PERSISTENT"] = "YES"
    disk.update({
        "READONLY": "NO", "DATASTORE": f"datastore-{ds_id}", "DATASTORE_ID": str(ds_id), "TM_MAD": tm_mad,
        "CLUSTER_ID": "0", "CLONE_TARGET": "SELF", "LN_TARGET": "NONE", "DISK_TYPE": "FILE", "TYPE": "FILE",
        "TARGET": _target(disk_id), "DEV_PREFIX": "vd",
    })
    disk.update(extra or {})
    return disk


def volatile_disk(disk_id: int, *, size_mb: int, type: str = "fs", fs: Optional[str] = None,
                  sys_ds_id: int = 100, tm_mad: str = "vitastor",
                  extra: Optional[Mapping[str, str]] = None) -> Disk:
    """A volatile DISK (TYPE fs/swap): no SOURCE/CLONE/IMAGE_ID, datastore attributes of the system DS.

    ``extra`` carries the system datastore's inherited attributes (POOL_NAME, IMAGE_PREFIX …).
    """
    disk = {"DISK_ID": str(disk_id), "TYPE": type, "SIZE": str(size_mb), "FORMAT": "raw", "DRIVER": "raw"}
    if fs:
        disk["FS"] = fs
    disk.update({
        "DATASTORE": f"datastore-{sys_ds_id}", "DATASTORE_ID": str(sys_ds_id), "TM_MAD": tm_mad,
        "CLUSTER_ID": "0", "CLONE_TARGET": "SELF", "LN_TARGET": "NONE", "DISK_TYPE": "FILE",
        "TARGET": _target(disk_id), "DEV_PREFIX": "vd",
    })
    disk.update(extra or {})
    return disk


def _vm_template(vm: etree._Element, vm_id: int, disks: Sequence[Mapping[str, str]],
                 context_disk_id: Optional[int], tm_mad_system: str) -> None:
    """TEMPLATE children in oned's (alphabetical) order, which vm.xsd's sequence also requires."""
    template = etree.SubElement(vm, "TEMPLATE")
    if context_disk_id is not None:
        _cdata_children(template, "CONTEXT", {"DISK_ID": str(context_disk_id), "NETWORK": "YES",
                                              "TARGET": "hda"})
    etree.SubElement(template, "CPU").text = etree.CDATA("1")
    for disk in disks:
        _cdata_children(template, "DISK", disk)
    for tag, value in (("MEMORY", "1024"), ("TEMPLATE_ID", "0"), ("TM_MAD_SYSTEM", tm_mad_system),
                       ("VMID", str(vm_id))):
        etree.SubElement(template, tag).text = etree.CDATA(value)


def _history(records: etree._Element, vm_id: int, host: str, host_id: int, sys_ds_id: int,
             tm_mad_system: str) -> None:
    """One HISTORY record (``History::to_xml``), with the PLAN_ID/ACTION_ID that vm.xsd requires."""
    history = etree.SubElement(records, "HISTORY")
    for tag, value in (("OID", vm_id), ("SEQ", 0), ("HOSTNAME", host), ("HID", host_id), ("CID", 0),
                       ("STIME", STIME), ("ETIME", 0), ("VM_MAD", "kvm"), ("TM_MAD", tm_mad_system),
                       ("DS_ID", sys_ds_id), ("PLAN_ID", -1), ("ACTION_ID", -1), ("PSTIME", STIME),
                       ("PETIME", STIME + 4), ("RSTIME", STIME + 4), ("RETIME", 0), ("ESTIME", 0),
                       ("EETIME", 0), ("ACTION", 0), ("UID", -1), ("GID", -1), ("REQUEST_ID", -1)):
        _text(history, tag, value)


# BACKUP_CONFIG of a VM with KEEP_LAST set after a backup to datastore 200 (captured on 7.0.2:
# Backups::parse fills BACKUP_VOLATILE, FS_FREEZE, INCREMENT_MODE, the ids; the rest is the user's)
BACKUP_CONFIG_SET = {"BACKUP_VOLATILE": "NO", "FS_FREEZE": "NONE", "INCREMENTAL_BACKUP_ID": "-1",
                     "INCREMENT_MODE": "CBT", "KEEP_LAST": "4", "LAST_DATASTORE_ID": "200",
                     "LAST_INCREMENT_ID": "-1", "MODE": "FULL"}


def vm_xml(vm_id: int, *, disks: Sequence[Mapping[str, str]], host: Optional[str] = "node1", host_id: int = 0,
           sys_ds_id: int = 100, lcm_state: int = 3, state: int = 3, deploy_id: Optional[str] = None,
           context_disk_id: Optional[int] = None, name: Optional[str] = None, tm_mad_system: str = "vitastor",
           backup_config: Optional[Mapping[str, str]] = None) -> str:
    """``<VM>`` as ``one.vm.info`` returns it.

    ``host=None`` gives a VM never placed on a host (no HISTORY). ``deploy_id=None`` gives an empty
    DEPLOY_ID, as before the first deploy. ``backup_config`` (None: a VM never configured for
    backups, an empty BACKUP_CONFIG) is laid over what oned keeps once backups are configured
    and one was taken (``BACKUP_CONFIG_SET``), written sorted, as oned does.
    """
    vm = etree.Element("VM")
    _owner(vm, vm_id, name or f"vm-{vm_id}", group_use=0)
    for tag, value in (("LAST_POLL", 0), ("STATE", state), ("LCM_STATE", lcm_state), ("PREV_STATE", state),
                       ("PREV_LCM_STATE", lcm_state), ("RESCHED", 0), ("STIME", STIME), ("ETIME", 0),
                       ("DEPLOY_ID", deploy_id or "")):
        _text(vm, tag, value)
    etree.SubElement(vm, "MONITORING")
    etree.SubElement(vm, "SCHED_ACTIONS")
    _vm_template(vm, vm_id, disks, context_disk_id, tm_mad_system)
    etree.SubElement(vm, "USER_TEMPLATE")
    records = etree.SubElement(vm, "HISTORY_RECORDS")
    if host is not None:
        _history(records, vm_id, host, host_id, sys_ds_id, tm_mad_system)
    backups = etree.SubElement(vm, "BACKUPS")
    config = {} if backup_config is None else {**BACKUP_CONFIG_SET, **backup_config}
    _cdata_children(backups, "BACKUP_CONFIG", dict(sorted(config.items())))
    etree.SubElement(backups, "BACKUP_IDS")
    return _serialize(vm)


def datastore_xml(ds_id: int, *, name: str, ds_type: int, ds_mad: str = "vitastor", tm_mad: str = "vitastor",
                  template: Mapping[str, str], base_path: Optional[str] = None, total_mb: int = 1048576,
                  free_mb: int = 1000000, used_mb: int = 48576, images: Iterable[int] = ()) -> str:
    """``<DATASTORE>`` (``Datastore::to_xml``); ``ds_type`` 0 image, 1 system; template in given order."""
    ds = etree.Element("DATASTORE")
    _owner(ds, ds_id, name, group_use=1)
    for tag, value in (("DS_MAD", ds_mad), ("TM_MAD", tm_mad),
                       ("BASE_PATH", base_path or f"{DATASTORE_LOCATION}/{ds_id}"), ("TYPE", ds_type),
                       ("DISK_TYPE", 0), ("STATE", 0)):
        _text(ds, tag, value)
    _ids(ds, "CLUSTERS", [0])
    for tag, value in (("TOTAL_MB", total_mb), ("FREE_MB", free_mb), ("USED_MB", used_mb)):
        _text(ds, tag, value)
    _ids(ds, "IMAGES", images)
    _cdata_children(ds, "TEMPLATE", template)
    return _serialize(ds)


def _image_snapshots(image: etree._Element, snapshots: Sequence[int], size_mb: int) -> None:
    """SNAPSHOTS as ``Snapshots::to_xml``: snapshots taken without a revert all have PARENT -1."""
    element = _cdata_children(image, "SNAPSHOTS", {
        "ALLOW_ORPHANS": "format", "CURRENT_BASE": "-1",
        "NEXT_SNAPSHOT": str(max(snapshots) + 1 if snapshots else 0),
    })
    for snap_id in snapshots:
        snapshot = {"DATE": str(STIME), "ID": str(snap_id), "NAME": f"snap-{snap_id}", "PARENT": "-1",
                    "SIZE": str(size_mb)}
        if snap_id == max(snapshots):  # the one the image runs on (the latest, until a revert)
            snapshot = {"ACTIVE": "YES", **snapshot}
        _cdata_children(element, "SNAPSHOT", snapshot)


def image_xml(image_id: int, *, name: str, source: str, size_mb: int, ds_id: int, persistent: bool,
              snapshots: Sequence[int] = (), target_snapshot: Optional[int] = None, path: str = "",
              fs: str = "", format: str = "raw", image_type: int = 0, state: int = 1,
              template: Optional[Mapping[str, str]] = None) -> str:
    """``<IMAGE>`` (``Image::to_xml``); ``state`` 1 READY, 2 USED, 4 LOCKED, 8 USED_PERS."""
    image = etree.Element("IMAGE")
    _owner(image, image_id, name, group_use=0)
    for tag, value in (("TYPE", image_type), ("DISK_TYPE", 0), ("PERSISTENT", int(persistent)),
                       ("REGTIME", STIME), ("MODTIME", STIME), ("SOURCE", source), ("PATH", path),
                       ("FORMAT", format), ("FS", fs), ("SIZE", size_mb), ("STATE", state), ("PREV_STATE", 0),
                       ("RUNNING_VMS", 0), ("CLONING_OPS", 0), ("CLONING_ID", -1),
                       ("TARGET_SNAPSHOT", -1 if target_snapshot is None else target_snapshot),
                       ("DATASTORE_ID", ds_id), ("DATASTORE", f"datastore-{ds_id}")):
        _text(image, tag, value)
    for tag in ("VMS", "CLONES", "APP_CLONES"):
        etree.SubElement(image, tag)
    _cdata_children(image, "TEMPLATE", template or {})
    _image_snapshots(image, snapshots, size_mb)
    etree.SubElement(image, "BACKUP_INCREMENTS")
    etree.SubElement(image, "BACKUP_DISK_IDS")
    return _serialize(image)


def stat_image_xml(path: str) -> str:
    """The ``<IMAGE>`` of a ``stat`` request: oned asks at allocate time, before the image exists,
    and sends IMAGE/PATH alone (``ImageManager::stat_image``)."""
    image = etree.Element("IMAGE")
    _text(image, "PATH", path)
    return _serialize(image)


def host_xml(host_id: int, name: str, state: int = HOST_MONITORED) -> str:
    """``<HOST>`` with the fields a driver filters bridges on (ID, NAME, STATE); the hardware
    (HOST_SHARE) and MONITORING a real host reports are left empty."""
    host = etree.Element("HOST")
    for tag, value in (("ID", host_id), ("NAME", name), ("STATE", state), ("PREV_STATE", state),
                       ("IM_MAD", "kvm"), ("VM_MAD", "kvm"), ("CLUSTER_ID", 0), ("CLUSTER", "default")):
        _text(host, tag, value)
    etree.SubElement(host, "HOST_SHARE")
    etree.SubElement(host, "VMS")
    _cdata_children(host, "TEMPLATE", {"HOSTNAME": name, "HYPERVISOR": "kvm"})
    etree.SubElement(host, "MONITORING")
    return _serialize(host)


def host_pool_xml(hosts: Iterable[tuple[int, str, int]]) -> str:
    """``<HOST_POOL>`` of ``(id, name, state)`` hosts, as ``one.hostpool.info`` answers."""
    pool = etree.Element("HOST_POOL")
    for host_id, name, state in hosts:
        pool.append(etree.fromstring(host_xml(host_id, name, state), _PARSER))
    return _serialize(pool)


def ds_driver_action_data(*parts_xml: str, extra: Optional[Mapping[str, str]] = None) -> str:
    """``<DS_DRIVER_ACTION_DATA>`` wrapping documents (IMAGE, DATASTORE, VM …) then plain ``extra``
    elements such as DATASTORE_LOCATION or MONITOR_VM_DISKS."""
    root = etree.Element("DS_DRIVER_ACTION_DATA")
    for part in parts_xml:
        root.append(etree.fromstring(part, _PARSER))
    for tag, value in (extra or {}).items():
        _text(root, tag, value)
    return _serialize(root)


def vmm_action_data(vm: str, datastore: str, *, host: str, deploy_id: str, checkpoint_file: str = "",
                    tm_command: str = "", tm_command_rollback: str = "", disk_target_path: str = "") -> str:
    """``<VMM_DRIVER_ACTION_DATA>`` as one_vmm_exec gets it (``VirtualMachineManager::format_message``,
    7.0.2's element order): the call's context, the VM, and the system datastore."""
    root = etree.Element("VMM_DRIVER_ACTION_DATA")
    for tag, value in (("HOST", host), ("MIGR_HOST", ""), ("DEPLOY_ID", deploy_id), ("LOCAL_DEPLOYMENT_FILE", ""),
                       ("REMOTE_DEPLOYMENT_FILE", ""), ("CHECKPOINT_FILE", checkpoint_file),
                       ("TM_COMMAND", tm_command), ("TM_COMMAND_ROLLBACK", tm_command_rollback),
                       ("DISK_TARGET_PATH", disk_target_path)):
        _text(root, tag, value)
    root.append(etree.fromstring(vm, _PARSER))
    root.append(etree.fromstring(datastore, _PARSER))
    return _serialize(root)


def encode_b64(text: str) -> str:
    """Single-line base64, as oned passes DS/TM driver data on stdin or argv."""
    return base64.b64encode(text.encode()).decode("ascii")
