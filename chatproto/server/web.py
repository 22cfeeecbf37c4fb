"""The web listener: the browser client's static files and a WebSocket carrying the chat protocol.

Over the WebSocket travel exactly the bytes of the TCP protocol (docs/protocol.rst, "WebSocket
transport"): each binary message carries the next bytes of the stream, cut anywhere. The
:class:`StreamOverWebSocket` adapter gives the protocol object built by the ordinary chat
factory (``factory.buildProtocol(addr)``) a byte-stream transport
(:class:`WebSocketStreamTransport`), so the handshake, the limits, the timeouts and the
per-IP accounting are the TCP ones.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.static import File
from twisted.web.websocket import WebSocketResource, WebSocketTransport
from zope.interface import implementer

log = Logger()

#: The path of the WebSocket endpoint on a web listener.
WEBSOCKET_PATH = b"ws"
#: Bytes of WebSocket messages a client may have in flight before one completes: the largest
#: encrypted frame (1 MiB body + 33 bytes) plus WebSocket framing overhead and slack. A client
#: that sends more in one unfinished message is closed (1009, "message too big").
MAX_PENDING_BYTES = 1024 * 1024 + 64 * 1024
#: The Content-Security-Policy of every served file: scripts and styles only from the same
#: origin (no inline script), connections only to the same origin, images also from blob:
#: URLs (received images), no framing, no plugins.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
#: Files are revalidated on every load (Last-Modified / If-Modified-Since): the module graph
#: has no content hashes in its names, so a stale module must never be mixed with a new one.
CACHE_CONTROL = "no-cache"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
}


def client_files_path() -> str:
    """The directory of the installed web client (package data of ``chatproto.webclient``)."""
    path = resources.files("chatproto.webclient")
    return str(path)


def _address_host(addr: Any) -> str:
    return str(getattr(addr, "host", addr))


def client_address(request: Request, trusted_proxies: Iterable[str]) -> str:
    """The client's IP address: the TCP peer, or with a trusted proxy in front, the address that
    proxy put in ``X-Forwarded-For``.

    The header is read only when the TCP peer is one of ``trusted_proxies``; then the right-most
    address not itself a trusted proxy is the client (the left part is set by the client and
    proves nothing). A malformed header yields the proxy's address.
    """
    peer = _address_host(request.getClientAddress())
    trusted = set(trusted_proxies)
    if peer not in trusted:
        return peer
    values = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []
    hops = [h.strip() for v in values for h in v.decode("latin-1").split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer
        if hop not in trusted:
            return hop
    return peer


def origin_allowed(request: Request, allowed_origins: Sequence[str]) -> bool:
    """Whether the WebSocket request's ``Origin`` may connect.

    With no list, only the page's own origin (scheme, host and port of the ``Host`` header the
    request came to) may. A request without ``Origin`` (not from a browser) is refused too: the
    TCP listener is the place for other clients.
    """
    raw_origin = request.getHeader(b"origin")
    if raw_origin is None:
        return False
    origin = raw_origin.decode("latin-1").strip().rstrip("/").lower()
    if allowed_origins:
        return origin in {o.rstrip("/").lower() for o in allowed_origins}
    raw_host = request.getHeader(b"host")
    if raw_host is None:
        return False
    host = raw_host.decode("latin-1")
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https"):
        return False
    expected_scheme = "https" if request.isSecure() else "http"
    return parts.scheme == expected_scheme and parts.netloc == host.strip().lower()


@implementer(IPushProducer, IConsumer)
class WebSocketStreamTransport:
    """A byte-stream transport over a WebSocket, for a protocol written for TCP.

    ``write`` sends one binary message, ``loseConnection`` closes the WebSocket (1000),
    ``abortConnection`` aborts the connection underneath. A producer registered here (the chat
    adapter, for the write-side flow control) is attached to the connection underneath (TCP or
    TLS) in place of the HTTP channel, which produces nothing once the connection is a
    WebSocket: a slow browser pauses the writer as a slow TCP peer would. A TCP or TLS
    transport closes only once a paused (TCP) or any (TLS) producer is gone, so every close
    detaches it first: ours, and the one a peer's Close frame starts (:meth:`check_closing`).
    """

    def __init__(self, websocket: WebSocketTransport, peer: Any, host: Any) -> None:
        self._websocket = websocket
        self._peer = peer
        self._host = host
        self._closing = False
        self._producer: IPushProducer | None = None

    @property
    def _connection(self) -> Any:
        """The TCP or TLS transport the WebSocket runs over (None in tests without one)."""
        return getattr(self._websocket, "transport", None)

    @property
    def disconnecting(self) -> bool:
        connection = self._connection
        return self._closing or bool(getattr(connection, "disconnecting", False))

    @disconnecting.setter
    def disconnecting(self, value: bool) -> None:
        self._closing = value

    def write(self, data: bytes) -> None:
        if data and not self.disconnecting:
            self._websocket.sendBytesMessage(bytes(data))

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def close(self, code: int) -> None:
        """Close the WebSocket with ``code`` (the producer detached first)."""
        if not self._closing:
            self._closing = True
            self.unregisterProducer()
            self._websocket.loseConnection(code)

    def loseConnection(self) -> None:
        self.close(1000)

    def abortConnection(self) -> None:
        """Drop the connection and what it still buffers (a peer that reads nothing)."""
        self._closing = True
        self.unregisterProducer()
        connection = self._connection
        if connection is not None:
            connection.abortConnection()
        else:
            self._websocket.loseConnection(1000)

    def check_closing(self) -> None:
        """After received bytes were handled: if they closed the connection (the peer's Close
        frame), detach the producer, so that the connection can close."""
        if self._producer is not None and getattr(self._connection, "disconnecting", False):
            self.unregisterProducer()

    def getPeer(self) -> Any:
        return self._peer

    def getHost(self) -> Any:
        return self._host

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        connection = self._connection
        if connection is not None:
            # The HTTP channel registered itself for its responses; it has none to give now.
            # (Called on the connection itself: a TLSMemoryBIOProtocol does not always adapt
            # to IConsumer, as the WebSocket's attachProducer would need.)
            connection.unregisterProducer()
            connection.registerProducer(producer, True)
        else:
            self._websocket.attachProducer(producer)
        self._producer = producer

    def unregisterProducer(self) -> None:
        if self._producer is not None:
            self._producer = None
            connection = self._connection
            if connection is not None:
                connection.unregisterProducer()
            else:
                self._websocket.detachProducer()

    # The transport is also a push producer: the protocol may pause reading from the browser.
    def pauseProducing(self) -> None:
        producer = self._connection
        if producer is not None:
            producer.pauseProducing()

    def resumeProducing(self) -> None:
        producer = self._connection
        if producer is not None:
            producer.resumeProducing()

    def stopProducing(self) -> None:
        self.loseConnection()


class StreamOverWebSocket:
    """A WebSocket protocol that carries a byte-stream protocol (the chat protocol).

    Each binary message is handed to the stream protocol's ``dataReceived``; a text message
    is a protocol violation and closes the WebSocket (1003). Bytes of an unfinished message
    are bounded by ``max_pending`` (1009 beyond it).
    """

    def __init__(self, stream_protocol: Any, peer: Any, host: Any,
                 max_pending: int = MAX_PENDING_BYTES) -> None:
        self.stream = stream_protocol
        self.peer = peer
        self.host = host
        self.max_pending = max_pending
        self.transport: WebSocketStreamTransport | None = None
        self._websocket: Any = None
        self._pending = 0
        self._too_big = False
        self._lost = False

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self._websocket = transport
        self.transport = WebSocketStreamTransport(transport, self.peer, self.host)

    def bound_receiver(self, receive: Any) -> Any:
        """Wrap the raw-bytes receiver of the connection (the HTTP channel's ``dataReceived``
        after the upgrade): Twisted reassembles a fragmented message before delivering it,
        without a limit, so count the bytes since the last complete message and close the
        WebSocket (1009) beyond ``max_pending``."""

        def counted(data: bytes) -> None:
            if self._too_big:
                return
            self._pending += len(data)
            if self._pending > self.max_pending:
                self._too_big = True
                if not self._lost and self._websocket is not None:
                    log.info("closing {ip}: WebSocket message too big",
                             ip=_address_host(self.peer))
                    if self.transport is not None:
                        self.transport.close(1009)
                    else:
                        self._websocket.loseConnection(1009)
                return
            receive(data)
            if self.transport is not None:
                self.transport.check_closing()

        return counted

    def negotiationFinished(self) -> None:
        assert self.transport is not None
        self.stream.makeConnection(self.transport)

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        self._pending = 0
        # An empty message carries no bytes (and, as on TCP, does not count as activity).
        if data and self.transport is not None and not self.transport.disconnecting:
            self.stream.dataReceived(bytes(data))

    def textMessageReceived(self, message: str) -> None:
        self._pending = 0
        log.info("closing {ip}: text message on the chat WebSocket",
                 ip=_address_host(self.peer))
        if self.transport is not None:
            self.transport.close(1003)
        elif self._websocket is not None:
            self._websocket.loseConnection(1003)

    def pongReceived(self, payload: bytes) -> None:
        """WebSocket-level pongs are not used: the chat protocol has its own Ping."""

    def connectionLost(self, reason: Failure) -> None:
        if self._lost:
            return
        self._lost = True
        if self.transport is not None:
            self.transport.disconnecting = True
            self.stream.connectionLost(reason)


#: The protocol built for a request, until the resource has bounded its input.
_BUILT: weakref.WeakKeyDictionary[Request, StreamOverWebSocket] = weakref.WeakKeyDictionary()


class ChatWebSocketFactory:
    """Builds a :class:`StreamOverWebSocket` around ``stream_factory.buildProtocol(addr)``.

    ``addr`` is the client's address (see :func:`client_address`) with the TCP peer's port.
    """

    def __init__(self, stream_factory: Factory,
                 trusted_proxies: Sequence[str] = ()) -> None:
        self.stream_factory = stream_factory
        self.trusted_proxies = tuple(trusted_proxies)

    def buildProtocol(self, request: Request) -> StreamOverWebSocket:
        peer = request.getClientAddress()
        host_ip = client_address(request, self.trusted_proxies)
        port = getattr(peer, "port", 0)
        addr: Any = (IPv6Address("TCP", host_ip, port) if ":" in host_ip
                     else IPv4Address("TCP", host_ip, port))
        stream = self.stream_factory.buildProtocol(addr)
        protocol = StreamOverWebSocket(stream, addr, request.getHost())
        _BUILT[request] = protocol
        return protocol


class ChatWebSocketResource(WebSocketResource):
    """The WebSocket endpoint; refuses (403) a request from a foreign ``Origin``."""

    def __init__(self, factory: ChatWebSocketFactory, allowed_origins: Sequence[str] = ()):
        super().__init__(factory)
        self.allowed_origins = tuple(allowed_origins)

    def render_GET(self, request: Request) -> bytes | int:
        if not origin_allowed(request, self.allowed_origins):
            origin = request.getHeader(b"origin")
            log.info("refused a WebSocket from origin {origin!r}", origin=origin)
            request.setResponseCode(http.FORBIDDEN)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"origin not allowed\n"
        result = super().render_GET(request)
        protocol = _BUILT.pop(request, None)
        if protocol is not None and request.channel is not None:
            channel: Any = request.channel
            channel.dataReceived = protocol.bound_receiver(channel.dataReceived)
        return result


class ClientFiles(File):
    """The web client's files, with the security and caching headers on every response."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.contentTypes = dict(self.contentTypes, **_CONTENT_TYPES)
        self.indexNames = ["index.html"]

    def createSimilarFile(self, path: str) -> ClientFiles:
        f = ClientFiles(path, defaultType=self.defaultType)
        f.processors = self.processors
        f.indexNames = self.indexNames[:]
        f.childNotFound = self.childNotFound
        return f

    def directoryListing(self) -> Resource:
        return self.childNotFound

    def render(self, request: Request) -> bytes | int:
        set_security_headers(request)
        request.setHeader(b"cache-control", CACHE_CONTROL.encode())
        return super().render(request)


