"""The web listener without a browser: origin and proxy rules, the WebSocket-to-stream
adapter, the served files' headers, the options; and a hostile page in Chromium."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from chatproto.server import web
from chatproto.server.tap import Options
from tests.web.conftest import DOCS, WebServer, screenshot_directory


def _request(headers: dict[bytes, bytes], peer: str = "10.0.0.5", secure: bool = False
             ) -> DummyRequest:
    req = DummyRequest([b"ws"])
    req.client = IPv4Address("TCP", peer, 40000)
    for k, v in headers.items():
        req.requestHeaders.setRawHeaders(k, [v])
    req.isSecure = lambda: secure  # type: ignore[method-assign]
    return req


@pytest.mark.parametrize(("origin", "host", "secure", "allowed"), [
    (b"http://chat.example:8080", b"chat.example:8080", False, True),
    (b"http://CHAT.example:8080/", b"chat.example:8080", False, True),
    (b"https://chat.example", b"chat.example", True, True),
    (b"http://chat.example", b"chat.example", True, False),  # scheme differs
    (b"http://evil.example:8080", b"chat.example:8080", False, False),
    (b"http://chat.example:8081", b"chat.example:8080", False, False),
    (b"null", b"chat.example:8080", False, False),
    (None, b"chat.example:8080", False, False),
])
def test_same_origin_by_default(origin: bytes | None, host: bytes, secure: bool,
                                allowed: bool) -> None:
    """Without --web-origin only the origin the page was served from may open the WebSocket;
    a request without Origin is refused as well."""
    headers = {b"host": host}
    if origin is not None:
        headers[b"origin"] = origin
    assert web.origin_allowed(_request(headers, secure=secure), ()) is allowed


def test_origin_list() -> None:
    """With --web-origin, exactly the listed origins may connect (also another host)."""
    allowed = ("https://chat.example", "https://app.example:8443")
    req = _request({b"host": b"backend:8080", b"origin": b"https://app.example:8443"})
    assert web.origin_allowed(req, allowed)
    req = _request({b"host": b"backend:8080", b"origin": b"http://backend:8080"})
    assert not web.origin_allowed(req, allowed)


def test_forwarded_for_only_from_trusted_proxies() -> None:
    """X-Forwarded-For is ignored unless the TCP peer is a trusted proxy; then the right-most
    untrusted hop is the client; a malformed hop falls back to the proxy."""
    spoof = {b"x-forwarded-for": b"1.2.3.4"}
    assert web.client_address(_request(spoof, peer="10.0.0.5"), ()) == "10.0.0.5"
    assert web.client_address(_request(spoof, peer="10.0.0.5"), ["10.0.0.9"]) == "10.0.0.5"
    chain = {b"x-forwarded-for": b"6.6.6.6, 203.0.113.7, 10.0.0.8"}
    assert web.client_address(_request(chain, peer="10.0.0.9"),
                              ["10.0.0.9", "10.0.0.8"]) == "203.0.113.7"
    bad = {b"x-forwarded-for": b"203.0.113.7, not-an-ip"}
    assert web.client_address(_request(bad, peer="10.0.0.9"), ["10.0.0.9"]) == "10.0.0.9"
    assert web.client_address(_request({}, peer="10.0.0.9"), ["10.0.0.9"]) == "10.0.0.9"


class FakeStreamFactory:
    def __init__(self) -> None:
        self.addrs: list[Any] = []
        self.protocols: list[FakeStream] = []

    def buildProtocol(self, addr: Any) -> FakeStream:
        self.addrs.append(addr)
        p = FakeStream()
        self.protocols.append(p)
        return p


class FakeStream:
    def __init__(self) -> None:
        self.transport: Any = None
        self.data = b""
        self.chunks: list[bytes] = []
        self.lost: list[Any] = []

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        self.data += data

    def connectionLost(self, reason: Any) -> None:
        self.lost.append(reason)


class FakeWebSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed: list[int] = []
        self.producers: list[Any] = []

    def sendBytesMessage(self, data: bytes) -> None:
        self.sent.append(data)

    def loseConnection(self, code: int = 1000) -> None:
        self.closed.append(code)

    def attachProducer(self, producer: Any) -> None:
        self.producers.append(producer)

    def detachProducer(self) -> None:
        self.producers.pop()


def _adapter(peer: str = "10.0.0.5", trusted: tuple[str, ...] = (),
             headers: dict[bytes, bytes] | None = None) -> tuple[Any, FakeStreamFactory,
                                                                 FakeWebSocket]:
    factory = FakeStreamFactory()
    ws_factory = web.ChatWebSocketFactory(factory, trusted)  # type: ignore[arg-type]
    adapter = ws_factory.buildProtocol(_request(headers or {}, peer=peer))
    socket = FakeWebSocket()
    adapter.negotiationStarted(socket)  # type: ignore[arg-type]
    adapter.negotiationFinished()
    return adapter, factory, socket


def test_stream_over_websocket() -> None:
    """Binary messages in any split become the stream's bytes (empty ones are dropped); writes
    become binary messages;
    loseConnection closes with 1000 once; the protocol is built with the client's address."""
    adapter, factory, socket = _adapter(peer="10.0.0.9", trusted=("10.0.0.9",),
                                        headers={b"x-forwarded-for": b"198.51.100.4"})
    stream = factory.protocols[0]
    assert factory.addrs[0].host == "198.51.100.4"
    assert stream.transport.getPeer().host == "198.51.100.4"
    for piece in (b"\x00", b"", b"\x00\x00\x05he", b"llo"):
        adapter.bytesMessageReceived(piece)
    assert stream.data == b"\x00\x00\x00\x05hello"
    assert b"" not in stream.chunks  # an empty message is no activity
    stream.transport.write(b"frame")
    stream.transport.writeSequence([b"a", b"b"])
    stream.transport.write(b"")
    assert socket.sent == [b"frame", b"ab"]
    stream.transport.registerProducer(object(), True)
    assert len(socket.producers) == 1
    stream.transport.unregisterProducer()
    stream.transport.loseConnection()
    stream.transport.loseConnection()
    stream.transport.write(b"after close")
    assert socket.closed == [1000] and socket.sent == [b"frame", b"ab"]
    adapter.connectionLost(Failure(ConnectionError("gone")))
    adapter.connectionLost(Failure(ConnectionError("gone")))
    assert len(stream.lost) == 1


