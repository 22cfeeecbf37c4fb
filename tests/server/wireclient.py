"""Test clients built on the sans-IO ClientHandshake (not on chatproto.client), and a TCP proxy.

* :class:`WireClient`: a Twisted protocol that queues every handshake event and session message.
* :class:`BlockingClient`: the same over a blocking socket, for servers in a subprocess.
* :class:`Proxy`: a man in the middle that records (and may rewrite) both directions.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredQueue

from chatproto.wire import messages as m
from chatproto.wire.errors import RemoteProtocolError
from chatproto.wire.handshake import (
    ClientHandshake,
    HandshakeFailed,
    LoginComplete,
    Registered,
    RegisterRejected,
    ServerIdentityReceived,
    SigninRejected,
)


@dataclass(frozen=True)
class Closed:
    """The connection was closed (queued as the last item)."""


class WireClient(protocol.Protocol):
    """Queues ClientHandshake events, session messages, RemoteProtocolErrors, then Closed."""

    def __init__(self, corrupt_finished: bool = False) -> None:
        self.hs = ClientHandshake()
        self.items: DeferredQueue[Any] = DeferredQueue()
        self.lost: Deferred[None] = Deferred()
        self.corrupt_finished = corrupt_finished
        self.last_chunk = b""  # the bytes of the last dataReceived (one frame, on loopback)
        self.transport: Any = None

    def connectionMade(self) -> None:
        self.hs.start()
        self.flush()

    def flush(self) -> None:
        out = self.hs.data_to_send()
        if out and self.corrupt_finished and self.hs.state.name == "AWAIT_HELLO_DONE":
            self.corrupt_finished = False
            out = out[:-1] + bytes([out[-1] ^ 1])  # the last byte: the Finished frame's tag
        if out:
            self.transport.write(out)

    def dataReceived(self, data: bytes) -> None:
        self.last_chunk = data
        try:
            if self.hs.session is None:
                for event in self.hs.receive_data(data):
                    self.items.put(event)
                self.flush()
            else:
                self.hs.session.receive_data(data)
            if self.hs.session is not None:
                while (msg := self.hs.session.next_message()) is not None:
                    self.items.put(msg)
        except RemoteProtocolError as e:
            self.items.put(e)
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.items.put(Closed())
        self.lost.callback(None)

    def send(self, msg: m.Message) -> None:
        assert self.hs.session is not None
        self.transport.write(self.hs.session.send(msg))

    def next(self) -> Deferred[Any]:
        return self.items.get()

    async def expect(self, kind: type) -> Any:
        item = await self.next()
        assert isinstance(item, kind), f"expected {kind.__name__}, got {item!r}"
        return item

    async def trust(self) -> ServerIdentityReceived:
        ident = await self.expect(ServerIdentityReceived)
        self.hs.accept_identity()
        return ident

    async def register(self, name: str, password: str) -> Any:
        self.hs.register(name, password)
        self.flush()
        item = await self.next()
        assert isinstance(item, Registered | RegisterRejected | HandshakeFailed), item
        return item

    async def signin(self, name: str, password: str, device: bytes = b"d" * 16) -> Any:
        self.hs.signin(name, password, device)
        self.flush()
        item = await self.next()
        assert isinstance(item, LoginComplete | SigninRejected | HandshakeFailed), item
        return item

    def close(self) -> Deferred[None]:
        self.transport.loseConnection()
        return self.lost


async def connect(reactor: Any, port: int, **kw: Any) -> WireClient:
    """A WireClient connected to 127.0.0.1:port."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    client = WireClient(**kw)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return client


# --- blocking ------------------------------------------------------------------------------


