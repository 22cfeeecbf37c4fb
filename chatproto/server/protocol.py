"""The TCP (and TLS) adapter: bytes in and out, the handshake timers, nothing else.

It feeds received bytes to the wire protocol (:class:`ServerHandshake`, then the
:class:`Session`), hands what they produce to the connection's :class:`Connection`, and
writes what the connection sends. Login, chat and delivery are the connection's business
(:mod:`chatproto.server.connection`); parsing and cryptography are :mod:`chatproto.wire`'s.
It works over any transport with ``write``, ``loseConnection`` and ``getPeer``.

Flow control (README, "Resource bounds"): the adapter is the transport's streaming producer.
When the transport's write buffer passes its high-water mark it calls :meth:`pauseProducing`:
the connection stops pushing deliveries (its stream reads the log again once
:meth:`resumeProducing` says the buffer drained), bytes still written meanwhile are counted
against ``max_write_backlog``, and a buffer still above the mark after ``write_stall_timeout``
aborts the connection, releasing its buffers. A connection the server closes is aborted if its
transport has not closed within ``write_stall_timeout`` either (``loseConnection`` waits for the
peer to read what is still buffered, and a peer that reads nothing would hold it forever). On
the read side the connection asks the adapter
to stop reading (:meth:`pause_reading`) while too many of its requests wait for an answer;
frames already received stay undecoded in the session's buffer until it reads again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet.interfaces import IAddress, IConsumer, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from chatproto.server.connection import Connection, Link
from chatproto.server.limits import LimitSettings
from chatproto.server.metrics import ServerStats
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from chatproto.wire.handshake import (
    CredentialsReceived,
    HandshakeFailed,
    LoginVerified,
    ServerEvent,
    ServerHandshake,
)
from chatproto.wire.session import Session

log = Logger()


def _pauses_producers(transport: Any) -> bool:
    """Whether the write-side flow control applies: TCP and TLS transports, and the web
    listener's stream transport over either (consumers), pause a registered producer at their
    high-water mark."""
    return IConsumer.providedBy(transport) or isinstance(transport, TLSMemoryBIOProtocol)


class ConnectionSource(TypingProtocol):
    """What the adapter needs of the server."""

    @property
    def identity(self) -> Ed25519PrivateKey: ...
    @property
    def limits(self) -> LimitSettings: ...
    @property
    def clock(self) -> Any: ...
    @property
    def stats(self) -> ServerStats: ...
    @property
    def versions(self) -> tuple[int, ...]: ...

    def open_connection(self, link: Link) -> Connection:
        """A new connection's state, talking back through ``link``."""
        ...


