"""Comparing our hot-attach ``<disk>`` with the stock ``vmm/kvm/attach_disk``'s.

The stock script prints its disk by string concatenation (single quotes, a space before
``<boot>``, ``<source …></source>``); what matters to libvirt is the element tree. :func:`shape`
is that tree with order kept (children and attributes) and whitespace-only text dropped, so a
disk the stock script printed (written out by hand in the tests, or captured on a real
OpenNebula) compares with ours. :func:`as_vitastor` makes of a stock disk the Vitastor disk onevita
must produce for the same DISK: the same element with ``type='network'``, the Vitastor source in
place of the stock one and deploy's ``<blockio>`` appended.

To compare a captured stock disk: ``assert shape(ours) == shape(as_vitastor(captured, source))``,
or, for our builder with the stock file source, ``shape(disk_element(inputs, <source file=…/>,
"file")) == shape(captured)``.
"""

from __future__ import annotations

from typing import Optional, Union

from lxml import etree

Shape = tuple[str, tuple[tuple[str, str], ...], Optional[str], tuple["Shape", ...]]
BLOCKIO = "<blockio logical_block_size='512' physical_block_size='4096'/>"


def parse(xml: Union[str, bytes, etree._Element]) -> etree._Element:
    if isinstance(xml, etree._Element):
        return xml
    return etree.fromstring(xml.encode() if isinstance(xml, str) else xml)


def shape(xml: Union[str, bytes, etree._Element]) -> Shape:
    """The element tree of ``xml``: tag, attributes in order, text unless whitespace only, and
    children, recursively; tails (whitespace between elements) ignored."""
    element = parse(xml)
    text = element.text if element.text and element.text.strip() else None
    return (str(element.tag), tuple((str(k), str(v)) for k, v in element.attrib.items()), text,
            tuple(shape(child) for child in element if isinstance(child.tag, str)))


def vitastor_source(name: str, conf: Optional[str]) -> str:
    """The source deploy and attach give a Vitastor disk."""
    config = f"<config file='{conf}'/>" if conf else ""
    return f"<source protocol='vitastor' name='{name}'>{config}</source>"


def as_vitastor(stock: Union[str, bytes, etree._Element], source: str) -> etree._Element:
    """The stock disk with only the source turned into the Vitastor network source."""
    disk = etree.fromstring(etree.tostring(parse(stock)))
    old = disk.find("source")
    assert old is not None, "the stock disk has no source"
    disk.set("type", "network")
    disk.replace(old, etree.fromstring(source))
    disk.append(etree.fromstring(BLOCKIO))
    return disk
