"""vmm/kvm/attach_disk.vitastor through its dist/remotes link: a Vitastor DISK[ATTACH=YES]
becomes the disk the stock ``vmm/kvm/attach_disk`` would build for it, with the Vitastor network
source, attached with ``virsh attach-device`` on the host (a recording fake virsh, named by
VIRSH); another driver's disk goes to the host's stock attach_disk. Every device given to virsh
validates as a ``<disk>`` against libvirt's schema with Vitastor's change
(tests/vmm/libvirt_schema.py).

The parity cases write out the disk the stock script prints for the same DISK, kvmrc and
release (with its own ``<source file=…>``), read from that release's attach_disk and
get_disk_information; tests/vmm/stock_attach.py turns it into the Vitastor disk we must send."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import pytest
from lxml import etree

from tests.cloud import SYSTEM_DS, Cloud, Result
from tests.harness import documents as docs
from tests.vmm.conftest import SHIPPED_KVMRC, KvmRemotes
from tests.vmm.libvirt_schema import LibvirtSchema
from tests.vmm.stock_attach import as_vitastor, shape, vitastor_source

pytestmark = pytest.mark.usefixtures("kvm_remotes")

VM_ID = 14
DEPLOY_ID = f"one-{VM_ID}"
SYSDIR = f"{docs.DATASTORE_LOCATION}/{SYSTEM_DS}/{VM_ID}"
CEPH_DS, SSH_DS = 102, 1
CEPH = {"DISK_TYPE": "RBD", "POOL_NAME": "one", "CEPH_HOST": "ceph-mon1:6789", "CEPH_USER": "libvirt",
        "CEPH_SECRET": "0fb8a4a6-13c3-4a8c-9b0e-1e5f5c3e6c11"}
RECORDER = """#!/bin/sh
# {what}, recording: argv and stdin.
dir="$0.calls"
mkdir -p "$dir"
cat > "$dir/stdin"
printf '%s\\n' "$@" > "$dir/argv"
{tail}
"""
# virsh: dumpxml prints $0.domain (fails without it) and records its argv apart
VIRSH = """#!/bin/sh
# virsh, recording: argv and stdin of attach-device; dumpxml answers with $0.domain.
dir="$0.calls"
mkdir -p "$dir"
for arg; do
    if [ "$arg" = dumpxml ]; then
        printf '%s\\n' "$@" > "$dir/dumpxml-argv"
        exec cat "$0.domain"
    fi
