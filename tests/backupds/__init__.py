"""A test-local rsync backup datastore (``rsyncds.py``) in a remotes tree of its own, and the
helpers tests use to make backups with it, as oned would record them.

The tree is a copy of the built remotes (the onevita links) with the backup datastore's
scripts where an OpenNebula install puts them: ``datastore/rsync/{backup,ls,increment_flatten}``
and ``datastore/downloader.sh``. Actions run through that tree's links find the downloader
where they would on a front-end. oned's part (the backup IMAGE with its BACKUP_INCREMENTS, the
datastore document) is written into the oned stand-in by ``RsyncBackups``.

Chains are built with QEMU's tools only (``qcow2_full``, ``qcow2_increment``): an increment is
a qcow2 made on top of the previous state with ``qemu-io`` writes (unaligned data, ``write -z``
for zeroed ranges), then detached with ``qemu-img rebase -u -b ""``, as backup-contract.md §3.4
checked, so the tests do not depend on the code under test to make their input.

Test modules import ``backups_fixture`` and ``backup_remotes_fixture`` to get the ``backups``
and ``backup_remotes`` fixtures.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import pytest
from lxml import etree

from tests.cloud import Cloud, Result
from tests.harness import documents as docs
from tests.harness.user import ActionUser

__all__ = ["BACKUP_DS", "RsyncBackups", "Write", "apply_writes", "backup_remotes_fixture", "backups_fixture", "lay_tree", "qcow2_full",
           "make_chain", "qcow2_increment", "stage_backup"]

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "rsyncds.py"
BACKUP_DS = 200
IMAGE_TYPE_BACKUP = 6
DS_TYPE_BACKUP = 2
# where an OpenNebula install puts the backup datastore's scripts and the downloader
TREE_FILES = ("datastore/rsync/backup", "datastore/rsync/ls", "datastore/rsync/increment_flatten",
              "datastore/downloader.sh")
# a write of data, or of zeros (None) of the given length, at an offset
Write = tuple[int, Union[bytes, int]]


def lay_tree(built: Path, dest: Path) -> Path:
    """A copy of the built remotes tree (links kept) at ``dest`` with the backup datastore's
    scripts added; ``dest``."""
    shutil.copytree(built, dest, symlinks=True)
    for relative in TREE_FILES:
        path = dest / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SCRIPT, path)
        path.chmod(0o755)
    return dest


@pytest.fixture(scope="session", name="backup_remotes")
def backup_remotes_fixture(built: Path, tmp_path_factory: pytest.TempPathFactory, action_user: ActionUser) -> Path:
    """The session's remotes tree with the rsync backup datastore and downloader.sh."""
    directory = tmp_path_factory.mktemp("backup-remotes")
    tree = lay_tree(built, directory / "remotes")
    action_user.give(directory)
    return tree


@pytest.fixture(name="backups")
def backups_fixture(cloud: Cloud, backup_remotes: Path, tmp_path: Path) -> RsyncBackups:
    """This test's rsync backup datastore, known to the oned stand-in."""
    return RsyncBackups.create(cloud, backup_remotes, tmp_path)


def _run(*argv: str) -> bytes:
    proc = subprocess.run(argv, capture_output=True, check=False)
    assert proc.returncode == 0, f"{argv}: {proc.stderr.decode()}"
    return proc.stdout


def apply_writes(data: bytearray, writes: Sequence[Write]) -> bytearray:
    """``data`` with ``writes`` applied (what the guest did between two backups)."""
    for offset, what in writes:
        chunk = bytes(what) if isinstance(what, int) else what
        data[offset:offset + len(chunk)] = chunk
    return data


def qcow2_full(data: bytes, out: Path) -> None:
    """A full backup file: ``data`` as qcow2 without backing (holes for zero runs)."""
    raw = out.with_name(out.name + ".src.raw")
    with open(raw, "wb") as f:
        f.truncate(len(data))
        for pos in range(0, len(data), 65536):
            block = data[pos:pos + 65536]
            if block.count(0) != len(block):
                f.seek(pos)
                f.write(block)
    _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out))
    raw.unlink()


