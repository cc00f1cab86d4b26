"""oned's XML-RPC API, in-process, with lxml (no ``onevm`` fork, no Ruby).

Endpoint and credentials are resolved like OpenNebula's own clients
(``src/oca/ruby/opennebula/lib/client.rb``): ``$ONE_XMLRPC``, else ``~/.one/one_endpoint``, else
``/var/lib/one/.one/one_endpoint``, else ``http://localhost:2633/RPC2``; the session is the
file named by ``$ONE_AUTH``, else ``~/.one/one_auth``, else ``/var/lib/one/.one/one_auth``.
Admin commands run as root also look in the OpenNebula admin's home of the installation they
work on (``admin_homes``), where oneadmin's own files are.
"""

from __future__ import annotations

import os
import re
from typing import Sequence, Union

from lxml import etree

from ..errors import OpenNebulaError
from ..http import Connection

__all__ = ["OneClient", "connect_as_admin", "endpoint", "oned", "session"]

DEFAULT_ENDPOINT = "http://localhost:2633/RPC2"
_URL = re.compile(r"(https?)://(\[[0-9A-Fa-f:.]+\]|[^/:\[\]]+)(?::([0-9]+))?(/.*)?")
Param = Union[str, int, bool]
_ERROR_NAMES = {0x100: "AUTHENTICATION", 0x200: "AUTHORIZATION", 0x400: "NO_EXISTS", 0x800: "ACTION",
                0x1000: "XML_RPC_API", 0x2000: "INTERNAL", 0x4000: "ALLOCATE", 0x8000: "LOCKED"}


def _first_line(paths: Sequence[str]) -> tuple[str, str] | None:
    """The first line of the first of ``paths`` that has one, and that path."""
    for path in paths:
        try:
            with open(os.path.expanduser(path)) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text:
            return text.splitlines()[0].strip(), os.path.expanduser(path)
    return None


def _in_homes(name: str, admin_homes: Sequence[str]) -> list[str]:
    return ["~/.one/" + name, *(f"{home}/.one/{name}" for home in admin_homes), "/var/lib/one/.one/" + name]


def endpoint(admin_homes: Sequence[str] = ()) -> str:
    """oned's XML-RPC URL, resolved like the OpenNebula CLI does."""
    found = _first_line(_in_homes("one_endpoint", admin_homes))
    return os.environ.get("ONE_XMLRPC") or (found[0] if found else DEFAULT_ENDPOINT)


def session(admin_homes: Sequence[str] = ()) -> tuple[str, str]:
    """The ``user:password`` session string, resolved like the OpenNebula CLI does, and the
    file it came from."""
    paths = _in_homes("one_auth", admin_homes)
    if os.environ.get("ONE_AUTH"):
        paths.insert(0, os.environ["ONE_AUTH"])
    found = _first_line(paths)
    if found is None:
        raise OpenNebulaError("no OpenNebula credentials: set ONE_AUTH or create ~/.one/one_auth")
    return found


def _value(param: Param) -> etree._Element:
    value = etree.Element("value")
    if isinstance(param, bool):
        etree.SubElement(value, "boolean").text = "1" if param else "0"
    elif isinstance(param, int):
        etree.SubElement(value, "int").text = str(param)
    else:
        etree.SubElement(value, "string").text = param
    return value


def _request(method: str, params: tuple[Param, ...]) -> bytes:
    call = etree.Element("methodCall")
    etree.SubElement(call, "methodName").text = method
    body = etree.SubElement(call, "params")
    for param in params:
        etree.SubElement(body, "param").append(_value(param))
    return etree.tostring(call, xml_declaration=True, encoding="UTF-8")


def _scalar(value: etree._Element) -> str | int | bool:
    typed = value[0] if len(value) else None
    if typed is None:
        return value.text or ""
    text = typed.text or ""
    if typed.tag in ("int", "i4", "i8"):
        return int(text)
    if typed.tag == "boolean":
        return text.strip() == "1"
    return text