done
cat > "$dir/stdin"
printf '%s\\n' "$@" > "$dir/argv"
{tail}
"""


@dataclass
class Recorder:
    script: Path

    @property
    def calls(self) -> Path:
        return self.script.with_name(self.script.name + ".calls")

    def argv(self) -> list[str]:
        return (self.calls / "argv").read_text().splitlines()

    def stdin(self) -> bytes:
        return (self.calls / "stdin").read_bytes()

    def dumpxml_argv(self) -> Optional[list[str]]:
        path = self.calls / "dumpxml-argv"
        return path.read_text().splitlines() if path.exists() else None

    def domain(self, xml: str) -> None:
        """What ``virsh dumpxml`` prints."""
        self.script.with_name(self.script.name + ".domain").write_text(xml)

    def fail(self, message: str) -> None:
        self.script.write_text(VIRSH.format(tail=f"echo '{message}' >&2\nexit 1"))


def _recorder(script: Path, template: str, tail: str, what: str = "") -> Recorder:
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(template.format(what=what, tail=tail))
    script.chmod(0o755)
    recorder = Recorder(script)
    shutil.rmtree(recorder.calls, ignore_errors=True)
    return recorder


@pytest.fixture()
def virsh(tmp_path: Path) -> Recorder:
    return _recorder(tmp_path / "bin" / "virsh", VIRSH, "echo 'Device attached successfully'")


@pytest.fixture()
def stock_attach(world: Path) -> Iterator[Recorder]:
    """``<SCRIPTS_REMOTE_DIR>/vmm/kvm/attach_disk`` on the hosts, removed afterwards."""
    recorder = _recorder(world / "host-remotes" / "vmm" / "kvm" / "attach_disk", RECORDER,
                         "echo stock-out\necho stock-err >&2\nexit 3", "stock attach_disk")
    yield recorder
    recorder.script.unlink()
    shutil.rmtree(recorder.calls, ignore_errors=True)


def with_template(vm: str, extra: Mapping[str, object]) -> str:
    """The VM document with ``extra`` added to its TEMPLATE (a mapping value: a vector such as
    FEATURES)."""
    root = etree.fromstring(vm.encode(), etree.XMLParser(strip_cdata=False))
    template = root.find("TEMPLATE")
    assert template is not None
    for key, value in extra.items():
        element = etree.SubElement(template, key)
        if isinstance(value, Mapping):
            for sub, text in value.items():
                etree.SubElement(element, sub).text = etree.CDATA(str(text))
        else:
            element.text = etree.CDATA(str(value))
    return etree.tostring(root, encoding="unicode")


def action_data(cloud: Cloud, attach: Mapping[str, str], *, disks: Optional[Sequence[Mapping[str, str]]] = None,
                context_disk_id: Optional[int] = None, template: Optional[Mapping[str, object]] = None) -> str:
    """VMM_DRIVER_ACTION_DATA (base64) of VM 14 with its ``disks`` (default: a boot disk), the
    disk to attach, and ``template`` added to the VM's TEMPLATE."""
    if disks is None:
        disks = [docs.image_disk(0, 5, source=f"{cloud.prefix}-5", clone=True, size_mb=64)]
    vm = docs.vm_xml(VM_ID, disks=[*disks, {**attach, "ATTACH": "YES"}], deploy_id=DEPLOY_ID,
                     context_disk_id=context_disk_id)
    if template:
        vm = with_template(vm, template)
    return docs.encode_b64(docs.vmm_action_data(vm, cloud.oned.datastores[SYSTEM_DS], host="node1",
                                                deploy_id=DEPLOY_ID))


def run_attach(cloud: Cloud, virsh: Recorder, data: str, *, disk_id: int = 1, target: str = "vdb",
               arg: Optional[str] = None) -> Result:
    return cloud.run("vmm/attach_disk.vitastor", DEPLOY_ID, f"{SYSDIR}/disk.{disk_id}", target, "1",
                     data if arg is None else arg, str(VM_ID), "node1",
                     stdin=data.encode(), env={"VIRSH": str(virsh.script)})


def device(virsh: Recorder, schema: LibvirtSchema) -> etree._Element:
    """The device virsh got: a valid ``<disk>`` for libvirt with Vitastor's patch."""
    disk = etree.fromstring(virsh.stdin())
    schema.check_disk(disk)
    return disk


def stock_disk(inner: str, *, disk_id: int = 1, target: str = "vdb", device: str = "disk",
               after_target: str = "") -> str:
    """A disk as the stock attach_disk prints it for a TYPE FILE (or CDROM) disk: ``inner`` is its
    ``<driver>``; the source is ``<sysdir>/disk.N`` with the empty SOURCE_ARGS' space."""
    return (f"<disk type='file' device='{device}'>{inner}<source file='{SYSDIR}/disk.{disk_id}' ></source>"
            f"<target dev='{target}'/>{after_target}</disk>")


def expect_parity(cloud: Cloud, virsh: Recorder, schema: LibvirtSchema, stock: str, image: str,
                  conf: Optional[str] = "") -> None:
    """virsh got the stock disk with only the source turned into Vitastor's."""
    conf = str(cloud.cluster.config_path) if conf == "" else conf
    expected = as_vitastor(stock, vitastor_source(image, conf))
    got = device(virsh, schema)
    assert shape(got) == shape(expected), f"\n got: {etree.tostring(got).decode()}\nwant: {etree.tostring(expected).decode()}"