class BlockingClient:
    """The handshake over a blocking socket (5 s timeout per read)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(5)
        self.hs = ClientHandshake()
        self.pending: list[Any] = []

    def _flush(self) -> None:
        out = self.hs.data_to_send()
        if out:
            self.sock.sendall(out)

    def next(self) -> Any:
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                return Closed()
            if self.hs.session is None:
                self.pending.extend(self.hs.receive_data(data))
                self._flush()
            else:
                self.hs.session.receive_data(data)
            if self.hs.session is not None:
                while (msg := self.hs.session.next_message()) is not None:
                    self.pending.append(msg)
        return self.pending.pop(0)

    def start(self) -> ServerIdentityReceived:
        self.hs.start()
        self._flush()
        ident = self.next()
        assert isinstance(ident, ServerIdentityReceived), ident
        self.hs.accept_identity()
        return ident

    def register(self, name: str, password: str) -> Any:
        self.hs.register(name, password)
        self._flush()
        return self.next()

    def signin(self, name: str, password: str) -> Any:
        self.hs.signin(name, password, os.urandom(16))
        self._flush()
        return self.next()

    def send(self, msg: m.Message) -> None:
        assert self.hs.session is not None
        self.sock.sendall(self.hs.session.send(msg))


def register_and_signin(sock: socket.socket, name: str, password: str) -> tuple[Any, Any]:
    """Register then sign in on one blocking connection; returns (identity event, LoginComplete),
    having quit the session (AckQuit received)."""
    client = BlockingClient(sock)
    ident = client.start()
    assert isinstance(client.register(name, password), Registered)
    done = client.signin(name, password)
    assert isinstance(done, LoginComplete), done
    client.send(m.Quit(1))
    ack = client.next()
    while isinstance(ack, m.Ping | m.PresenceEvent):
        ack = client.next()
    assert isinstance(ack, m.AckQuit), ack
    return ident, done


# --- proxy ---------------------------------------------------------------------------------


def plain_frame(data: bytes) -> tuple[bytes, bytes] | None:
    """Split one plaintext frame off ``data``: (frame, rest), or None if incomplete."""
    if len(data) < 4:
        return None
    (length,) = struct.unpack(">I", data[:4])
    if len(data) < 4 + length:
        return None
    return data[: 4 + length], data[4 + length :]


@dataclass
class ProxyLog:
    """What went through one proxied connection."""

    to_server: list[bytes] = field(default_factory=list)
    to_client: list[bytes] = field(default_factory=list)

    def all_bytes(self) -> bytes:
        return b"".join(self.to_server) + b"".join(self.to_client)


#: Rewrites the server's first frame (the ServerKey); given the frame, returns the new one.
Rewrite = Callable[[bytes], bytes]


class _ServerSide(protocol.Protocol):
    def __init__(self, front: _ClientSide) -> None:
        self.front = front
        self.buffer = b""
        self.rewritten = front.proxy.rewrite is None

    def connectionMade(self) -> None:
        self.front.back = self
        for data in self.front.early:
            self.transport.write(data)  # type: ignore[union-attr]
        self.front.early.clear()

    def dataReceived(self, data: bytes) -> None:
        if not self.rewritten:
            self.buffer += data
            split = plain_frame(self.buffer)
            if split is None:
                return
            self.rewritten = True
            frame, rest = split
            rewrite = self.front.proxy.rewrite
            assert rewrite is not None
            data = rewrite(frame) + rest
        self.front.log.to_client.append(data)
        self.front.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.front.transport.loseConnection()  # type: ignore[union-attr]


class _ClientSide(protocol.Protocol):
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.log = ProxyLog()
        self.back: _ServerSide | None = None
        self.early: list[bytes] = []
        proxy.logs.append(self.log)

    def connectionMade(self) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        ep = TCP4ClientEndpoint(self.proxy.reactor, "127.0.0.1", self.proxy.target)
        d = connectProtocol(ep, _ServerSide(self))
        d.addErrback(lambda _: self.transport.loseConnection())  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.log.to_server.append(data)
        if self.back is None:
            self.early.append(data)
        else:
            self.back.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        if self.back is not None:
            self.back.transport.loseConnection()  # type: ignore[union-attr]


class Proxy(protocol.Factory):
    """Forwards 127.0.0.1:<listening port> to 127.0.0.1:target, recording every byte."""

    def __init__(self, reactor: Any, target: int, rewrite: Rewrite | None = None) -> None:
        self.reactor = reactor
        self.target = target
        self.rewrite = rewrite
        self.logs: list[ProxyLog] = []

    def buildProtocol(self, addr: Any) -> _ClientSide:
        return _ClientSide(self)


def replace_server_key(frame: bytes) -> bytes:
    """The ServerKey frame with key A replaced by another valid X25519 public key."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    msg = m.decode_message(frame[4:])
    assert isinstance(msg, m.ServerKey | m.ServerKey2)
    key = msg.server_key if isinstance(msg, m.ServerKey) else msg.server_share
    other = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    # A hybrid share ends with its X25519 half: replace that half.
    return frame.replace(key, key[:-32] + other)