def set_security_headers(request: Request) -> None:
    """The headers every response of the web listener carries."""
    request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY.encode())
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"cross-origin-opener-policy", b"same-origin")


def web_site(stream_factory: Factory, *, trusted_proxies: Sequence[str] = (),
             allowed_origins: Sequence[str] = (), files_path: str | None = None) -> Site:
    """The site of a web listener: the client's files at ``/`` and the WebSocket at ``/ws``."""
    root = ClientFiles(files_path or client_files_path())
    ws = ChatWebSocketResource(ChatWebSocketFactory(stream_factory, trusted_proxies),
                               allowed_origins)
    root.putChild(WEBSOCKET_PATH, ws)  # type: ignore[arg-type]
    site = Site(root)
    site.displayTracebacks = False
    return site


@dataclass(frozen=True)
class WebSettings:
    """The web listeners of a server (``--listen-web``, ``--trusted-proxy``, ``--web-origin``).

    Args:
        endpoints: server endpoints (already parsed) to serve the web client on.
        trusted_proxies: addresses of reverse proxies whose ``X-Forwarded-For`` is believed.
        allowed_origins: page origins allowed to open the WebSocket; empty: same origin only.
    """

    endpoints: Sequence[Any] = ()
    trusted_proxies: Sequence[str] = ()
    allowed_origins: Sequence[str] = ()

    def site(self, stream_factory: Factory) -> Site:
        """The site every ``--listen-web`` endpoint serves (see :func:`web_site`)."""
        return web_site(stream_factory, trusted_proxies=self.trusted_proxies,
                        allowed_origins=self.allowed_origins)


def check_origin(value: str) -> str:
    """A ``--web-origin`` value: ``scheme://host[:port]`` with scheme http or https."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"{value!r} is not an origin such as https://chat.example.org")
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_proxy(value: str) -> str:
    """A ``--trusted-proxy`` value: an IP address."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