# the stock disk, per kind of attribute --------------------------------------------------------
D = "<driver name='qemu' type='raw' cache='none' discard='unmap'/>"  # shipped kvmrc's cache and discard


@dataclass(frozen=True)
class Case:
    """One parity case: the DISK attributes over a clone of image 6, kvmrc (None: as shipped),
    the release, the VM's TEMPLATE additions, the target, what ``virsh dumpxml`` prints (None:
    it fails) and the stock disk."""

    disk: Mapping[str, str]
    stock: str
    kvmrc: Optional[str] = None
    release: str = "7.0.2"
    template: Optional[Mapping[str, object]] = None
    target: str = "vdb"
    dumpxml: Optional[str] = None


DOMAIN_IOTHREADS = "<domain type='kvm'><name>one-14</name><iothreads>4</iothreads><devices/></domain>"
CASES = {
    # 7.0.2: CACHE=${CACHE:-$DEFAULT_ATTACH_CACHE}, DISCARD and IO likewise; driver attribute order
    "kvmrc-defaults": Case({}, stock_disk(D)),
    "disk-cache-io-discard": Case({"CACHE": "writeback", "IO": "io_uring", "DISCARD": "ignore"},
                                  stock_disk("<driver name='qemu' type='raw' cache='writeback' io='io_uring' "
                                             "discard='ignore'/>"),
                                  kvmrc=SHIPPED_KVMRC + "DEFAULT_ATTACH_IO=native\n"),
    "kvmrc-io-no-cache": Case({}, stock_disk("<driver name='qemu' type='raw' cache='default' io='threads'/>"),
                              kvmrc="export DEFAULT_ATTACH_IO='threads'\n"),
    # insert_sec: a max only above its base, its length only with it; TOTAL_* over READ/WRITE_*;
    # size_iops_sec with an IOPS base limit
    "iotune": Case({"TOTAL_BYTES_SEC": "1000", "TOTAL_BYTES_SEC_MAX": "3000", "TOTAL_BYTES_SEC_MAX_LENGTH": "60",
                    "READ_BYTES_SEC": "5", "READ_IOPS_SEC_MAX": "200", "READ_IOPS_SEC_MAX_LENGTH": "30",
                    "WRITE_IOPS_SEC": "50", "WRITE_IOPS_SEC_MAX": "40", "WRITE_IOPS_SEC_MAX_LENGTH": "9",
                    "SIZE_IOPS_SEC": "8192"},
                   stock_disk(D, after_target="<iotune><total_bytes_sec>1000</total_bytes_sec>"
                              "<total_bytes_sec_max>3000</total_bytes_sec_max>"
                              "<total_bytes_sec_max_length>60</total_bytes_sec_max_length>"
                              "<read_iops_sec_max>200</read_iops_sec_max>"
                              "<read_iops_sec_max_length>30</read_iops_sec_max_length>"
                              "<write_iops_sec>50</write_iops_sec><size_iops_sec>8192</size_iops_sec></iotune>")),
    # kvmrc's DEFAULT_ATTACH_* limits fill the empty ones: a default TOTAL_IOPS_SEC beats the DISK's READ_IOPS_SEC
    "iotune-kvmrc": Case({"WRITE_BYTES_SEC": "2097152", "READ_IOPS_SEC": "10"},
                         stock_disk(D, after_target="<iotune><read_bytes_sec>1048576</read_bytes_sec>"
                                    "<write_bytes_sec>2097152</write_bytes_sec><total_iops_sec>400</total_iops_sec>"
                                    "</iotune>"),
                         kvmrc=SHIPPED_KVMRC + "DEFAULT_ATTACH_TOTAL_IOPS_SEC=400\n"
                         "DEFAULT_ATTACH_READ_BYTES_SEC=\"1048576\"\n"),
    # auto: the VM's VCPU
    "queues-auto": Case({"VIRTIO_BLK_QUEUES": "auto"},
                        stock_disk("<driver name='qemu' type='raw' cache='none' discard='unmap' queues='4'/>"),
                        template={"VCPU": "4"}),
    # 6.8.3 reads DEFAULT_VIRTIO_BLK_QUEUES, not kvmrc's documented DEFAULT_ATTACH_ one
    "queues-6.8": Case({}, stock_disk("<driver name='qemu' type='raw' cache='none' discard='unmap' queues='2'/>"),
                       kvmrc=SHIPPED_KVMRC + "DEFAULT_VIRTIO_BLK_QUEUES=2\nDEFAULT_ATTACH_VIRTIO_BLK_QUEUES=7\n",
                       release="6.8.3"),
    # 7.4: the VM's FEATURES/VIRTIO_BLK_QUEUES before kvmrc; a domain without iothreads: no iothread
    "queues-7.4-features": Case({"IOTHREAD": "1"},
                                stock_disk("<driver name='qemu' type='raw' cache='none' discard='unmap' "
                                           "queues='2'/>"),
                                kvmrc=SHIPPED_KVMRC + "DEFAULT_ATTACH_VIRTIO_BLK_QUEUES=8\n", release="7.4.0",
                                template={"VCPU": "2", "FEATURES": {"VIRTIO_BLK_QUEUES": "auto"}},
                                dumpxml="<domain type='kvm'><name>one-14</name><devices/></domain>"),
    # up to 7.2 the DISK's IOTHREAD as it is
    "iothread-7.0": Case({"IOTHREAD": "3"},
                         stock_disk("<driver name='qemu' type='raw' cache='none' discard='unmap' iothread='3'/>")),
    # 7.4: DISK_ID % iothreads + 1 among the running domain's 4
    "iothread-7.4": Case({}, stock_disk("<driver name='qemu' type='raw' cache='none' discard='unmap' iothread='2'/>"),
                         release="7.4.0", dumpxml=DOMAIN_IOTHREADS),
    # 7.0.2: ${DISK_SERIAL//[^0-9a-zA-Z-._]/}
    "serial": Case({"SERIAL": "0123 abc/$(x)-'q'.<b>"},
                   stock_disk(D, after_target="<serial>0123abcx-q.b</serial>")),
    "sd-address": Case({"TARGET": "sdc", "DEV_PREFIX": "sd"},
                       stock_disk(D, target="sdc", after_target="<address type='drive' controller='0' bus='0' "
                                  "target='2' unit='0'/>"), target="sdc"),
    "boot-order": Case({"ORDER": "2"}, stock_disk(D, after_target=" <boot order='2'/>")),
    "readonly": Case({"READONLY": "YES"}, stock_disk(D, after_target="<readonly/>")),
    "shareable": Case({"SHAREABLE": "yes"}, stock_disk(D, after_target="<shareable/>")),
}


