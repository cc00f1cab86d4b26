"""The vTPM state jobs on their own: what disk.tpm.0 holds, and archives that try to write
outside the VM directory's ``tpm``."""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path

import pytest

from onevita.errors import BadRequest, OnevitaError
from onevita.vmm.vtpm import restore_state, save_state


def archive(**files: bytes) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name.replace("__", "/"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


def test_save_then_restore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEVITA_REMOTES", str(tmp_path / "remotes"))
    (tmp_path / "tpm").mkdir()
    (tmp_path / "tpm" / "tpm2-00.permall").write_bytes(b"state")
    saved = save_state("one-12", str(tmp_path))
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(saved)), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["tpm", "tpm/tpm2-00.permall"]  # tar zcf disk.tpm.0 -C vm_dir tpm
    (tmp_path / "tpm" / "tpm2-00.permall").write_bytes(b"newer")
    (tmp_path / "tpm" / "stale").write_bytes(b"x")
    restore_state(str(tmp_path), saved)
    assert sorted(p.name for p in (tmp_path / "tpm").iterdir()) == ["tpm2-00.permall"]
    assert (tmp_path / "tpm" / "tpm2-00.permall").read_bytes() == b"state"


def test_no_state_to_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEVITA_REMOTES", str(tmp_path / "remotes"))
    with pytest.raises(OnevitaError, match=f"the VM has a vTPM but {tmp_path}/tpm does not exist"):
        save_state("one-12", str(tmp_path))


@pytest.mark.parametrize("name", ["tpm__..__..__escaped", "elsewhere", "__abs"])
def test_entries_outside_tpm_are_refused_and_nothing_changes(tmp_path: Path, name: str) -> None:
    (tmp_path / "tpm").mkdir()
    (tmp_path / "tpm" / "keep").write_bytes(b"kept")
    with pytest.raises(BadRequest, match="unexpected entry .* in the vTPM state of the backup"):
        restore_state(str(tmp_path), archive(**{name: b"evil"}))
    assert (tmp_path / "tpm" / "keep").read_bytes() == b"kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tpm"]
