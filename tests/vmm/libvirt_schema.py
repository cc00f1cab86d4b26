"""libvirt's own RELAX NG domain schema, from Debian's ``libvirt0`` (/usr/share/libvirt/schemas),
and a test-local copy that knows the ``vitastor`` network disk protocol.

Vitastor's libvirt patch (vitalif/vitastor ``patches/libvirt-*-vitastor.diff``, the same schema
change from 9.0 to 12.0) adds to ``domaincommon.rng`` a ``diskSourceNetworkProtocolVitastor``
define (a ``<source protocol='vitastor'>`` with optional ``name`` and ``query`` (the etcd prefix)
attributes, any number of ``<host>`` (etcd addresses) and an optional
``<config file='ABSOLUTE PATH'/>``) and a reference to it in the ``diskSourceNetwork`` choice.
:func:`add_vitastor` makes the same change by editing the parsed schema.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from lxml import etree
from lxml.builder import ElementMaker

SCHEMAS = Path("/usr/share/libvirt/schemas")
MISSING = (f"libvirt's RELAX NG schemas are not in {SCHEMAS}: install Debian's libvirt0 package "
           "(apt-get install libvirt0) to validate domain XML")
RNG_NS = "http://relaxng.org/ns/structure/1.0"
VITASTOR_DEFINE = "diskSourceNetworkProtocolVitastor"
_RNG = ElementMaker(namespace=RNG_NS, nsmap={None: RNG_NS})
_NS = {"rng": RNG_NS}
# the device grammar: a lone <disk>, as ``virsh attach-device`` takes it
_DISK_GRAMMAR = _RNG.grammar(_RNG.start(_RNG.ref(name="disk")), _RNG.include(href="domainoverrides.rng"),
                             datatypeLibrary="http://www.w3.org/2001/XMLSchema-datatypes")

Document = Union[bytes, str, etree._Element]


def available() -> bool:
    return (SCHEMAS / "domain.rng").is_file() and (SCHEMAS / "domaincommon.rng").is_file()


def _one(root: etree._Element, path: str) -> etree._Element:
    found = root.xpath(path, namespaces=_NS)
    assert isinstance(found, list) and len(found) == 1, f"domaincommon.rng: not one {path}"
    element = found[0]
    assert isinstance(element, etree._Element)
    return element


def vitastor_define() -> etree._Element:
    """``diskSourceNetworkProtocolVitastor`` as the patch defines it."""
    r = _RNG
    return r.define(
        r.element(
            r.interleave(
                r.attribute(r.value("vitastor"), name="protocol"),
                r.ref(name="diskSourceCommon"),
                r.optional(r.attribute(name="name")),
                r.optional(r.attribute(name="query")),
                r.zeroOrMore(r.ref(name="diskSourceNetworkHost")),
                r.optional(r.element(r.attribute(r.ref(name="absFilePath"), name="file"), r.empty(),
                                     name="config")),
                r.empty(),
            ),
            name="source",
        ),
        name=VITASTOR_DEFINE,
    )


def add_vitastor(domaincommon: etree._ElementTree) -> None:
    """Vitastor's schema change, in place: the define after RBD's, and a choice of it among the
    network disk sources."""
    root = domaincommon.getroot()
    assert not root.xpath(f"rng:define[@name='{VITASTOR_DEFINE}']", namespaces=_NS), "already patched"
    _one(root, "rng:define[@name='diskSourceNetworkProtocolRBD']").addnext(vitastor_define())
    _one(root, "rng:define[@name='diskSourceNetwork']/rng:choice").append(_RNG.ref(name=VITASTOR_DEFINE))


def _tree(document: Document) -> etree._Element:
    if isinstance(document, etree._Element):
        return document
    data = document.encode() if isinstance(document, str) else document
    return etree.fromstring(data, etree.XMLParser(strip_cdata=False, resolve_entities=False, no_network=True))


def _check(schema: etree.RelaxNG, document: Document, what: str) -> None:
    tree = _tree(document)
    if not schema.validate(tree):
        errors = "\n".join(f"  line {e.line}: {e.message}" for e in schema.error_log)
        raise AssertionError(f"{what} does not validate:\n{errors}\n{etree.tostring(tree).decode()}")


@dataclass
class LibvirtSchema:
    """libvirt's domain schema as shipped (``stock``), and with Vitastor's change (``domain``,
    ``disk``: a lone ``<disk>`` device)."""

    directory: Path
    stock: etree.RelaxNG
    domain: etree.RelaxNG
    disk: etree.RelaxNG

    @classmethod
    def build(cls, directory: Path) -> LibvirtSchema:
        """Copy the schemas to ``directory`` and patch the copy there."""
        for rng in SCHEMAS.glob("*.rng"):
            shutil.copyfile(rng, directory / rng.name)
        common = etree.parse(str(directory / "domaincommon.rng"))
        add_vitastor(common)
        common.write(str(directory / "domaincommon.rng"), xml_declaration=True, encoding="UTF-8")
        etree.ElementTree(_DISK_GRAMMAR).write(str(directory / "disk.rng"), xml_declaration=True,
                                               encoding="UTF-8")
        return cls(directory, stock=etree.RelaxNG(file=str(SCHEMAS / "domain.rng")),
                   domain=etree.RelaxNG(file=str(directory / "domain.rng")),
                   disk=etree.RelaxNG(file=str(directory / "disk.rng")))

    def check_domain(self, document: Document, *, stock: bool = False) -> None:
        """Fail unless ``document`` is a valid ``<domain>`` (for libvirt as shipped, if
        ``stock``; else for libvirt with Vitastor's patch)."""
        _check(self.stock if stock else self.domain, document, "domain (stock libvirt schema)" if stock
               else "domain (libvirt schema with vitastor)")

    def check_disk(self, document: Document) -> None:
        """Fail unless ``document`` is a valid ``<disk>`` device for libvirt with Vitastor's patch."""
        _check(self.disk, document, "disk device")