@pytest.mark.parametrize("cloud", ["ssh"], indirect=True)  # attach runs on the front-end in both modes
@pytest.mark.parametrize("name", list(CASES))
def test_stock_parity(cloud: Cloud, virsh: Recorder, kvm_remotes: KvmRemotes, libvirt_schema: LibvirtSchema,
                      name: str) -> None:
    case = CASES[name]
    kvm_remotes.version(case.release)
    if case.kvmrc is not None:
        kvm_remotes.kvmrc(case.kvmrc)
    if case.dumpxml is not None:
        virsh.domain(case.dumpxml)
    attach = docs.image_disk(1, 6, source=f"{cloud.prefix}-6", clone=True, size_mb=64, extra=case.disk)
    result = run_attach(cloud, virsh, action_data(cloud, attach, template=case.template), target=case.target)
    assert result.rc == 0, result.stderr
    assert virsh.argv() == ["--connect", "qemu:///system", "attach-device", DEPLOY_ID, "/dev/stdin", "--live"]
    expect_parity(cloud, virsh, libvirt_schema, case.stock, f"{cloud.prefix}-6-{VM_ID}-1")
    reads_iothreads = case.release == "7.4.0" and case.target.startswith("vd")
    assert virsh.dumpxml_argv() == (["--connect", "qemu:///system", "dumpxml", DEPLOY_ID] if reads_iothreads
                                    else None)


