"""onevita.vmm.disk_xml against the stock ``vmm/kvm/attach_disk``, in-process: for each rule of
the stock script, our ``<disk>`` built with the stock's own file source is the disk the stock
script prints (written out below from reading the script of the release named in each test;
compared as element trees, tests/vmm/stock_attach.py) and valid for libvirt's schema."""

from __future__ import annotations

import base64
from typing import Mapping, Optional

import pytest
from lxml import etree

from onevita.errors import BadRequest, ConfigError
from onevita.vmm.disk_xml import AttachDisk, disk_element
from tests.captures import HERE as CAPTURES
from tests.captures import captures
from tests.vmm.libvirt_schema import LibvirtSchema
from tests.vmm.stock_attach import shape

SRC = "/var/lib/one//datastores/100/14/disk.1"
KVMRC = {"DEFAULT_ATTACH_CACHE": "none", "DEFAULT_ATTACH_DISCARD": "unmap"}  # as kvmrc ships (6.8 to 7.4)
V68, V6101, V6102, V70, V701, V702, V72, V74 = ((6, 8, 3), (6, 10, 1), (6, 10, 2), (7, 0, 0), (7, 0, 1),
                                                (7, 0, 2), (7, 2, 0), (7, 4, 0))
DRIVER = "<driver name='qemu' type='raw' cache='none' discard='unmap'/>"


def build(release: tuple[int, ...], disk: Mapping[str, str], *, kvmrc: Optional[Mapping[str, str]] = None,
          target: str = "vdb", vcpu: str = "", vm_queues: str = "", iothreads: str = "") -> etree._Element:
    """Our disk for DISK 1 (``disk`` over a plain FILE image disk) with the stock file source."""
    attrs = {"DISK_ID": "1", "TYPE": "FILE", "DRIVER": "raw", "READONLY": "NO", "TARGET": target, **disk}
    inputs = AttachDisk(release=release, disk=attrs, kvmrc=KVMRC if kvmrc is None else kvmrc, target=target,
                        vcpu=vcpu, vm_virtio_blk_queues=vm_queues, domain_iothreads=iothreads)
    return disk_element(inputs, etree.Element("source", file=SRC), "file")


def stock(driver: str = DRIVER, after_target: str = "", *, device: str = "disk", target: str = "vdb") -> str:
    """A disk as the stock script prints it: its ``<source>`` with the empty SOURCE_ARGS space."""
    return (f"<disk type='file' device='{device}'>{driver}<source file='{SRC}' ></source>"
            f"<target dev='{target}'/>{after_target}</disk>")


def check(ours: etree._Element, expected: str, schema: LibvirtSchema) -> None:
    assert shape(ours) == shape(expected), etree.tostring(ours).decode()
    schema.check_disk(ours)


# driver -------------------------------------------------------------------------------------
@pytest.mark.parametrize("release", [V68, V6102, V702, V74])
def test_kvmrc_defaults(release: tuple[int, ...], libvirt_schema: LibvirtSchema) -> None:
    """Every release: CACHE=${CACHE:-$DEFAULT_ATTACH_CACHE}, then 'default'; DISCARD and IO
    from their DEFAULT_ATTACH_*; attribute order cache, io, discard."""
    check(build(release, {}), stock(), libvirt_schema)
    check(build(release, {}, kvmrc={}), stock("<driver name='qemu' type='raw' cache='default'/>"), libvirt_schema)
    rc = {**KVMRC, "DEFAULT_ATTACH_IO": "native"}
    check(build(release, {}, kvmrc=rc),
          stock("<driver name='qemu' type='raw' cache='none' io='native' discard='unmap'/>"), libvirt_schema)
    disk = {"CACHE": "writeback", "IO": "threads", "DISCARD": "ignore", "DRIVER": "qcow2"}
    check(build(release, disk, kvmrc=rc),
          stock("<driver name='qemu' type='qcow2' cache='writeback' io='threads' discard='ignore'/>"),
          libvirt_schema)


