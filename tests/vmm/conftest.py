"""The libvirt domain schema (Debian's libvirt0, with Vitastor's change in a session copy)."""

from __future__ import annotations

import pytest

from tests.vmm.libvirt_schema import MISSING, LibvirtSchema, available


@pytest.fixture(scope="session")
def libvirt_schema(tmp_path_factory: pytest.TempPathFactory) -> LibvirtSchema:
    """libvirt's schema, as shipped and with the ``vitastor`` network disk protocol; skips the
    test where libvirt0's schemas are not installed."""
    if not available():
        pytest.skip(MISSING)
    return LibvirtSchema.build(tmp_path_factory.mktemp("libvirt-schemas"))