@pytest.mark.parametrize("cloud", ["ssh"], indirect=True)
def test_exact_bytes(cloud: Cloud, virsh: Recorder) -> None:
    """What virsh reads, byte for byte: lxml's serialisation, no declaration, no whitespace."""
    attach = docs.image_disk(1, 6, source=f"{cloud.prefix}-6", clone=True, size_mb=64, extra={"ORDER": "1"})
    result = run_attach(cloud, virsh, action_data(cloud, attach))
    assert result.rc == 0, result.stderr
    assert virsh.stdin() == (
        '<disk type="network" device="disk"><driver name="qemu" type="raw" cache="none" discard="unmap"/>'
        f'<source protocol="vitastor" name="{cloud.prefix}-6-{VM_ID}-1"><config file="{cloud.cluster.config_path}"/>'
        '</source><target dev="vdb"/><boot order="1"/>'
        '<blockio logical_block_size="512" physical_block_size="4096"/></disk>').encode()


@pytest.mark.parametrize("cloud", ["ssh"], indirect=True)
def test_without_version_newest_logic(cloud: Cloud, virsh: Recorder, kvm_remotes: KvmRemotes,
                                      libvirt_schema: LibvirtSchema) -> None:
    """A remotes tree without VERSION: a WARN line and the newest release's logic (7.4: the
    domain's iothreads are read)."""
    kvm_remotes.version(None)
    virsh.domain(DOMAIN_IOTHREADS)
    attach = docs.image_disk(1, 6, source=f"{cloud.prefix}-6", clone=True, size_mb=64)
    result = run_attach(cloud, virsh, action_data(cloud, attach))
    assert result.rc == 0, result.stderr
    assert any(line.startswith("WARN:") and "VERSION" in line for line in result.stderr.splitlines())
    stock = stock_disk("<driver name='qemu' type='raw' cache='none' discard='unmap' iothread='2'/>")
    expect_parity(cloud, virsh, libvirt_schema, stock, f"{cloud.prefix}-6-{VM_ID}-1")


@pytest.mark.parametrize("cloud", ["ssh"], indirect=True)
@pytest.mark.parametrize(("extra", "named"), [
    ({"CACHE": "none' io='native"}, "DISK CACHE"),
    ({"IO": "native\"/><x a=\""}, "DISK IO"),
    ({"IOTHREAD": "$(touch /tmp/onevita-pwned)"}, "DISK IOTHREAD"),
    ({"TOTAL_IOPS_SEC": "`id`"}, "DISK TOTAL_IOPS_SEC"),
    ({"ORDER": "<boot/>"}, "DISK ORDER"),
])
def test_hostile_disk_values_refused(cloud: Cloud, virsh: Recorder, extra: Mapping[str, str], named: str) -> None:
    attach = docs.image_disk(1, 6, source=f"{cloud.prefix}-6", clone=True, size_mb=64, extra=extra)
    result = run_attach(cloud, virsh, action_data(cloud, attach))
    assert result.rc == 1 and named in result.reason, result.stderr
    assert not virsh.calls.exists()
    assert not Path("/tmp/onevita-pwned").exists()