@pytest.mark.parametrize(("release", "driver"), [(V72, "qcow2"), (V74, "raw")])
def test_cdrom(release: tuple[int, ...], driver: str, libvirt_schema: LibvirtSchema) -> None:
    """TYPE cdrom (any case) is a cdrom device; from 7.4 its driver is always raw. READONLY is
    what makes it readonly, as for any disk."""
    ours = build(release, {"TYPE": "CDROM", "DRIVER": "qcow2", "READONLY": "YES"}, target="hdb")
    expected = stock(f"<driver name='qemu' type='{driver}' cache='none' discard='unmap'/>", "<readonly/>",
                     device="cdrom", target="hdb")
    check(ours, expected, libvirt_schema)
    check(build(release, {"TYPE": "rbd_cdrom"}, target="hdb"), stock(device="cdrom", target="hdb"), libvirt_schema)
    block = build(release, {"TYPE": "BLOCK_CDROM"}, target="hdb")
    assert block.get("device") == ("cdrom" if release >= V74 else "disk")


# queues and iothread ------------------------------------------------------------------------
@pytest.mark.parametrize(("release", "key"), [(V68, "DEFAULT_VIRTIO_BLK_QUEUES"),
                                              (V6101, "DEFAULT_VIRTIO_BLK_QUEUES"),
                                              (V6102, "DEFAULT_ATTACH_VIRTIO_BLK_QUEUES"),
                                              (V74, "DEFAULT_ATTACH_VIRTIO_BLK_QUEUES")])
def test_queues_default_key(release: tuple[int, ...], key: str, libvirt_schema: LibvirtSchema) -> None:
    """Up to 6.10.1 the stock script reads DEFAULT_VIRTIO_BLK_QUEUES, from 6.10.2 the
    DEFAULT_ATTACH_ one kvmrc documents; auto means the VM's VCPU."""
    queued = "<driver name='qemu' type='raw' cache='none' discard='unmap' queues='{}'/>"
    other = ("DEFAULT_ATTACH_VIRTIO_BLK_QUEUES" if key == "DEFAULT_VIRTIO_BLK_QUEUES"
             else "DEFAULT_VIRTIO_BLK_QUEUES")
    check(build(release, {}, kvmrc={**KVMRC, key: "2", other: "7"}), stock(queued.format(2)), libvirt_schema)
    check(build(release, {}, kvmrc={**KVMRC, key: "auto"}, vcpu="6"), stock(queued.format(6)), libvirt_schema)
    check(build(release, {}, kvmrc={**KVMRC, key: "auto"}), stock(queued.format(1)), libvirt_schema)  # VCPU:-1
    check(build(release, {"VIRTIO_BLK_QUEUES": "3"}, kvmrc={**KVMRC, key: "auto"}, vcpu="6"),
          stock(queued.format(3)), libvirt_schema)


def test_queues_and_iothread_before_74_on_any_device(libvirt_schema: LibvirtSchema) -> None:
    """Up to 7.2 the DISK's IOTHREAD and queues go on every device, iothread before queues."""
    disk = {"IOTHREAD": "2", "VIRTIO_BLK_QUEUES": "4"}
    expected = stock("<driver name='qemu' type='raw' cache='none' discard='unmap' iothread='2' queues='4'/>",
                     "<address type='drive' controller='0' bus='0' target='1' unit='0'/>", target="sdb")
    check(build(V72, disk, target="sdb"), expected, libvirt_schema)


def test_queues_74_virtio_only_and_vm_features(libvirt_schema: LibvirtSchema) -> None:
    """7.4: queues only on a virtio disk; DISK, then the VM's FEATURES, then kvmrc."""
    rc = {**KVMRC, "DEFAULT_ATTACH_VIRTIO_BLK_QUEUES": "8"}
    queued = "<driver name='qemu' type='raw' cache='none' discard='unmap' queues='{}'/>"
    check(build(V74, {}, kvmrc=rc, vm_queues="auto", vcpu="3"), stock(queued.format(3)), libvirt_schema)
    check(build(V74, {"VIRTIO_BLK_QUEUES": "2"}, kvmrc=rc, vm_queues="5"), stock(queued.format(2)), libvirt_schema)
    check(build(V74, {}, kvmrc=rc), stock(queued.format(8)), libvirt_schema)
    check(build(V74, {"IOTHREAD": "1"}, kvmrc=rc, target="sdb", iothreads="2"),
          stock(after_target="<address type='drive' controller='0' bus='0' target='1' unit='0'/>", target="sdb"),
          libvirt_schema)
    check(build(V74, {"TYPE": "CDROM"}, kvmrc=rc, target="vdc"), stock(device="cdrom", target="vdc"), libvirt_schema)