def _response(method: str, data: bytes) -> str:
    """The document of a ``[true, "<XML>", 0]`` reply; OpenNebulaError for ``[false, msg, code]``."""
    try:
        root = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as e:
        raise OpenNebulaError(f"{method}: malformed XML-RPC reply: {e}") from e
    fault = root.find("fault")
    if fault is not None:
        members = {m.findtext("name"): m.find("value") for m in fault.iterfind("value/struct/member")}
        code, string = members.get("faultCode"), members.get("faultString")
        if code is not None and string is not None:
            raise OpenNebulaError(f"{method}: XML-RPC fault {_scalar(code)}: {_scalar(string)}")
        text = " ".join(str(t).strip() for t in fault.itertext() if str(t).strip())
        raise OpenNebulaError(f"{method}: XML-RPC fault: {text}")
    items = [_scalar(v) for v in root.iterfind("params/param/value/array/data/value")]
    if len(items) < 2:
        raise OpenNebulaError(f"{method}: unexpected XML-RPC reply")
    if items[0] is not True:
        code = items[2] if len(items) > 2 and isinstance(items[2], int) else 0
        raise OpenNebulaError(f"{items[1]} ({_ERROR_NAMES.get(code, code)})")
    return str(items[1])


class OneClient:
    """A keep-alive XML-RPC connection to oned."""

    def __init__(self, url: str | None = None, secret: str | None = None, timeout: float = 30.0) -> None:
        self.url = url or endpoint()
        self.secret = secret
        match = _URL.fullmatch(self.url)
        if match is None:
            raise OpenNebulaError(f"unsupported OpenNebula endpoint {self.url!r}")
        scheme, host, port, path = match.groups()
        self._https = scheme == "https"
        self._address = (host.strip("[]"), int(port) if port else (443 if self._https else 80))
        self._timeout = timeout
        self._conn = Connection(*self._address, timeout)
        self._path = path or "/RPC2"

    def call(self, method: str, *params: Param) -> str:
        """Call ``method(session, *params)`` and return the XML document it answers with."""
        if self.secret is None:
            self.secret = session()[0]
        body = _request(method, (self.secret, *params))
        try:
            status, data = self._post(body)
        except OSError as e:
            self._conn.close()
            raise OpenNebulaError(f"cannot reach OpenNebula at {self.url}: {e}") from e
        if status != 200:
            raise OpenNebulaError(f"{method}: HTTP {status} from {self.url}")
        return _response(method, data)

    def _post(self, body: bytes) -> tuple[int, bytes]:
        if not self._https:
            return self._conn.post(self._path, body, "text/xml")
        import http.client  # TLS endpoints only: its imports cost every plain-HTTP action 12 ms

        conn = http.client.HTTPSConnection(*self._address, timeout=self._timeout)
        try:
            conn.request("POST", self._path, body, {"Content-Type": "text/xml"})
            reply = conn.getresponse()
            return reply.status, reply.read()
        except http.client.HTTPException as e:
            raise OSError(str(e)) from e
        finally:
            conn.close()

    def vm_info(self, vm_id: int) -> str:
        """``one.vm.info``: the ``<VM>`` document."""
        return self.call("one.vm.info", vm_id, True)

    def datastore_info(self, ds_id: int) -> str:
        """``one.datastore.info``: the ``<DATASTORE>`` document, encrypted attributes in clear."""
        return self.call("one.datastore.info", ds_id, True)

    def image_info(self, image_id: int) -> str:
        """``one.image.info``: the ``<IMAGE>`` document."""
        return self.call("one.image.info", image_id, True)

    def hostpool_info(self) -> str:
        """``one.hostpool.info``: every host with its state (for BRIDGE_LIST filtering)."""
        return self.call("one.hostpool.info")

    def datastorepool_info(self) -> str:
        """``one.datastorepool.info``: every datastore (install and doctor look for Vitastor ones)."""
        return self.call("one.datastorepool.info")


_client: OneClient | None = None


def oned() -> OneClient:
    """The process's one connection to oned."""
    global _client
    if _client is None:
        _client = OneClient()
    return _client


def connect_as_admin(admin_homes: Sequence[str]) -> str:
    """Make ``oned()`` an admin command's connection: credentials and endpoint also looked for
    in ``admin_homes`` (an install run as root finds oneadmin's there); the credentials file,
    or why there is none."""
    global _client
    try:
        secret, path = session(admin_homes)
    except OpenNebulaError as e:
        return str(e)
    _client = OneClient(endpoint(admin_homes), secret)
    return path