@pytest.mark.parametrize("cloud", ["ssh"], indirect=True)
def test_hostile_kvmrc_refused(cloud: Cloud, virsh: Recorder, kvm_remotes: KvmRemotes) -> None:
    kvm_remotes.kvmrc(SHIPPED_KVMRC + "DEFAULT_ATTACH_IO=$(touch /tmp/onevita-pwned)\n")
    attach = docs.image_disk(1, 6, source=f"{cloud.prefix}-6", clone=True, size_mb=64)
    result = run_attach(cloud, virsh, action_data(cloud, attach))
    assert result.rc == 1, result.stderr
    line = SHIPPED_KVMRC.count("\n") + 1
    assert f"{kvm_remotes.kvmrc_path} line {line}: cannot read DEFAULT_ATTACH_IO without a shell" in result.reason
    assert not virsh.calls.exists()
    assert not Path("/tmp/onevita-pwned").exists()


def test_escaped_values(cloud: Cloud, virsh: Recorder, libvirt_schema: LibvirtSchema) -> None:
    """A SERIAL of markup and shell is filtered as the stock script filters it."""
    attach = docs.image_disk(1, 6, source=f"{cloud.prefix}-6", clone=True, size_mb=64,
                             extra={"SERIAL": "<serial>'\"&$(reboot)`id`"})
    result = run_attach(cloud, virsh, action_data(cloud, attach))
    assert result.rc == 0, result.stderr
    assert device(virsh, libvirt_schema).findtext("serial") == "serialrebootid"


def test_attach_clone(cloud: Cloud, virsh: Recorder, libvirt_schema: LibvirtSchema) -> None:
    attach = docs.image_disk(1, 6, source=f"{cloud.prefix}-6", clone=True, size_mb=64,
                             extra={"CACHE": "none", "DISCARD": "unmap", "IO": "native"})
    result = run_attach(cloud, virsh, action_data(cloud, attach))
    assert result.rc == 0, result.stderr
    assert virsh.argv() == ["--connect", "qemu:///system", "attach-device", DEPLOY_ID, "/dev/stdin", "--live"]
    stock = stock_disk("<driver name='qemu' type='raw' cache='none' io='native' discard='unmap'/>")
    expect_parity(cloud, virsh, libvirt_schema, stock, f"{cloud.prefix}-6-{VM_ID}-1")
    assert virsh.dumpxml_argv() is None


def test_attach_cdrom_volatile_and_stdin_only(cloud: Cloud, virsh: Recorder, libvirt_schema: LibvirtSchema) -> None:
    cdrom = docs.image_disk(1, 7, source=f"{cloud.prefix}-7", clone=False, size_mb=16,
                            extra={"TYPE": "CDROM", "READONLY": "YES", "TARGET": "sdb", "DEV_PREFIX": "sd"})
    result = run_attach(cloud, virsh, action_data(cloud, cdrom), target="sdb", arg="")  # data on stdin only
    assert result.rc == 0, result.stderr
    stock = stock_disk(D, target="sdb", device="cdrom", after_target=(
        "<readonly/><address type='drive' controller='0' bus='0' target='1' unit='0'/>"))
    expect_parity(cloud, virsh, libvirt_schema, stock, f"{cloud.prefix}-7")

    volatile = docs.volatile_disk(2, size_mb=64, extra={"READONLY": "YES"})
    result = run_attach(cloud, virsh, action_data(cloud, volatile), disk_id=2, target="vdc")
    assert result.rc == 0, result.stderr
    expect_parity(cloud, virsh, libvirt_schema, stock_disk(D, disk_id=2, target="vdc", after_target="<readonly/>"),
                  f"{cloud.prefix}-sys-{VM_ID}-2")


def test_other_driver_goes_to_stock(cloud: Cloud, virsh: Recorder, stock_attach: Recorder) -> None:
    attach = docs.image_disk(1, 8, source="/var/lib/one//datastores/1/abc", clone=True, size_mb=64, ds_id=1,
                             tm_mad="ssh")
    data = action_data(cloud, attach)
    result = run_attach(cloud, virsh, data)
    assert result.rc == 3
    assert result.stdout == "stock-out\n" and result.stderr == "stock-err\n"
    assert stock_attach.argv() == [DEPLOY_ID, f"{SYSDIR}/disk.1", "vdb", "1", data, str(VM_ID), "node1"]
    assert stock_attach.stdin() == data.encode()
    assert not virsh.calls.exists()