@pytest.mark.parametrize(("disk", "kvmrc", "iothreads", "expected"), [
    ({"IOTHREAD": "2"}, {}, "4", "2"),
    ({"IOTHREAD": "9"}, {}, "4", "4"),  # at most the domain's count
    ({}, {}, "4", "2"),  # DISK_ID 1 % 4 + 1
    ({"IOTHREAD": "0"}, {}, "4", "2"),  # not positive: spread by DISK_ID
    ({}, {"DEFAULT_ATTACH_VIRTIO_BLK_IOTHREAD": "3"}, "4", "3"),
    ({"DISK_ID": "6"}, {}, "4", "3"),
    ({"IOTHREAD": "2"}, {}, "", None),  # a domain without <iothreads>
    ({"IOTHREAD": "2"}, {}, "0", None),
    ({"IOTHREAD": "2"}, {}, "x", None),
])
def test_iothread_74(disk: Mapping[str, str], kvmrc: Mapping[str, str], iothreads: str, expected: Optional[str],
                     libvirt_schema: LibvirtSchema) -> None:
    """7.4's get_driver_iothread: chosen among the running domain's iothreads."""
    attr = f" iothread='{expected}'" if expected else ""
    check(build(V74, disk, kvmrc={**KVMRC, **kvmrc}, iothreads=iothreads),
          stock(f"<driver name='qemu' type='raw' cache='none' discard='unmap'{attr}/>"), libvirt_schema)


# iotune --------------------------------------------------------------------------------------
IOTUNE_CASES = {
    "total-with-max-and-length": ({"TOTAL_BYTES_SEC": "1000", "TOTAL_BYTES_SEC_MAX": "2000",
                                   "TOTAL_BYTES_SEC_MAX_LENGTH": "10"},
                                  "<total_bytes_sec>1000</total_bytes_sec><total_bytes_sec_max>2000"
                                  "</total_bytes_sec_max><total_bytes_sec_max_length>10</total_bytes_sec_max_length>"),
    "max-not-above-base": ({"READ_IOPS_SEC": "500", "READ_IOPS_SEC_MAX": "500", "READ_IOPS_SEC_MAX_LENGTH": "5"},
                           "<read_iops_sec>500</read_iops_sec>"),
    "max-without-base": ({"WRITE_BYTES_SEC_MAX": "300", "WRITE_BYTES_SEC_MAX_LENGTH": "7"},
                         "<write_bytes_sec_max>300</write_bytes_sec_max>"
                         "<write_bytes_sec_max_length>7</write_bytes_sec_max_length>"),
    "total-over-read-write": ({"TOTAL_IOPS_SEC": "100", "READ_IOPS_SEC": "50", "WRITE_BYTES_SEC": "9",
                               "READ_BYTES_SEC": "8"},
                              "<read_bytes_sec>8</read_bytes_sec><write_bytes_sec>9</write_bytes_sec>"
                              "<total_iops_sec>100</total_iops_sec>"),
    "total-max-alone-wins": ({"TOTAL_BYTES_SEC_MAX": "10", "READ_BYTES_SEC": "8"},
                             "<total_bytes_sec_max>10</total_bytes_sec_max>"),
    "size-iops-with-iops": ({"WRITE_IOPS_SEC": "70", "SIZE_IOPS_SEC": "4096"},
                            "<write_iops_sec>70</write_iops_sec><size_iops_sec>4096</size_iops_sec>"),
    "size-iops-without-iops-base": ({"READ_BYTES_SEC": "1", "TOTAL_IOPS_SEC_MAX": "9", "SIZE_IOPS_SEC": "4096"},
                                    "<read_bytes_sec>1</read_bytes_sec><total_iops_sec_max>9</total_iops_sec_max>"),
    "max-zero-empty-iotune": ({"READ_BYTES_SEC_MAX": "0"}, ""),
}