def qcow2_increment(previous: bytes, writes: Sequence[Write], out: Path) -> None:
    """An increment file: a qcow2 on top of ``previous`` (the state of the last backup) holding
    exactly ``writes`` (``write -s`` for data, ``write -z`` for zeros, unaligned as they come),
    then detached from it (``rebase -u -b ""``), so it carries the changed clusters only."""
    base = out.with_name(out.name + ".prev.raw")
    base.write_bytes(previous)
    _run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(out), str(len(previous)))
    commands: list[str] = []
    files = []
    for n, (offset, what) in enumerate(writes):
        if isinstance(what, int):
            commands += ["-c", f"write -z {offset} {what}"]
        else:
            src = out.with_name(f"{out.name}.w{n}")
            src.write_bytes(what)
            files.append(src)
            commands += ["-c", f"write -s {src} {offset} {len(what)}"]
    if commands:  # without any, qemu-io would read commands from stdin
        _run("qemu-io", "-f", "qcow2", *commands, str(out))
    _run("qemu-img", "rebase", "-u", "-b", "", str(out))
    for path in (base, *files):
        path.unlink()


@dataclass
class RsyncBackups:
    """The rsync backup datastore ``BACKUP_DS`` of one test: its BASE_PATH under the test's
    directory, its scripts in ``remotes``, and the backup images oned would hold."""

    cloud: Cloud
    remotes: Path
    base: Path
    tmp_dir: Path
    increments: dict[int, list[tuple[int, str, int, str]]] = field(default_factory=dict)
    vm_of: dict[int, int] = field(default_factory=dict)

    @classmethod
    def create(cls, cloud: Cloud, remotes: Path, directory: Path) -> RsyncBackups:
        base, tmp = directory / "datastores" / str(BACKUP_DS), directory / "rsync-tmp"
        base.mkdir(parents=True)
        tmp.mkdir()
        backups = cls(cloud, remotes, base, tmp)
        cloud.oned.datastores[BACKUP_DS] = backups.ds_xml()
        return backups

    def ds_xml(self) -> str:
        return docs.datastore_xml(BACKUP_DS, name="rsync-backups", ds_type=DS_TYPE_BACKUP, ds_mad="rsync",
                                  tm_mad="-", base_path=str(self.base),
                                  template={"RSYNC_HOST": "localhost", "RSYNC_USER": self.cloud.user.name,
                                            "RSYNC_TMP_DIR": str(self.tmp_dir), "DS_MAD": "rsync",
                                            "TM_MAD": "-", "TYPE": "BACKUP_DS"})

    # running the datastore's scripts --------------------------------------------------------
    def script(self, relative: str, *args: str, stdin: bytes = b"", env: Optional[dict[str, str]] = None) -> Result:
        argv = [str(self.remotes / relative), *args]
        proc = self.cloud.process(argv, stdin=stdin, env=env)
        return Result(argv, proc.returncode, proc.stdout.decode(errors="replace"),
                      proc.stderr.decode(errors="replace"), 0.0)

    def ship(self, location: str, vm_id: int, vm_xml: str, disk_ids: str = "0") -> tuple[str, int]:
        """The datastore's ``backup`` of the staging directory; (backup id, MB)."""
        data = docs.ds_driver_action_data(self.cloud.oned.datastores[BACKUP_DS], vm_xml)
        result = self.script("datastore/rsync/backup", location, disk_ids, f"one-{vm_id}", "-", str(vm_id),
                             str(BACKUP_DS), stdin=data.encode())
        assert result.rc == 0, result.stderr
        backup_id, size_mb, fmt = result.stdout.split()
        assert fmt == "raw"
        return backup_id, int(size_mb)

    def record(self, image_id: int, vm_id: int, backup_id: str, size_mb: int, *, full: bool) -> None:
        """oned's part after a backup: a FULL starts ``image_id`` anew, an INCREMENT adds to it."""
        chain = [] if full else self.increments.get(image_id, [])
        chain = [*chain, (len(chain), backup_id, size_mb, "FULL" if not chain else "INCREMENT")]
        self.increments[image_id], self.vm_of[image_id] = chain, vm_id
        self.cloud.oned.images[image_id] = self.image_xml(image_id)

    def image_xml(self, image_id: int) -> str:
        """The backup ``<IMAGE>`` (``create_backup_image``, BackupIncrements::to_xml)."""
        chain, vm_id = self.increments[image_id], self.vm_of[image_id]
        xml = docs.image_xml(image_id, name=f"{vm_id} 01-Oct 12.00.00", source=chain[0][1],
                             size_mb=sum(c[2] for c in chain), ds_id=BACKUP_DS, persistent=False,
                             image_type=IMAGE_TYPE_BACKUP, template={"VM_ID": str(vm_id)})
        root = etree.fromstring(xml)
        etree.SubElement(root.find("VMS"), "ID").text = str(vm_id)
        increments = root.find("BACKUP_INCREMENTS")
        for inc_id, source, size_mb, kind in chain:
            inc = etree.SubElement(increments, "INCREMENT")
            values = [("DATE", "1727952499"), ("ID", str(inc_id))]
            if inc_id:
                values.append(("PARENT_ID", str(inc_id - 1)))
            values += [("SIZE", str(size_mb)), ("SOURCE", source), ("TYPE", kind)]
            for tag, value in values:
                etree.SubElement(inc, tag).text = value
        return etree.tostring(root, encoding="unicode")

    def set_chain(self, image_id: int, chain: list[tuple[int, str, int, str]]) -> None:
        """oned's ``update_increments`` after increment_flatten."""
        self.increments[image_id] = chain
        self.cloud.oned.images[image_id] = self.image_xml(image_id)

    # what the datastore answers -------------------------------------------------------------
    def ls(self, image_id: int, increment: int = -1) -> dict[str, str]:
        """``ls -i <increment>`` as Datastore#ls_increment runs it (plain XML on stdin)."""
        vm_id = self.vm_of[image_id]
        data = (f"<DS_DRIVER_ACTION_DATA>\n{self.cloud.oned.datastores[BACKUP_DS]}\n"
                f"{self.cloud.oned.vms.get(vm_id, '')}\n{self.cloud.oned.images[image_id]}\n\n"
                "</DS_DRIVER_ACTION_DATA>\n")
        result = self.script("datastore/rsync/ls", "-i", str(increment), stdin=data.encode())
        assert result.rc == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def flatten(self, image_id: int, keep_last: int) -> str:
        """``increment_flatten <image>`` with KEEP_LAST; its output, recorded as oned does."""
        data = docs.ds_driver_action_data(self.cloud.oned.images[image_id], self.cloud.oned.datastores[BACKUP_DS],
                                          extra={})
        root = etree.fromstring(data)
        extra = etree.SubElement(root, "EXTRA_DATA")
        etree.SubElement(extra, "KEEP_LAST").text = str(keep_last)
        stdin = base64.b64encode(etree.tostring(root))
        result = self.script("datastore/rsync/increment_flatten", str(image_id), stdin=stdin)
        assert result.rc == 0, result.stderr
        out = result.stdout.strip()
        if out:
            _size, chain = out.split()
            old = {c[0]: c for c in self.increments[image_id]}
            new = []
            for n, element in enumerate(chain.split(",")):
                inc_id, source = element.split(":")
                size = old[int(inc_id)][2]
                new.append((int(inc_id), source, size, "FULL" if n == 0 else "INCREMENT"))
            self.set_chain(image_id, new)
        return out

    def download(self, url: str, env: Optional[dict[str, str]] = None) -> Result:
        """``downloader.sh --nodecomp <url> -``."""
        return self.script("datastore/downloader.sh", "--nodecomp", url, "-", env=env)

    def directories(self, vm_id: int) -> list[str]:
        path = self.base / str(vm_id)
        return sorted(p.name for p in path.iterdir()) if path.exists() else []