def test_attach_to_a_mixed_vm(cloud: Cloud, virsh: Recorder, stock_attach: Recorder,
                              libvirt_schema: LibvirtSchema) -> None:
    """A VM with Vitastor, Ceph and ssh (qcow2) disks and a context CD-ROM: a Vitastor disk goes
    to virsh as a vitastor network disk, then a Ceph disk to the stock attach_disk."""
    p = cloud.prefix
    disks = [docs.image_disk(0, 5, source=f"{p}-5", clone=False, persistent=True, size_mb=64),
             docs.image_disk(1, 8, source="one/one-8", clone=True, size_mb=64, ds_id=CEPH_DS, tm_mad="ceph",
                             extra=CEPH),
             docs.image_disk(2, 9, source=f"{docs.DATASTORE_LOCATION}/{SSH_DS}/0123abcd", clone=True, size_mb=64,
                             ds_id=SSH_DS, tm_mad="ssh", extra={"FORMAT": "qcow2", "DRIVER": "qcow2"}),
             docs.volatile_disk(3, size_mb=32, type="swap")]
    vitastor = docs.image_disk(5, 6, source=f"{p}-6", clone=True, size_mb=64,
                               extra={"CACHE": "none", "DISCARD": "unmap", "IO": "native"})
    result = run_attach(cloud, virsh, action_data(cloud, vitastor, disks=disks, context_disk_id=4), disk_id=5,
                        target="vdf")
    assert result.rc == 0, result.stderr
    stock = stock_disk("<driver name='qemu' type='raw' cache='none' io='native' discard='unmap'/>", disk_id=5,
                       target="vdf")
    expect_parity(cloud, virsh, libvirt_schema, stock, f"{p}-6-{VM_ID}-5")
    assert not stock_attach.calls.exists()
    attached = virsh.stdin()

    ceph = docs.image_disk(6, 10, source="one/one-10", clone=True, size_mb=64, ds_id=CEPH_DS, tm_mad="ceph",
                           extra=CEPH)
    data = action_data(cloud, ceph, disks=[*disks, vitastor], context_disk_id=4)
    result = run_attach(cloud, virsh, data, disk_id=6, target="vdg")
    assert result.rc == 3 and result.stdout == "stock-out\n"
    assert stock_attach.argv() == [DEPLOY_ID, f"{SYSDIR}/disk.6", "vdg", "1", data, str(VM_ID), "node1"]
    assert stock_attach.stdin() == data.encode()
    assert virsh.stdin() == attached  # virsh not called again


def test_virsh_failure(cloud: Cloud, virsh: Recorder) -> None:
    virsh.fail("error: Failed to attach device: internal error")
    attach = docs.image_disk(1, 6, source=f"{cloud.prefix}-6", clone=True, size_mb=64)
    result = run_attach(cloud, virsh, action_data(cloud, attach))
    assert result.rc == 1
    assert "Failed to attach device: internal error" in result.reason
    assert result.errors


def test_bad_virsh_and_data(cloud: Cloud, virsh: Recorder) -> None:
    attach = docs.image_disk(1, 6, source=f"{cloud.prefix}-6", clone=True, size_mb=64)
    data = action_data(cloud, attach)
    result = cloud.run("vmm/attach_disk.vitastor", DEPLOY_ID, f"{SYSDIR}/disk.1", "vdb", "1", data,
                       str(VM_ID), "node1", stdin=data.encode(), env={"VIRSH": "virsh; rm -rf /"})
    assert result.rc == 1 and "VIRSH" in result.reason
    result = run_attach(cloud, virsh, "", arg="not base64!")
    assert result.rc == 1 and "base64" in result.reason
    assert not virsh.calls.exists()