@pytest.mark.parametrize("case", list(IOTUNE_CASES))
@pytest.mark.parametrize("release", [V68, V74])
def test_iotune(case: str, release: tuple[int, ...], libvirt_schema: LibvirtSchema) -> None:
    """insert_sec and the TOTAL/READ/WRITE choice, the same in every release."""
    disk, inner = IOTUNE_CASES[case]
    check(build(release, disk), stock(after_target=f"<iotune>{inner}</iotune>"), libvirt_schema)


def test_iotune_defaults_and_lengths_alone(libvirt_schema: LibvirtSchema) -> None:
    """kvmrc's DEFAULT_ATTACH_* limits fill what the DISK leaves empty, so a default TOTAL_*
    overrides the DISK's READ_*/WRITE_*; *_MAX_LENGTH or SIZE_IOPS_SEC alone make no iotune."""
    rc = {**KVMRC, "DEFAULT_ATTACH_TOTAL_BYTES_SEC": "5000", "DEFAULT_ATTACH_READ_IOPS_SEC": "20"}
    check(build(V70, {"READ_BYTES_SEC": "100", "WRITE_IOPS_SEC": "30"}, kvmrc=rc),
          stock(after_target="<iotune><total_bytes_sec>5000</total_bytes_sec><read_iops_sec>20</read_iops_sec>"
                "<write_iops_sec>30</write_iops_sec></iotune>"), libvirt_schema)
    check(build(V70, {"TOTAL_BYTES_SEC_MAX_LENGTH": "3", "SIZE_IOPS_SEC": "4096"}), stock(), libvirt_schema)


# the other children ---------------------------------------------------------------------------
@pytest.mark.parametrize(("release", "serial"), [(V6102, None), (V701, None), (V702, "ab-c.d_ex"), (V74, "ab-c.d_ex")])
def test_serial(release: tuple[int, ...], serial: Optional[str], libvirt_schema: LibvirtSchema) -> None:
    """From 7.0.2 DISK/SERIAL without anything but letters, digits, '.', '_' and '-'; a serial
    with nothing left gives none (the stock script's empty <serial/>, which libvirt reads as none)."""
    after = f"<serial>{serial}</serial>" if serial else ""
    check(build(release, {"SERIAL": "a b<-c.d_e$(x)"}), stock(after_target=after), libvirt_schema)
    check(build(release, {"SERIAL": "'$ <>"}), stock(), libvirt_schema)


@pytest.mark.parametrize(("release", "target", "number"), [
    (V68, "sda", 0), (V72, "sdb", 1), (V74, "sdz", 25),
    (V72, "sdaa", 0),  # up to 7.2 only the first letter counts
    (V74, "sdaa", 26), (V74, "sdiv", 255), (V74, "sdiw", None), (V74, "sd1", None), (V72, "sd1", None),
    (V74, "hdb", None), (V74, "vdb", None),
])
def test_scsi_address(release: tuple[int, ...], target: str, number: Optional[int],
                      libvirt_schema: LibvirtSchema) -> None:
    """An sd* DISK/TARGET gets a drive address on controller 0 (disk_target_number from 7.4).
    libvirt's schema has drive targets of two digits, libvirt's parser takes any number: a
    target of 100 or more is what the stock script gives, and not checked against the schema."""
    after = (f"<address type='drive' controller='0' bus='0' target='{number}' unit='0'/>"
             if number is not None else "")
    ours = build(release, {}, target=target)
    assert shape(ours) == shape(stock(after_target=after, target=target))
    if number is None or number < 100:
        libvirt_schema.check_disk(ours)


def test_boot_readonly_shareable_luks_in_order(libvirt_schema: LibvirtSchema) -> None:
    """7.0.2's order after the target: boot, readonly, shareable, encryption, iotune, address,
    serial; READONLY and SHAREABLE compared lowercased with 'yes'."""
    secret = "5f1b6b3e-2c1d-4f7a-9a57-0d3c4b2a1e90"
    disk = {"ORDER": "2", "READONLY": "Yes", "SHAREABLE": "yes", "LUKS_SECRET": secret, "TOTAL_IOPS_SEC": "9",
            "SERIAL": "s1"}
    expected = stock(after_target=(
        " <boot order='2'/><readonly/><shareable/><encryption format='luks'>\n"
        f"                <secret type='passphrase' uuid='{secret}'/>              </encryption>"
        "<iotune><total_iops_sec>9</total_iops_sec></iotune>"
        "<address type='drive' controller='0' bus='0' target='2' unit='0'/><serial>s1</serial>"), target="sdc")
    check(build(V702, disk, target="sdc"), expected, libvirt_schema)
    check(build(V702, {"READONLY": "1", "SHAREABLE": "NO"}), stock(), libvirt_schema)


