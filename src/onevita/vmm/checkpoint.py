"""``vmm/kvm/save.vitastor`` and ``restore.vitastor``: the memory checkpoint kept in Vitastor.

The stock remote ``kvm/save``, after ``virsh save`` to ``<sysdir>/checkpoint``, runs
``save.<system DS TM_MAD>`` on the host with its own argv (``DEPLOY_ID FILE HOST VMID HOST``)
and the plain VMM_DRIVER_ACTION_DATA XML on stdin; ``kvm/restore`` runs ``restore.<TM_MAD>``
(``FILE HOST DEPLOY_ID VMID HOST``) before ``virsh restore``. Both run here, on the host.

save copies the file into ``<IMAGE_PREFIX>-sys-<VMID>-checkpoint`` in the system datastore's
pool (its holes skipped), replacing an older checkpoint, and removes the file; the image is
filled as ``<name>.importing`` and renamed when complete. restore writes the image back to the
file, byte for byte (its size is recorded in the image's meta). The image stays: tm/delete of
the VM directory removes it, and the next save replaces it.
"""

from __future__ import annotations

import contextlib
import os
import sys

from lxml import etree

from .. import log
from ..errors import BadRequest, OnevitaError
from ..names import check_image, checkpoint_name
from ..one.args import int_arg
from ..one.model import VitastorSettings, parse_datastore, parse_vm

__all__ = ["restore", "save"]

SIZE_META = "onevita_checkpoint_size"  # meta key: the checkpoint file's byte size
ALIGN = 4096
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


def _settings(stdin: bytes, vm_id: str) -> tuple[int, VitastorSettings]:
    """The VM id (checked against the VM document) and the system datastore's settings."""
    vmid = int_arg(vm_id, "VMID")
    if not stdin.strip():
        raise BadRequest("no VMM_DRIVER_ACTION_DATA on stdin")
    try:
        root = etree.fromstring(stdin, parser=_PARSER)
    except etree.XMLSyntaxError as e:
        raise BadRequest(f"malformed VMM_DRIVER_ACTION_DATA XML: {e.msg}") from e
    vm_node = root if root.tag == "VM" else root.find("VM")
    ds_node = root.find("DATASTORE")
    if vm_node is None:
        raise BadRequest("VMM_DRIVER_ACTION_DATA has no VM")
    if ds_node is None:
        raise BadRequest("VMM_DRIVER_ACTION_DATA has no DATASTORE")
    vm = parse_vm(vm_node)
    if vm.id != vmid:
        raise BadRequest(f"VM document is for VM {vm.id}, not {vmid}")
    return vmid, parse_datastore(ds_node).vitastor()


def _checkpoint_path(path: str) -> str:
    if not path.startswith("/") or os.path.basename(path) != "checkpoint":
        raise BadRequest(f"unexpected checkpoint file {path!r}: expected <system datastore dir>/checkpoint")
    return path


def save(deploy_id: str, path: str, host: str, vm_id: str, host2: str = "") -> None:
    """``save.vitastor DEPLOY_ID FILE HOST VMID HOST``: FILE into the checkpoint image, then
    FILE removed."""
    from ..vitastor.client import import_file
    from ..vitastor.config import read_config
    from ..vitastor.jobs import IMPORTING, delete, open_catalog

    file = _checkpoint_path(path)
    vmid, settings = _settings(sys.stdin.buffer.read(), vm_id)
    name = check_image(checkpoint_name(settings.prefix, vmid))
    try:
        size = os.stat(file).st_size
    except OSError as e:
        raise OnevitaError(f"cannot read {file}: {e.strerror}") from e
    image_size = max(ALIGN, -(-size // ALIGN) * ALIGN)
    catalog = open_catalog(settings.conf)
    partial = check_image(name + IMPORTING)
    if catalog.find(partial) is not None:
        log.warn(f"removing {partial}, left by an interrupted save")
        delete(settings.conf, partial)
        catalog.load()
    target = catalog.pool(settings.pool)
    catalog.create(partial, image_size, target, meta={SIZE_META: size})
    try:
        written = import_file(read_config(settings.conf), file, partial, progress=False)
        if catalog.find(name) is not None:
            log.info(f"replacing the older checkpoint {name}")
            delete(settings.conf, name)
            catalog.load()
        catalog.modify(catalog.get(partial), rename=name)
    except BaseException:
        delete(settings.conf, partial)
        raise
    try:
        os.unlink(file)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise OnevitaError(f"checkpoint saved in {name}, but cannot remove {file}: {e.strerror}") from e
    log.info(f"saved checkpoint of VM {vmid} ({size} bytes, {written} written) in {name}, pool {target.name}")


def restore(path: str, host: str, deploy_id: str, vm_id: str, host2: str = "") -> None:
    """``restore.vitastor FILE HOST DEPLOY_ID VMID HOST``: the checkpoint image back into FILE,
    byte-exact, for ``virsh restore``; the image stays."""
    from ..vitastor.client import export_to_file
    from ..vitastor.config import read_config
    from ..vitastor.jobs import open_catalog

    file = _checkpoint_path(path)
    vmid, settings = _settings(sys.stdin.buffer.read(), vm_id)
    name = check_image(checkpoint_name(settings.prefix, vmid))
    inode = open_catalog(settings.conf).get(name)
    size = (inode.meta or {}).get(SIZE_META)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= inode.size:
        raise OnevitaError(f"Vitastor image {name} is not a checkpoint saved by onevita "
                           f"(no valid {SIZE_META} in its meta)")
    partial = file + ".restoring"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        export_to_file(read_config(settings.conf), name, partial, size=size, progress=False)
        os.truncate(partial, size)
        os.replace(partial, file)
    except OSError as e:
        raise OnevitaError(f"cannot write {file}: {e.strerror}") from e
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    log.info(f"restored checkpoint of VM {vmid} ({size} bytes) from {name}")