@implementer(IPushProducer)
class ChatServerProtocol(Protocol):
    """One client connection over a stream transport: implements :class:`Link`, and is the
    transport's streaming producer (the transport pauses it when its write buffer is full)."""

    transport: Any  # an ITransport (typed loosely: mypy does not read zope interfaces)

    def __init__(self, server: ConnectionSource, addr: IAddress | None) -> None:
        self.server = server
        self.peer_ip: str = getattr(addr, "host", str(addr))
        self.handshake: ServerHandshake | None = None
        self.session: Session | None = None
        self.conn: Connection | None = None
        self.closed = False
        self._deadline: Any = None
        self._idle: Any = None
        #: The transport's write buffer is above its high-water mark (it paused us).
        self.write_paused = False
        #: Bytes written since the transport paused us.
        self.write_backlog = 0
        self._stall: Any = None
        #: Aborts a transport that has not closed ``write_stall_timeout`` after close().
        self._closing: Any = None
        #: The connection asked us to stop reading (too many requests in flight).
        self.reading_paused = False
        self._dispatching = False
        self._producer_registered = False

    # --- connection lifetime -----------------------------------------------------------------

    def connectionMade(self) -> None:
        server = self.server
        self.handshake = ServerHandshake(server.identity, max_attempts=server.limits.max_attempts,
                                         versions=server.versions)
        self.conn = server.open_connection(self)
        self.conn.opened()
        if self.closed:
            return
        if _pauses_producers(self.transport):
            self.transport.registerProducer(self, True)
            self._producer_registered = True
        clock = server.clock
        self._deadline = clock.callLater(
            server.limits.handshake_timeout,
            self.fail, ErrorCode.HANDSHAKE_TIMEOUT, "the handshake took too long",
        )
        self._idle = clock.callLater(
            server.limits.idle_timeout, self.fail, ErrorCode.IDLE_TIMEOUT, "nothing was received",
        )

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed = True
        self._cancel_timers()
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
        if self._closing is not None and self._closing.active():
            self._closing.cancel()
        self._closing = None
        if self.conn is not None:
            self.conn.connection_lost()

    def _cancel_timers(self) -> None:
        for call in (self._deadline, self._idle):
            if call is not None and call.active():
                call.cancel()
        self._deadline = self._idle = None  # a signed-in connection keeps no dead timers

    # --- IPushProducer: the transport's write buffer -----------------------------------------

    def pauseProducing(self) -> None:
        """The transport's write buffer passed its high-water mark."""
        if self.write_paused or self.closed:
            return
        self.write_paused = True
        self.write_backlog = 0
        self._stall = self.server.clock.callLater(self.server.limits.write_stall_timeout,
                                                  self._stalled)
        if self.conn is not None:
            self.conn.writes_paused()

    def resumeProducing(self) -> None:
        """The transport's write buffer drained."""
        if self._producer_registered and getattr(self.transport, "disconnecting", False):
            # Someone called loseConnection while we were paused: a transport closes only
            # once its producer is gone.
            self._producer_registered = False
            self.transport.unregisterProducer()
        if not self.write_paused:
            return
        self.write_paused = False
        self.write_backlog = 0
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
        if self.conn is not None and not self.closed:
            self.conn.writes_resumed()

    def stopProducing(self) -> None:
        """The transport is closing (connectionLost follows)."""

    def _stalled(self) -> None:
        self._stall = None
        self.abort(f"nothing read for {self.server.limits.write_stall_timeout:g} s")

    def abort(self, why: str) -> None:
        """Close at once, dropping what the transport still buffers (a peer that does not
        read gets no error frame: it would wait behind the rest)."""
        log.info("aborting {ip}: {why}", ip=self.peer_ip, why=why)
        self.server.stats.errors["WRITE_STALLED"] += 1
        self.closed = True
        self.transport.abortConnection()

    def _over_backlog(self, size: int) -> bool:
        """Count ``size`` bytes written while paused; True (and aborted) beyond the bound."""
        self.write_backlog += size
        limit = self.server.limits.max_write_backlog
        if self.write_backlog <= limit:
            return False
        self.abort(f"more than {limit} bytes waiting")
        return True

    # --- reading -----------------------------------------------------------------------------

    def pause_reading(self) -> None:
        if not self.reading_paused:
            self.reading_paused = True
            if not self.closed:
                self.transport.pauseProducing()

    def resume_reading(self) -> None:
        if not self.reading_paused:
            return
        self.reading_paused = False
        if self.closed:
            return
        if not self._dispatching and self.session is not None:
            # The frames received before the pause first; they may fill the requests again.
            self._safely(self._dispatch)
        if not self.reading_paused and not self.closed:
            self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            if self.session is not None:
                self.session.receive_data(data)
                self._dispatch()
            elif self.handshake is not None:
                if self._idle is not None and self._idle.active():
                    self._idle.reset(self.server.limits.idle_timeout)
                self._run(self.handshake.receive_data(data))
        except Exception as e:
            self._step_failed(e)

    def _safely(self, step: Callable[[], object]) -> None:
        """Run a step of the wire protocol outside dataReceived."""
        try:
            step()
        except Exception as e:
            self._step_failed(e)

    def _step_failed(self, e: Exception) -> None:
        """In an except block: the peer's violations and our bugs are fatal to this connection
        only."""
        if isinstance(e, RemoteProtocolError):
            self.fail(e.code, e.message)
        else:
            # Our bug, not the peer's: keep serving everyone else, tell this peer, count it.
            log.failure("unexpected error handling data from {ip}", ip=self.peer_ip)
            self.fail(ErrorCode.INTERNAL_ERROR, "internal server error")

    def _run(self, events: list[ServerEvent]) -> None:
        self._flush()
        conn = self.conn
        assert conn is not None
        for event in events:
            if isinstance(event, CredentialsReceived):
                conn.credentials_received(event)
            elif isinstance(event, LoginVerified):
                conn.login_verified(event)
            elif isinstance(event, HandshakeFailed):
                log.info("handshake with {ip} failed: {reason}", ip=self.peer_ip,
                         reason=event.reason)
                self.close()

    def _dispatch(self) -> None:
        session = self.session
        conn = self.conn
        assert session is not None and conn is not None
        stats = self.server.stats
        self._dispatching = True
        try:
            # Paused: the rest stays undecoded in the session's buffer (bytes, not objects).
            while not self.closed and not self.reading_paused:
                msg = session.next_message()
                if msg is None:
                    return
                kind = type(msg).__name__
                stats.messages_in[kind] += 1
                stats.bytes_in[kind] += session.last_payload_size
                conn.message_received(msg)
        finally:
            self._dispatching = False

    def _flush(self) -> None:
        if self.handshake is not None:
            out = self.handshake.data_to_send()
            if out and not self.closed:
                self.transport.write(out)

    # --- Link: what the connection asks of the transport -------------------------------------

    def send(self, msg: m.Message, *, check: bool = True) -> None:
        if not self.closed and self.session is not None:
            try:
                data = self.session.send(msg, check=check)
            except LocalProtocolError as e:  # this key's volume is used up (version 1)
                self._exhausted(e)
                return
            kind = type(msg).__name__
            stats = self.server.stats
            stats.messages_out[kind] += 1
            stats.bytes_out[kind] += len(data)
            if self.write_paused and self._over_backlog(len(data)):
                return
            self.transport.write(data)

    def send_encoded(self, payload: bytes, kind: str = "fan-out") -> None:
        if not self.closed and self.session is not None:
            try:
                data = self.session.send_encoded(payload)
            except LocalProtocolError as e:
                self._exhausted(e)
                return
            stats = self.server.stats
            stats.messages_out[kind] += 1
            stats.bytes_out[kind] += len(data)
            if self.write_paused and self._over_backlog(len(data)):
                return
            self.transport.write(data)

    def _exhausted(self, e: LocalProtocolError) -> None:
        """The session may send no more (FRAME_LIMIT): close; the client reconnects with new
        keys and resumes from its cursor, so nothing is lost."""
        log.info("closing {ip}: {e}", ip=self.peer_ip, e=e)
        self.close()

    def fail(self, code: ErrorCode, reason: str) -> None:
        if self.closed:
            return
        log.info("closing {ip}: {code} {reason}", ip=self.peer_ip, code=code.name, reason=reason)
        self.server.stats.errors[code.name] += 1
        if self.session is not None:
            try:
                self.transport.write(self.session.send(m.Error(0, int(code), reason, ())))
            except Exception:  # the encoder itself may be exhausted (FRAME_LIMIT)
                log.info("could not send the error frame to {ip}", ip=self.peer_ip)
        elif self.handshake is not None:
            self._flush()
            self.transport.write(self.handshake.error_frame(code, reason))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.write_paused:
            # loseConnection would wait for a peer that does not read: release the buffers now.
            self.transport.abortConnection()
            return
        if self._producer_registered:
            # A transport with a producer registered closes only once it is unregistered.
            self._producer_registered = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()
        if self._closing is None and not getattr(self.transport, "disconnected", False):
            # loseConnection waits until the peer has read what is buffered (in the process
            # below the mark, or only in the kernel): a peer that reads nothing would keep the
            # connection and its buffers for ever.
            self._closing = self.server.clock.callLater(
                self.server.limits.write_stall_timeout, self._close_stalled)

    def _close_stalled(self) -> None:
        self._closing = None
        self.abort(f"not closed {self.server.limits.write_stall_timeout:g} s after close")

    def accept_credentials(self, register: bool) -> None:
        hs = self.handshake
        if hs is not None and not self.closed:
            self._safely(lambda: self._run(hs.accept_register() if register
                                           else hs.accept_signin()))

    def reject_credentials(self, register: bool, code: ErrorCode, reason: str,
                           retry_after_ms: int) -> None:
        hs = self.handshake
        if hs is not None and not self.closed:
            reject = hs.reject_register if register else hs.reject_signin
            self._safely(lambda: self._run(reject(code, reason, retry_after_ms)))

    def open_session(self, session_id: bytes, now_ms: int) -> None:
        hs = self.handshake
        if hs is None or self.closed:
            return
        self.session = hs.complete(session_id, now_ms)
        self._flush()
        self.handshake = None
        self._cancel_timers()
        self._safely(self._dispatch)  # messages the client sent right after its test message


class ChatServerFactory(Factory):
    """Builds a :class:`ChatServerProtocol` per connection, all sharing one server."""

    def __init__(self, server: ConnectionSource) -> None:
        self.server = server

    def buildProtocol(self, addr: IAddress | None) -> ChatServerProtocol:
        return ChatServerProtocol(self.server, addr)
