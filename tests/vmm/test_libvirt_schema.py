"""The test-local libvirt schema: stock libvirt refuses a vitastor disk, the copy accepts what
Vitastor's libvirt patch accepts and nothing more."""

from __future__ import annotations

import pytest

from tests.vmm.libvirt_schema import LibvirtSchema

DOMAIN = """<domain type='kvm'>
  <name>one-1</name>
  <memory>1048576</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    {disk}
  </devices>
</domain>"""
VITASTOR = ("<disk type='network' device='disk'><source protocol='vitastor' name='one-5' {attrs}>{inner}</source>"
            "<target dev='vda' bus='virtio'/><driver name='qemu' type='raw' cache='none'/>"
            "<blockio logical_block_size='512' physical_block_size='4096'/></disk>")
HOSTS = "<host name='10.0.0.1' port='2379'/><host name='etcd2' port='2379'/>"


def vitastor(attrs: str = "", inner: str = "") -> str:
    return VITASTOR.format(attrs=attrs, inner=inner)


@pytest.mark.parametrize("disk", [
    vitastor(),
    vitastor(inner="<config file='/etc/vitastor/vitastor.conf'/>"),
    vitastor("query='/vitastor'", HOSTS + "<config file='/etc/vitastor/vitastor.conf'/>"),  # libvirt-example.xml
    vitastor().replace("device='disk'", "device='cdrom'").replace("bus='virtio'", "bus='ide'"),
], ids=["plain", "config", "query-hosts-config", "cdrom"])
def test_vitastor_disks_only_with_the_patch(libvirt_schema: LibvirtSchema, disk: str) -> None:
    libvirt_schema.check_domain(DOMAIN.format(disk=disk))
    libvirt_schema.check_disk(disk)
    with pytest.raises(AssertionError, match="does not validate"):
        libvirt_schema.check_domain(DOMAIN.format(disk=disk), stock=True)


@pytest.mark.parametrize("disk", [
    vitastor(inner="<config file='vitastor.conf'/>"),  # not an absolute path
    vitastor(inner="<config>/etc/vitastor/vitastor.conf</config>"),  # Vitastor's deploy_vitastor.py writes this
    vitastor(inner="<config file='/etc/vitastor/vitastor.conf'/><config file='/etc/v.conf'/>"),
    vitastor(inner="<snapshot name='s1'/>"),  # rbd-only children
    vitastor(inner="<auth username='admin'><secret type='ceph' usage='x'/></auth>"),
    vitastor("file='/dev/x'"),
    vitastor().replace("protocol='vitastor'", "protocol='vitastor2'"),
], ids=["relative-config", "config-text", "two-configs", "snapshot", "auth", "file-attr", "other-protocol"])
def test_what_the_patch_refuses(libvirt_schema: LibvirtSchema, disk: str) -> None:
    with pytest.raises(AssertionError, match="does not validate"):
        libvirt_schema.check_domain(DOMAIN.format(disk=disk))
    with pytest.raises(AssertionError, match="does not validate"):
        libvirt_schema.check_disk(disk)


def test_stock_disks_still_valid(libvirt_schema: LibvirtSchema) -> None:
    rbd = ("<disk type='network' device='disk'><source protocol='rbd' name='one/one-8'>"
           "<host name='mon1' port='6789'/></source><auth username='libvirt'>"
           "<secret type='ceph' uuid='0fb8a4a6-13c3-4a8c-9b0e-1e5f5c3e6c11'/></auth>"
           "<target dev='vdb' bus='virtio'/><driver name='qemu' type='raw' cache='none'/></disk>")
    file = ("<disk type='file' device='disk'><source file='/var/lib/one//datastores/100/1/disk.0'/>"
            "<target dev='vda' bus='virtio'/><driver name='qemu' type='qcow2' cache='none'/></disk>")
    for disk in (rbd, file):
        for stock in (True, False):
            libvirt_schema.check_domain(DOMAIN.format(disk=disk), stock=stock)
        libvirt_schema.check_disk(disk)
