"""An XML-RPC stand-in for oned's info calls, written independently of the driver's client.

It answers ``one.vm.info``, ``one.datastore.info``, ``one.image.info``, ``one.host.info``,
``one.hostpool.info`` and ``one.datastorepool.info`` in oned's response shapes (``src/rm/xml-rpc/RequestXRPC.cc make_response``):
``[True, "<VM>…</VM>", 0]`` on success, ``[False, "[method] message", code, object_id, 0]`` on
failure. Documents are XML text put into plain dicts by the test; every call is recorded.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from typing import Any, Optional
from xmlrpc.client import Fault
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

AUTHENTICATION = 0x100
AUTHORIZATION = 0x200
NO_EXISTS = 0x400
ACTION = 0x800
XML_RPC_API = 0x1000
INTERNAL = 0x2000
# xmlrpc-c's fault codes: a parameter of the wrong type / a method oned does not register.
FAULT_TYPE = -501
FAULT_NO_SUCH_METHOD = -506
DEFAULT_SESSION = "oneadmin:testpass"
# method → (attribute holding the documents, object name in oned's error text)
_INFO_METHODS = {
    "one.vm.info": ("vms", "virtual machine"),
    "one.datastore.info": ("datastores", "datastore"),
    "one.image.info": ("images", "image"),
    "one.host.info": ("hosts", "host"),
}
# pool method → (attribute holding the documents, root element of the answer)
_POOL_METHODS = {
    "one.hostpool.info": ("hosts", "HOST_POOL"),
    "one.datastorepool.info": ("datastores", "DATASTORE_POOL"),
}
Call = tuple[str, tuple[Any, ...]]
Failure = tuple[int, Optional[str]]


class _Handler(SimpleXMLRPCRequestHandler):
    """HTTP/1.1 keep-alive like oned's Abyss server; idle connections close after 15 s as in oned.conf."""

    rpc_paths = ("/RPC2",)
    protocol_version = "HTTP/1.1"
    timeout = 15

    def log_message(self, format: str, *args: Any) -> None:
        """Keep pytest output clean; ``OnedStandIn.calls`` is the record tests use."""


class _Server(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    """One thread per connection, so a hung call does not block the others; open sockets are tracked
    so ``close_connections`` can end keep-alive connections at shutdown instead of leaking threads."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, requestHandler=_Handler, logRequests=False, allow_none=False,
                         encoding="utf-8")
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)


def _failure(method: str, code: int, message: str, object_id: int) -> list[Any]:
    return [False, f"[{method}] {message}", code, object_id, 0]


def _check_int(params: tuple[Any, ...], index: int) -> int:
    """xmlrpc-c's ``paramList.getInt``: a fault, not an OpenNebula error array, on a bad parameter."""
    if index >= len(params):
        raise Fault(FAULT_TYPE, "Not enough parameters")
    value = params[index]
    if type(value) is not int:  # bool is an int subclass, but <boolean> is not <int> on the wire
        raise Fault(FAULT_TYPE, "Parameter that is supposed to be integer is not")
    return value


def _check_types(method: str, params: tuple[Any, ...]) -> Optional[int]:
    """Validate ``(session[, id[, decrypt]])`` like oned does before running the call; return the id."""
    if not params or not isinstance(params[0], str):
        raise Fault(FAULT_TYPE, "Parameter that is supposed to be a string is not")
    if method in _POOL_METHODS:
        return None
    object_id = _check_int(params, 1)
    if len(params) > 2 and not isinstance(params[2], bool):
        raise Fault(FAULT_TYPE, "Parameter that is supposed to be boolean is not")
    return object_id


class OnedStandIn:
    """oned's XML-RPC endpoint on a free 127.0.0.1 port, served from a background thread.

    Fill ``vms``, ``datastores``, ``images`` and ``hosts`` (id → XML text); ``one.hostpool.info``
    and ``one.datastorepool.info`` answer every host or datastore document in id order.
    """

    def __init__(self, *, session: str = DEFAULT_SESSION) -> None:
        self.session = session
        self.vms: dict[int, str] = {}
        self.datastores: dict[int, str] = {}
        self.images: dict[int, str] = {}
        self.hosts: dict[int, str] = {}
        self.calls: list[Call] = []
        self._failures: dict[str, list[Failure]] = {}
        self._hangs: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("OnedStandIn is not started")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """What ``ONE_XMLRPC`` should be set to."""
        return f"http://127.0.0.1:{self.port}/RPC2"

    def start(self) -> OnedStandIn:
        """Bind a free port and serve in a daemon thread (bound before returning, so no wait is needed)."""
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0))
        self._server.register_instance(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="oned-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hung calls and close keep-alive connections."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def reset(self) -> None:
        """Forget documents, recorded calls and pending failures/hangs between test cases."""
        with self._lock:
            for store in (self.vms, self.datastores, self.images, self.hosts):
                store.clear()
            self.calls.clear()
            self._failures.clear()
            self._hangs.clear()

    def fail_next(self, method: str, code: int = INTERNAL, message: Optional[str] = None) -> None:
        """Make the next ``method`` call answer ``[False, "[method] message", code, id, 0]``.

        Queued failures are used one per call, in order; authentication is still checked first.
        """
        with self._lock:
            self._failures.setdefault(method, []).append((code, message))

    def hang_next(self, method: str, seconds: float = 30.0) -> None:
        """Make the next ``method`` call wait ``seconds`` before answering (``stop()`` ends the wait),
        to test client timeouts."""
        with self._lock:
            self._hangs.setdefault(method, []).append(seconds)

    def __enter__(self) -> OnedStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _dispatch(self, method: str, params: tuple[Any, ...]) -> list[Any]:
        """Entry point for every XML-RPC call (SimpleXMLRPCServer calls it for registered instances)."""
        with self._lock:
            self.calls.append((method, tuple(params)))
            failure = self._pop(self._failures, method)
            hang = self._pop(self._hangs, method)
        if hang is not None:
            self._stopping.wait(hang)
        if method not in _POOL_METHODS and method not in _INFO_METHODS:
            raise Fault(FAULT_NO_SUCH_METHOD, f"Method '{method}' not defined")
        object_id = _check_types(method, params)
        if params[0] != self.session:
            return _failure(method, AUTHENTICATION, "User couldn't be authenticated, aborting call.", -1)
        if failure is not None:
            code, message = failure
            target = -1 if object_id is None else object_id
            return _failure(method, code, message or "Injected failure.", target)
        if object_id is None:
            return [True, self._pool(method), 0]
        return self._info(method, object_id)

    @staticmethod
    def _pop(queue: dict[str, list[Any]], method: str) -> Any:
        pending = queue.get(method)
        return pending.pop(0) if pending else None

    def _info(self, method: str, object_id: int) -> list[Any]:
        store_name, object_name = _INFO_METHODS[method]
        with self._lock:
            doc = getattr(self, store_name).get(object_id)
        if doc is None:
            return _failure(method, NO_EXISTS, f"Error getting {object_name} [{object_id}].", object_id)
        if not isinstance(doc, str):
            raise TypeError(f"OnedStandIn.{store_name}[{object_id}] must be XML text, "
                            f"not {type(doc).__name__}")
        return [True, doc, 0]

    def _pool(self, method: str) -> str:
        store_name, root = _POOL_METHODS[method]
        with self._lock:
            store = getattr(self, store_name)
            docs = [store[object_id] for object_id in sorted(store)]
        return f"<{root}>" + "".join(docs) + f"</{root}>"
