"""Host jobs of a VM backup: the staging directory the backup datastore ships, and one disk's
export into it as ``disk.<disk_id>.<increment_id>``.

The backup datastores (rsync, restic) take whatever the TM left in the staging directory:
``vm.xml`` (the VM document, base64 in 60-character lines, as Ruby's ``Base64.encode64``
writes it and their ``stat``/``restore`` read it back) and one qcow2 file per disk without a
backing file, which OpenNebula's downloaders rebase and convert (backup contract §2, §3.3).
The image data leaves Vitastor through libvitastor_client into a sparse raw file beside its
target, then QEMU's own ``qemu-img convert`` writes the qcow2 (no qcow2 writer of our own: the
format's details stay QEMU's); the raw file is removed at once. Like every job these take JSON
scalars, and a retry starts over (the staging directory is made anew by ``backup_stage``).
"""

from __future__ import annotations

import base64
import os
import shutil

from .. import log
from ..errors import BadRequest, OnevitaError
from ..names import check_image, check_path
from ..run import CommandFailed, run
from .config import read_config

__all__ = ["backup_clean", "backup_disk", "backup_stage"]

STAGE_NAME = "backup"


def _stage_path(stage: str) -> str:
    """A staging directory: an absolute plain path whose last part is ``backup``, so a wrong
    argument can never make the jobs empty another directory."""
    check_path(stage, "backup staging directory")
    if os.path.basename(stage.rstrip("/")) != STAGE_NAME:
        raise BadRequest(f"unexpected backup staging directory {stage!r}: expected .../{STAGE_NAME}")
    return stage


def _encode64(data: bytes) -> bytes:
    """Ruby's ``Base64.encode64``: 60 characters a line, each ended by a newline."""
    text = base64.b64encode(data)
    return b"".join(text[i:i + 60] + b"\n" for i in range(0, len(text), 60))


def backup_stage(stage: str, vm_xml: str) -> None:
    """The staging directory made anew, with ``vm.xml``."""
    stage = _stage_path(stage)
    shutil.rmtree(stage, ignore_errors=True)
    try:
        os.makedirs(stage, exist_ok=True)
        with open(os.path.join(stage, "vm.xml"), "wb") as f:
            f.write(_encode64(vm_xml.encode()))
    except OSError as e:
        raise OnevitaError(f"cannot prepare the backup staging directory {stage}: {e.strerror}") from e


def backup_disk(conf: str | None, name: str, stage: str, disk_id: int, increment_id: int) -> int:
    """Vitastor image ``name`` into ``<stage>/disk.<disk_id>.<increment_id>`` as a qcow2 without
    a backing file; its size in bytes."""
    from .client import export_to_file

    stage = _stage_path(stage)
    target = os.path.join(stage, f"disk.{int(disk_id)}.{int(increment_id)}")
    raw = target + ".raw"
    try:
        export_to_file(read_config(conf), check_image(name), raw, progress=True)
        run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", raw, target])
    except CommandFailed as e:
        raise OnevitaError(f"cannot write the backup of {name}: {e}") from e
    finally:
        if os.path.exists(raw):
            os.unlink(raw)
    size = os.stat(target).st_size
    log.info(f"backup of {name}: {target} ({size // (1 << 20)} MiB)")
    return size


def backup_clean(stage: str) -> None:
    """The staging directory removed (nothing there is success)."""
    shutil.rmtree(_stage_path(stage), ignore_errors=True)
