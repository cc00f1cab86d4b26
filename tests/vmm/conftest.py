"""The libvirt domain schema (Debian's libvirt0, with Vitastor's change in a session copy)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

from tests.vmm.libvirt_schema import MISSING, LibvirtSchema, available


@pytest.fixture(scope="session")
def libvirt_schema(tmp_path_factory: pytest.TempPathFactory) -> LibvirtSchema:
    """libvirt's schema, as shipped and with the ``vitastor`` network disk protocol; skips the
    test where libvirt0's schemas are not installed."""
    if not available():
        pytest.skip(MISSING)
    return LibvirtSchema.build(tmp_path_factory.mktemp("libvirt-schemas"))


# kvmrc as OpenNebula ships it (6.8 to 7.4), in our words: the two defaults it sets, among
# settings attach does not read
SHIPPED_KVMRC = """export LANG=C
export LIBVIRT_URI=qemu:///system
export SHUTDOWN_TIMEOUT=180
# default cache and discard of hot-attached disks
DEFAULT_ATTACH_CACHE=none
DEFAULT_ATTACH_DISCARD=unmap
#DEFAULT_ATTACH_IO=
#DEFAULT_ATTACH_VIRTIO_BLK_QUEUES=
#DEFAULT_ATTACH_TOTAL_BYTES_SEC=
DEFAULT_ATTACH_NIC_MODEL=virtio
"""


@dataclass
class KvmRemotes:
    """``etc/vmm/kvm/kvmrc`` and ``VERSION`` of the front-end's remotes tree (dist/remotes)."""

    root: Path

    @property
    def kvmrc_path(self) -> Path:
        return self.root / "etc" / "vmm" / "kvm" / "kvmrc"

    def kvmrc(self, text: str) -> None:
        self.kvmrc_path.parent.mkdir(parents=True, exist_ok=True)
        self.kvmrc_path.write_text(text)

    def version(self, text: Optional[str]) -> None:
        """Write VERSION, or remove it (None)."""
        if text is None:
            (self.root / "VERSION").unlink(missing_ok=True)
        else:
            (self.root / "VERSION").write_text(text)


@pytest.fixture()
def kvm_remotes(built: Path) -> Iterator[KvmRemotes]:
    """The shipped kvmrc and the VERSION of OpenNebula 7.0.2 in dist/remotes unless the test writes
    others; removed afterwards (directories only when left empty: other sessions may share the tree)."""
    remotes = KvmRemotes(built)
    remotes.kvmrc(SHIPPED_KVMRC)
    remotes.version("7.0.2")
    try:
        yield remotes
    finally:
        remotes.version(None)
        remotes.kvmrc_path.unlink(missing_ok=True)
        for directory in (remotes.kvmrc_path.parent, remotes.kvmrc_path.parent.parent, built / "etc"):
            try:
                directory.rmdir()
            except OSError:
                break
