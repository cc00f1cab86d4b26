"""``vmm/kvm/save.vitastor`` and ``restore.vitastor``: the memory checkpoint kept in Vitastor.

``onevita install`` makes them the kvm driver's local actions (``-l save=save.vitastor,
restore=restore.vitastor``): the stock remote ``kvm/save`` ends inside ``retry_if``, which
exits, so its ``save.<TM_MAD>`` hook never runs and the memory file would stay on the host's
disk. one_vmm_exec runs a local action on the front-end with the stock action's argv
(save: ``DEPLOY_ID FILE HOST VMID HOST``; restore: ``FILE HOST DEPLOY_ID VMID HOST``) and the
VMM_DRIVER_ACTION_DATA base64-encoded on stdin. Each then runs one host job on HOST over ssh:

* save: the host's stock ``vmm/kvm/save`` (``virsh save`` to FILE, with kvmrc's settings), then
  FILE into ``<IMAGE_PREFIX>-sys-<VMID>-checkpoint`` in the system datastore's pool (holes
  skipped; filled as ``<name>.importing`` and renamed when complete, replacing an older
  checkpoint), then FILE removed;
* restore: the image back into FILE, byte for byte, then the host's stock ``vmm/kvm/restore``
  (``virsh restore``, path fix-ups, retries; it removes FILE), then the image removed.

``virsh save`` rewrites the file's header after the migration stream, so the memory state
cannot be streamed into Vitastor without a file on the host; it lives there only between the
two steps. The stock scripts get an empty stdin, so they never call a ``*.vitastor`` hook
themselves. When one does call this script as its hook (stdin plain XML, on the host, FILE
already written or about to be read), only the data step runs, as the hook contract expects.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from lxml import etree

from .. import log
from ..errors import BadRequest, OnevitaError
from ..names import check_deploy_id, check_host, check_image, check_path, checkpoint_name
from ..one.args import int_arg
from ..one.model import VitastorSettings, parse_datastore, parse_vm
from .deploy import decode_b64

__all__ = ["load_checkpoint", "restore", "restore_on_host", "save", "save_on_host", "store_checkpoint"]

SIZE_META = "onevita_checkpoint_size"  # meta key: the checkpoint file's byte size
ALIGN = 4096
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


def _action_data(stdin: bytes) -> tuple[bytes, bool]:
    """The VMM_DRIVER_ACTION_DATA XML, and whether it came as a local action's base64 (True)
    or as the plain XML a stock script hands its ``*.<TM_MAD>`` hook on the host (False)."""
    if not stdin.strip():
        raise BadRequest("no VMM_DRIVER_ACTION_DATA on stdin")
    if stdin.lstrip().startswith(b"<"):
        return stdin, False
    return decode_b64(stdin, "VMM_DRIVER_ACTION_DATA on stdin"), True


def _settings(xml: bytes, vm_id: str) -> tuple[int, VitastorSettings]:
    """The VM id (checked against the VM document) and the system datastore's settings."""
    vmid = int_arg(vm_id, "VMID")
    try:
        root = etree.fromstring(xml, parser=_PARSER)
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
    if os.path.basename(path) != "checkpoint":
        raise BadRequest(f"unexpected checkpoint file {path!r}: expected <system datastore dir>/checkpoint")
    return check_path(path, "checkpoint file")


def _job_params(settings: VitastorSettings, vmid: int, file: str) -> dict[str, Any]:
    return {"conf": settings.conf, "pool": settings.pool, "prefix": settings.prefix, "vm_id": vmid,
            "file": file}


def _stock(action: str, *args: str) -> None:
    """Run the host's stock ``vmm/kvm/<action>`` with ``args`` and an empty stdin; its log
    lines go on to oned.log, its failure is ours."""
    from ..cluster import pass_logs
    from ..remotes import script
    from ..run import CommandFailed, run

    proc = run([script("vmm", "kvm", action), *args], input=b"", check=False)
    rest = pass_logs(proc.stderr)
    if proc.returncode != 0:
        detail = ": " + " ".join(rest) if rest else ""
        raise CommandFailed(f"vmm/kvm/{action} failed (exit {proc.returncode}){detail}")