def test_text_message_closes() -> None:
    """A text message is not part of the mapping: the WebSocket closes with 1003 and the
    stream receives nothing more."""
    adapter, factory, socket = _adapter()
    adapter.textMessageReceived("hello")
    adapter.bytesMessageReceived(b"\x00")
    assert socket.closed == [1003]
    assert factory.protocols[0].data == b""


def test_unfinished_message_is_bounded() -> None:
    """Raw bytes of a message still being received are counted; beyond the bound the
    WebSocket closes with 1009 and nothing more is read; a completed message resets it."""
    adapter, _, socket = _adapter()
    adapter.max_pending = 100
    received: list[bytes] = []
    counted = adapter.bound_receiver(received.append)
    counted(b"x" * 60)
    adapter.bytesMessageReceived(b"done")
    counted(b"x" * 60)
    assert socket.closed == []
    counted(b"x" * 60)
    counted(b"more")
    assert socket.closed == [1009]
    assert received == [b"x" * 60, b"x" * 60]


def test_options() -> None:
    """--listen-web, --trusted-proxy and --web-origin are repeatable and checked."""
    o = Options()
    o.parseOptions(["--listen-web", "tcp:8080", "--listen-web", "tcp:8081",
                    "--trusted-proxy", "10.0.0.1", "--web-origin", "https://Chat.Example/"])
    assert o["listen-web"] == ["tcp:8080", "tcp:8081"]
    assert o["trusted-proxy"] == ["10.0.0.1"]
    assert o["web-origin"] == ["https://chat.example"]
    for bad in (["--trusted-proxy", "proxy.example"], ["--web-origin", "chat.example"],
                ["--web-origin", "https://chat.example/path"]):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(bad)


def _get(server: WebServer, path: str, headers: dict[str, str] | None = None
         ) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.web_port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    return conn.getresponse()


def test_served_files_headers(web_server: WebServer) -> None:
    """Every file comes with the strict CSP, nosniff, no-referrer, framing denied and
    no-cache (revalidated: 304 when unchanged); modules have a JavaScript type; no directory
    listing, no files outside the package."""
    for path, ctype in (("/", "text/html"), ("/app.js", "text/javascript"),
                        ("/style.css", "text/css")):
        r = _get(web_server, path)
        body = r.read()
        assert r.status == 200 and body
        assert r.getheader("content-type", "").startswith(ctype)
        csp = r.getheader("content-security-policy", "")
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert r.getheader("x-content-type-options") == "nosniff"
        assert r.getheader("referrer-policy") == "no-referrer"
        assert r.getheader("cache-control") == "no-cache"
        modified = r.getheader("last-modified")
        assert modified
        again = _get(web_server, path, {"If-Modified-Since": modified})
        again.read()
        assert again.status == 304
    index = _get(web_server, "/").read().decode()
    assert "<script type=\"module\" src=\"app.js\"></script>" in index
    assert "<script>" not in index and " on" + "click=" not in index
    assert _get(web_server, "/__pycache__/").status == 404
    assert _get(web_server, "/../server/web.py").status == 404