# refused values -------------------------------------------------------------------------------
@pytest.mark.parametrize(("disk", "named"), [
    ({"CACHE": "none' io='native"}, "DISK CACHE"),
    ({"IO": "<x/>"}, "DISK IO"),
    ({"DISCARD": "$(reboot)"}, "DISK DISCARD"),
    ({"DRIVER": "raw\"/><x"}, "DISK DRIVER"),
    ({"TYPE": "cd rom"}, "DISK TYPE"),
    ({"TOTAL_BYTES_SEC": "1e6"}, "DISK TOTAL_BYTES_SEC"),
    ({"READ_IOPS_SEC_MAX": "-1"}, "DISK READ_IOPS_SEC_MAX"),
    ({"WRITE_BYTES_SEC": "18446744073709551616"}, "DISK WRITE_BYTES_SEC"),
    ({"ORDER": "1'"}, "DISK ORDER"),
    ({"IOTHREAD": "`id`"}, "DISK IOTHREAD"),
    ({"VIRTIO_BLK_QUEUES": "many"}, "DISK VIRTIO_BLK_QUEUES"),
    ({"LUKS_SECRET": "x' /><y"}, "DISK LUKS_SECRET"),
    ({"TARGET": "sd'a"}, "DISK TARGET"),
])
def test_template_values_refused(disk: Mapping[str, str], named: str) -> None:
    with pytest.raises(BadRequest, match=named):
        build(V702, disk)


def test_vcpu_and_kvmrc_values_refused() -> None:
    with pytest.raises(BadRequest, match="VM VCPU"):
        build(V702, {"VIRTIO_BLK_QUEUES": "auto"}, vcpu="2;x")
    with pytest.raises(BadRequest, match="VM FEATURES/VIRTIO_BLK_QUEUES"):
        build(V74, {}, vm_queues="$(x)")
    with pytest.raises(ConfigError, match="DEFAULT_ATTACH_CACHE of kvmrc"):
        build(V702, {}, kvmrc={"DEFAULT_ATTACH_CACHE": "none io"})
    with pytest.raises(ConfigError, match="DEFAULT_ATTACH_TOTAL_IOPS_SEC of kvmrc"):
        build(V702, {}, kvmrc={"DEFAULT_ATTACH_TOTAL_IOPS_SEC": "lots"})
    build(V702, {"CACHE": "none"}, kvmrc={"DEFAULT_ATTACH_CACHE": "no good"})  # not read: the DISK has one


# a real OpenNebula 7.0.2 (tests/captures) ---------------------------------------------------------
def test_captured_stock_attach_702(libvirt_schema: LibvirtSchema) -> None:
    """The disk the stock attach_disk of a real 7.0.2 gave virsh for a DISK with CACHE, DISCARD,
    IO, iotune limits and SERIAL (an ssh-TM image, so the stock script ran) is the one we build
    from that call's argv and action data, with its file source; its kvmrc was as shipped."""
    (call,) = [c for c in captures("7.0.2") if c.file == "054533.572-vmm-attach_disk.vitastor.json"]
    data = etree.fromstring(base64.b64decode(call.argv[4]))
    vm = data.find("VM")
    assert vm is not None
    (disk,) = [{c.tag: c.text or "" for c in d} for d in vm.iterfind("TEMPLATE/DISK")
               if d.findtext("ATTACH") == "YES"]
    inputs = AttachDisk(release=(7, 0, 2), disk=disk, kvmrc=KVMRC, target=call.argv[2],
                        vcpu=vm.findtext("TEMPLATE/VCPU") or "")
    ours = disk_element(inputs, etree.Element("source", file=call.argv[1]), "file")
    captured = (CAPTURES / "7.0.2" / "virsh" / "attach-disk5-stock-ssh-fsimg.xml").read_bytes()
    check(ours, captured.decode(), libvirt_schema)