def store_checkpoint(file: str, vm_id: int, conf: str | None, pool: str | None, prefix: str) -> str:
    """FILE into the VM's checkpoint image (replacing an older one), then FILE removed."""
    from ..vitastor.client import import_file
    from ..vitastor.config import read_config
    from ..vitastor.jobs import clear_partial, delete, open_catalog

    name = check_image(checkpoint_name(prefix, vm_id))
    try:
        size = os.stat(file).st_size
    except OSError as e:
        raise OnevitaError(f"cannot read {file}: {e.strerror}") from e
    image_size = max(ALIGN, -(-size // ALIGN) * ALIGN)
    catalog = open_catalog(conf)
    partial = clear_partial(conf, catalog, name, "save")
    target = catalog.pool(pool)
    catalog.create(partial, image_size, target, meta={SIZE_META: size})
    try:
        written = import_file(read_config(conf), file, partial, progress=False)
        if catalog.find(name) is not None:
            log.info(f"replacing the older checkpoint {name}")
            delete(conf, name)
            catalog.load()
        catalog.modify(catalog.get(partial), rename=name)
    except BaseException:
        delete(conf, partial)
        raise
    try:
        os.unlink(file)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise OnevitaError(f"checkpoint saved in {name}, but cannot remove {file}: {e.strerror}") from e
    log.info(f"saved checkpoint of VM {vm_id} ({size} bytes, {written} written) in {name}, "
             f"pool {target.name}")
    return name


def load_checkpoint(file: str, vm_id: int, conf: str | None, prefix: str) -> str:
    """The VM's checkpoint image back into FILE, byte-exact (written aside, then renamed)."""
    from ..vitastor.client import export_to_file
    from ..vitastor.config import read_config
    from ..vitastor.jobs import open_catalog

    name = check_image(checkpoint_name(prefix, vm_id))
    inode = open_catalog(conf).get(name)
    size = (inode.meta or {}).get(SIZE_META)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= inode.size:
        raise OnevitaError(f"Vitastor image {name} is not a checkpoint saved by onevita "
                           f"(no valid {SIZE_META} in its meta)")
    partial = file + ".restoring"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        os.makedirs(os.path.dirname(file), exist_ok=True)  # a VM resumed on another host
        export_to_file(read_config(conf), name, partial, size=size, progress=False)
        os.truncate(partial, size)
        os.replace(partial, file)
    except OSError as e:
        raise OnevitaError(f"cannot write {file}: {e.strerror}") from e
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    log.info(f"restored checkpoint of VM {vm_id} ({size} bytes) from {name}")
    return name


def save_on_host(deploy_id: str, vm_host: str, file: str, vm_id: int, conf: str | None, pool: str | None,
                 prefix: str) -> None:
    """Host job: the stock save, then the file into Vitastor."""
    _stock("save", deploy_id, file, vm_host, str(vm_id), vm_host)
    store_checkpoint(file, vm_id, conf, pool, prefix)


def restore_on_host(deploy_id: str, vm_host: str, file: str, vm_id: int, conf: str | None, pool: str | None,
                    prefix: str) -> None:
    """Host job: the file from Vitastor, the stock restore, then the image removed (the VM
    runs again; the next stop saves a new checkpoint)."""
    from ..vitastor.jobs import delete

    name = load_checkpoint(file, vm_id, conf, prefix)
    _stock("restore", file, vm_host, deploy_id, str(vm_id), vm_host)
    try:
        delete(conf, name)
    except OnevitaError as e:
        log.warn(f"VM {vm_id} restored, but its checkpoint image {name} was not removed: {e}")


def save(deploy_id: str, path: str, host: str, vm_id: str, host2: str = "") -> None:
    """``save.vitastor DEPLOY_ID FILE HOST VMID HOST``: save the VM's memory state into its
    checkpoint image (see the module's docstring)."""
    from ..cluster import run_job

    file = _checkpoint_path(path)
    xml, local_action = _action_data(sys.stdin.buffer.read())
    vmid, settings = _settings(xml, vm_id)
    if not local_action:
        store_checkpoint(file, vmid, settings.conf, settings.pool, settings.prefix)
        return
    run_job(check_host(host), "checkpoint_save", deploy_id=check_deploy_id(deploy_id), vm_host=host,
            **_job_params(settings, vmid, file))


def restore(path: str, host: str, deploy_id: str, vm_id: str, host2: str = "") -> None:
    """``restore.vitastor FILE HOST DEPLOY_ID VMID HOST``: resume the VM from its checkpoint
    image (see the module's docstring)."""
    from ..cluster import run_job

    file = _checkpoint_path(path)
    xml, local_action = _action_data(sys.stdin.buffer.read())
    vmid, settings = _settings(xml, vm_id)
    if not local_action:
        load_checkpoint(file, vmid, settings.conf, settings.prefix)
        return
    run_job(check_host(host), "checkpoint_restore", deploy_id=check_deploy_id(deploy_id), vm_host=host,
            **_job_params(settings, vmid, file))