def stage_backup(stage: Path, vm_xml: str, files: dict[str, bytes | Path]) -> None:
    """A staging directory as prebackup leaves it: vm.xml (base64, 60-column lines) and the files."""
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    (stage / "vm.xml").write_bytes(base64.encodebytes(vm_xml.encode()))
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.move(str(content), stage / name)
        else:
            (stage / name).write_bytes(content)



def make_chain(backups: RsyncBackups, stage: Path, location: str, vm_id: int, image_id: int, vm_xml: str,
               disks: dict[int, bytes], steps: Sequence[dict[int, Sequence[Write]]] = ()) -> list[dict[int, bytes]]:
    """A FULL backup of ``disks`` (disk id → data) and one INCREMENT per entry of ``steps``
    (disk id → the writes since the last backup; every disk gets a file each time, as
    OpenNebula's reassembly wants), staged in ``stage``, shipped with the datastore's
    ``backup`` and recorded as oned does; the disks' data after each backup."""
    states = {disk: bytearray(data) for disk, data in disks.items()}
    history = []
    work = stage.parent / f"{stage.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    for k, writes in enumerate([{}, *steps]):
        files: dict[str, bytes | Path] = {}
        for disk in sorted(states):
            out = work / f"disk.{disk}.{k}"
            if k == 0:
                qcow2_full(bytes(states[disk]), out)
            else:
                qcow2_increment(bytes(states[disk]), writes.get(disk, ()), out)
                apply_writes(states[disk], writes.get(disk, ()))
            files[out.name] = out
        stage_backup(stage, vm_xml, files)
        backup_id, size_mb = backups.ship(location, vm_id, vm_xml, ":".join(str(d) for d in sorted(states)))
        backups.record(image_id, vm_id, backup_id, size_mb, full=k == 0)
        history.append({disk: bytes(data) for disk, data in states.items()})
    shutil.rmtree(stage)
    shutil.rmtree(work)
    return history
