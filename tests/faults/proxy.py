"""A TCP proxy for fault injection: sits between a client and a server and can cut a
connection at a chosen point of the byte stream.

The client-to-server stream is split into frames (the first is the plaintext ``Hello``, every
later one an encrypted frame whose header gives its length), so a test can cut "before",
"inside" or "right after" the next large frame (a ``Chat`` carrying a body) without decrypting
anything.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import endpoints, protocol
from twisted.internet.defer import Deferred

ENCRYPTED_HEADER = 17
TAG = 16


@dataclass
class UpstreamCut:
    """Cut at ``offset`` bytes into the next client frame with ``msg_length >= min_length``
    (``offset`` may be a function of the frame's total length)."""

    min_length: int
    offset: int | Callable[[int], int]
    # After the whole frame went through: drop the server's next bytes and cut then.
    then_cut_downstream: bool = False
    # Let this many matching frames through first.
    skip: int = 0
    fired: Deferred[None] | None = None


class _Splitter:
    """Splits the client's stream into frames."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.first = True

    def frame_length(self) -> tuple[int, int] | None:
        """(total length, msg_length) of the frame at the start of the buffer, if known."""
        if self.first:
            if len(self.buf) < 4:
                return None
            (n,) = struct.unpack_from(">I", self.buf)
            return 4 + n, n
        if len(self.buf) < 5:
            return None
        n, pad = struct.unpack_from(">IB", self.buf)
        return ENCRYPTED_HEADER + n + pad + TAG, n


class _ServerSide(protocol.Protocol):
    """The proxy's connection to the real server."""

    def __init__(self, peer: ProxyConnection) -> None:
        self.peer = peer

    def connectionMade(self) -> None:
        self.peer.upstream_ready(self)

    def dataReceived(self, data: bytes) -> None:
        self.peer.from_server(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.peer.server_lost()


class ProxyConnection(protocol.Protocol):
    """One client connection through the proxy."""

    transport: Any

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.upstream: _ServerSide | None = None
        self.pending = bytearray()  # client bytes waiting for the server connection
        self.splitter = _Splitter()
        self.cut_done = False
        self.drop_downstream = False
        self.blackholed = False
        self.up_bytes = 0
        self.down_bytes = 0

    def connectionMade(self) -> None:
        self.proxy.connections.append(self)
        if self.proxy.refusing:
            self.transport.abortConnection()
            return
        self.transport.pauseProducing()
        ep = endpoints.TCP4ClientEndpoint(self.proxy.reactor, "127.0.0.1", self.proxy.target_port)
        d = endpoints.connectProtocol(ep, _ServerSide(self))
        d.addErrback(lambda _: self.cut())

    def upstream_ready(self, upstream: _ServerSide) -> None:
        self.upstream = upstream
        if self.cut_done:
            upstream.transport.abortConnection()
            return
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.cut_done or self.blackholed or self.proxy.blackhole:
            return
        self.splitter.buf += data
        self._forward_frames()

    # The frame being forwarded: bytes still to go, bytes gone, and the cut it is armed with.
    _remaining = 0
    _done_in_frame = 0
    _total = 0
    _target: UpstreamCut | None = None
    _target_offset = 0
    _pending_fired: Deferred[None] | None = None

    def _forward_frames(self) -> None:
        sp = self.splitter
        while sp.buf and not self.cut_done:
            if self._remaining == 0:
                known = sp.frame_length()
                if known is None:
                    return
                total, msg_length = known
                arm = self.proxy.upstream_cut
                self._target = None
                if (arm is not None and msg_length >= arm.min_length and not sp.first
                        and arm.skip > 0):
                    arm.skip -= 1
                elif arm is not None and msg_length >= arm.min_length and not sp.first:
                    self.proxy.upstream_cut = None
                    self._target = arm
                    offset = arm.offset(total) if callable(arm.offset) else arm.offset
                    self._target_offset = min(max(offset, 0), total)
                sp.first = False
                self._remaining = self._total = total
                self._done_in_frame = 0
            target = self._target
            if target is not None and self._target_offset < self._total:
                n = min(len(sp.buf), self._target_offset - self._done_in_frame)
                self._send_up(bytes(sp.buf[:n]))
                del sp.buf[:n]
                self._done_in_frame += n
                if self._done_in_frame >= self._target_offset:
                    self.proxy.cuts += 1
                    self.cut()
                    if target.fired is not None:
                        target.fired.callback(None)
                return
            n = min(len(sp.buf), self._remaining)
            self._send_up(bytes(sp.buf[:n]))
            del sp.buf[:n]
            self._remaining -= n
            self._done_in_frame += n
            if self._remaining == 0 and target is not None:
                self._target = None
                if target.then_cut_downstream:
                    self.drop_downstream = True
                    self._pending_fired = target.fired
                elif target.fired is not None:
                    target.fired.callback(None)

    def _send_up(self, data: bytes) -> None:
        if not data:
            return
        self.up_bytes += len(data)
        if self.upstream is None:
            self.pending += data
        else:
            if self.pending:
                self.upstream.transport.write(bytes(self.pending))
                self.pending.clear()
            self.upstream.transport.write(data)

    def from_server(self, data: bytes) -> None:
        if self.cut_done or self.blackholed or self.proxy.blackhole:
            return
        if self.drop_downstream:
            self.proxy.cuts += 1
            self.cut()
            fired, self._pending_fired = self._pending_fired, None
            if fired is not None:
                fired.callback(None)
            return
        self.down_bytes += len(data)
        self.transport.write(data)

    def cut(self) -> None:
        """Abort both sides now."""
        if self.cut_done:
            return
        self.cut_done = True
        self.transport.abortConnection()
        if self.upstream is not None:
            self.upstream.transport.abortConnection()

    def server_lost(self) -> None:
        if not self.cut_done:
            self.cut_done = True
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.proxy.connections:
            self.proxy.connections.remove(self)
        if self.upstream is not None and not self.cut_done:
            self.upstream.transport.loseConnection()
        self.cut_done = True


class Proxy(protocol.Factory):
    """Listens on 127.0.0.1 and forwards each connection to ``target_port``."""

    def __init__(self, reactor: Any, target_port: int) -> None:
        self.reactor = reactor
        self.target_port = target_port
        self.connections: list[ProxyConnection] = []
        self.upstream_cut: UpstreamCut | None = None
        self.refusing = False
        self.blackhole = False
        self.cuts = 0
        self.port = 0
        self._listening: Any = None

    def buildProtocol(self, addr: Any) -> ProxyConnection:
        return ProxyConnection(self)

    async def start(self, port: int = 0) -> int:
        ep = endpoints.TCP4ServerEndpoint(self.reactor, port, interface="127.0.0.1")
        self._listening = await ep.listen(self)
        self.port = self._listening.getHost().port
        return self.port

    def arm(self, cut: UpstreamCut) -> Deferred[None]:
        """Cut the next matching frame as ``cut`` says; fires when the cut happened."""
        cut.fired = Deferred()
        self.upstream_cut = cut
        return cut.fired

    def cut_all(self) -> int:
        """Abort every open connection; returns how many."""
        conns = [c for c in self.connections if not c.cut_done]
        for conn in conns:
            conn.cut()
        self.cuts += len(conns)
        return len(conns)

    async def stop(self) -> None:
        self.cut_all()
        if self._listening is not None:
            await self._listening.stopListening()