def test_websocket_refuses_a_foreign_origin_over_http(web_server: WebServer) -> None:
    """The upgrade request with another Origin gets 403 and no WebSocket."""
    headers = {"Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
               "Origin": "http://evil.example"}
    r = _get(web_server, "/ws", headers)
    r.read()
    assert r.status == 403
    headers["Origin"] = f"http://127.0.0.1:{web_server.web_port}"
    ok = _get(web_server, "/ws", headers)
    assert ok.status == 101


HOSTILE_PAGE = """<!doctype html><script>
window.result = new Promise((resolve) => {
  const ws = new WebSocket("ws://127.0.0.1:PORT/ws");
  ws.onopen = () => resolve("open");
  ws.onerror = () => resolve("refused");
});
</script>"""


def test_hostile_page_origin_is_refused(web_server: WebServer, new_page: Any) -> None:
    """A page on another origin cannot open the chat WebSocket from a real browser."""
    page = new_page()
    html = HOSTILE_PAGE.replace("PORT", str(web_server.web_port))
    page.route("http://evil.example/", lambda route: route.fulfill(
        status=200, content_type="text/html", body=html))
    page.goto("http://evil.example/")
    assert page.evaluate("window.result") == "refused"
    assert "refused a WebSocket from origin" in web_server.log.read_text()


def _websocket_client(server: WebServer) -> tuple[socket.socket, Any]:
    """A raw WebSocket client (wsproto) that has completed the upgrade to /ws."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request

    sock = socket.create_connection(("127.0.0.1", server.web_port), timeout=10)
    ws = WSConnection(ConnectionType.CLIENT)
    origin = f"http://127.0.0.1:{server.web_port}"
    sock.sendall(ws.send(Request(host=f"127.0.0.1:{server.web_port}", target="/ws",
                                 extra_headers=[(b"origin", origin.encode())])))
    while True:
        ws.receive_data(sock.recv(65536))
        if any(isinstance(e, AcceptConnection) for e in ws.events()):
            return sock, ws


def _close_code(sock: socket.socket, ws: Any) -> int | None:
    from wsproto.events import CloseConnection

    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return None
        ws.receive_data(data or None)
        for event in ws.events():
            if isinstance(event, CloseConnection):
                return int(event.code)
        if not data:
            return None


def test_oversized_websocket_message_is_closed_1009(web_server: WebServer) -> None:
    """A message that grows past the bound without finishing is cut off with 1009 by the real
    server (Twisted would otherwise buffer it without limit)."""
    from wsproto.events import BytesMessage

    sock, ws = _websocket_client(web_server)
    piece = b"\x00" * 65536
    try:
        for _ in range(40):  # 2.5 MiB in one unfinished message
            sock.sendall(ws.send(BytesMessage(data=piece, message_finished=False)))
    except OSError:
        pass  # the server may close before all of it is written
    assert _close_code(sock, ws) == 1009
    sock.close()
    assert "WebSocket message too big" in web_server.log.read_text()


def test_text_message_on_the_real_server_is_closed_1003(web_server: WebServer) -> None:
    """A text message is refused with 1003 by the real server."""
    from wsproto.events import TextMessage

    sock, ws = _websocket_client(web_server)
    sock.sendall(ws.send(TextMessage(data="hello")))
    assert _close_code(sock, ws) == 1003
    sock.close()


def test_screenshots_go_to_docs_only_when_asked(tmp_path: Path) -> None:
    """A normal test run writes its screenshots into its temporary directory (the tracked
    docs/*.png stay untouched); CHATPROTO_SCREENSHOTS=docs refreshes docs/, another value
    names a directory."""
    assert screenshot_directory("", tmp_path) == tmp_path
    assert screenshot_directory("docs", tmp_path) == DOCS
    assert screenshot_directory(str(tmp_path / "shots"), tmp_path) == tmp_path / "shots"
    assert (tmp_path / "shots").is_dir()
