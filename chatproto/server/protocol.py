"""The server's Twisted adapter: feeds bytes to the handshake and the session, owns the timers.

No parsing and no cryptography happen here; :mod:`chatproto.wire` does both. What to do with a
signed-in user's messages is :class:`chatproto.server.chat.ChatHandlers`' business.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.storage.database import StorageUnavailable
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode, RemoteProtocolError
from chatproto.wire.handshake import (
    CredentialsReceived,
    HandshakeFailed,
    LoginVerified,
    ServerEvent,
    ServerHandshake,
)
from chatproto.wire.session import Session

if TYPE_CHECKING:
    from chatproto.server.login import Decision
    from chatproto.server.service import ChatServer

log = Logger()


class ChatServerProtocol(Protocol):
    """One client connection: the handshake, then the signed-in session."""

    transport: Any  # an ITransport (typed loosely: mypy does not read zope interfaces)

    def __init__(self, server: ChatServer, addr: IAddress | None) -> None:
        self.server = server
        self.ip: str = getattr(addr, "host", str(addr))
        self.handshake: ServerHandshake | None = None
        self.session: Session | None = None
        self.name: str | None = None
        self.device_id: bytes | None = None
        self.session_id = b""
        self.closed = False
        self.synced = False
        self._deadline: Any = None
        self._idle: Any = None
        self._ping: Any = None
        self._pong_deadline: Any = None
        self._ping_nonce = 0
        self._waiting = False  # a Deferred holds the handshake
        self.handlers: Any = None

    # --- connection lifetime -----------------------------------------------------------------

    def connectionMade(self) -> None:
        refusal = self.server.connection_opened(self)
        self.handshake = ServerHandshake(
            self.server.identity, max_attempts=self.server.limits.max_attempts
        )
        if refusal is not None:
            self._fail(ErrorCode.SERVER_BUSY, refusal)
            return
        clock = self.server.clock
        self._deadline = clock.callLater(
            self.server.limits.handshake_timeout,
            self._fail, ErrorCode.HANDSHAKE_TIMEOUT, "the handshake took too long",
        )
        self._idle = clock.callLater(
            self.server.limits.idle_timeout,
            self._fail, ErrorCode.IDLE_TIMEOUT, "nothing was received",
        )

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed = True
        for call in (self._deadline, self._idle, self._ping, self._pong_deadline):
            if call is not None and call.active():
                call.cancel()
        self.server.connection_closed(self)

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            if self.session is not None:
                self.session.receive_data(data)
                self._dispatch()
            elif self.handshake is not None:
                self._reset_idle()
                self._run(self.handshake.receive_data(data))
        except RemoteProtocolError as e:
            self._fail(e.code, e.message)
        except Exception:
            # Our bug, not the peer's: keep serving everyone else, tell this peer, count it.
            log.failure("unexpected error handling data from {ip}", ip=self.ip)
            self._fail(ErrorCode.INTERNAL_ERROR, "internal server error")

    # --- output ------------------------------------------------------------------------------

    def send(self, msg: m.Message, *, check: bool = True) -> None:
        """Send one session message (nothing after close). ``check=False`` skips re-validating
        fields that come from already validated values (the relay hot path)."""
        if not self.closed and self.session is not None:
            data = self.session.send(msg, check=check)
            kind = type(msg).__name__
            stats = self.server.stats
            stats.messages_out[kind] += 1
            stats.bytes_out[kind] += len(data)
            self.transport.write(data)

    def send_encoded(self, payload: bytes) -> None:
        """Send a message encoded once for many recipients."""
        if not self.closed and self.session is not None:
            data = self.session.send_encoded(payload)
            self.server.stats.messages_out["fan-out"] += 1
            self.server.stats.bytes_out["fan-out"] += len(data)
            self.transport.write(data)

    def _flush(self) -> None:
        if self.handshake is not None:
            out = self.handshake.data_to_send()
            if out and not self.closed:
                self.transport.write(out)

    def _fail(self, code: ErrorCode, reason: str) -> None:
        """A fatal error: tell the peer why (best effort), then close."""
        if self.closed:
            return
        log.info("closing {ip}: {code} {reason}", ip=self.ip, code=code.name, reason=reason)
        self.server.metrics_error(code)
        if self.session is not None:
            try:
                self.transport.write(self.session.send(m.Error(0, int(code), reason, ())))
            except Exception:  # the encoder itself may be exhausted (FRAME_LIMIT)
                log.info("could not send the error frame to {ip}", ip=self.ip)
        elif self.handshake is not None:
            self._flush()
            self.transport.write(self.handshake.error_frame(code, reason))
        self.close()

    def close(self) -> None:
        self.closed = True
        self.transport.loseConnection()

    # --- the handshake -----------------------------------------------------------------------

    def _reset_idle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.server.limits.idle_timeout)

    def _run(self, events: list[ServerEvent]) -> None:
        self._flush()
        for event in events:
            if isinstance(event, CredentialsReceived):
                self._wait(self.server.authenticate(event, self.ip), self._decided, event)
            elif isinstance(event, LoginVerified):
                self.name, self.device_id = event.name, event.device_id
                self.session_id = os.urandom(16)
                self._wait(self.server.login(self), self._logged_in)
            elif isinstance(event, HandshakeFailed):
                log.info("handshake with {ip} failed: {reason}", ip=self.ip, reason=event.reason)
                self.close()

    def _wait(self, d: Deferred[Any], callback: Any, *args: Any) -> None:
        self._waiting = True

        def done(result: Any) -> None:
            self._waiting = False
            if self.closed:
                return
            try:
                callback(result, *args)
            except RemoteProtocolError as e:
                self._fail(e.code, e.message)

        def failed(f: Failure) -> None:
            self._waiting = False
            if f.check(StorageUnavailable):
                log.warn("handshake with {ip}: {e}", ip=self.ip, e=f.value)
                self._fail(ErrorCode.STORAGE_UNAVAILABLE, "the database is unavailable; "
                           "try again")
                return
            log.failure("server error during the handshake with {ip}", f, ip=self.ip)
            self._fail(ErrorCode.INTERNAL_ERROR, "internal server error")

        d.addCallbacks(done, failed)

    def _decided(self, decision: Decision, event: CredentialsReceived) -> None:
        hs = self.handshake
        assert hs is not None
        if event.register:
            events = (hs.accept_register() if decision.ok
                      else hs.reject_register(decision.code, decision.reason,
                                              decision.retry_after_ms))
        else:
            events = (hs.accept_signin() if decision.ok
                      else hs.reject_signin(decision.code, decision.reason,
                                            decision.retry_after_ms))
        self._run(events)

    def _logged_in(self, _: object) -> None:
        hs = self.handshake
        assert hs is not None
        self.session = hs.complete(self.session_id, self.server.now_ms())
        self._flush()
        self.handshake = None
        for call in (self._deadline, self._idle):
            if call is not None and call.active():
                call.cancel()
        self.server.session_started(self)
        self._schedule_ping()
        self._dispatch()  # messages the client sent right after its test message

    # --- the session -------------------------------------------------------------------------

    def _dispatch(self) -> None:
        session = self.session
        assert session is not None
        while not self.closed:
            msg = session.next_message()
            if msg is None:
                return
            kind = type(msg).__name__
            stats = self.server.stats
            stats.messages_in[kind] += 1
            stats.bytes_in[kind] += session.last_payload_size
            if isinstance(msg, m.Ping):
                self.send(m.Pong(msg.nonce))
            elif isinstance(msg, m.Pong):
                if msg.nonce == self._ping_nonce and self._pong_deadline is not None:
                    if self._pong_deadline.active():
                        self._pong_deadline.cancel()
                    self._pong_deadline = None
            elif isinstance(msg, m.Quit):
                d = self.handlers.drain()
                d.addCallback(lambda _: self.server.quit(self))
                self._wait(d, self._quitted, msg.req)
                return
            else:
                self.handlers.handle(msg)

    def _quitted(self, _: object, req: int) -> None:
        self.send(m.AckQuit(req))
        self.close()

    def _schedule_ping(self) -> None:
        interval = self.server.limits.ping_interval
        if interval > 0:
            self._ping = self.server.clock.callLater(interval, self._send_ping)

    def _send_ping(self) -> None:
        if self.closed:
            return
        self._ping_nonce += 1
        self.send(m.Ping(self._ping_nonce))
        self._pong_deadline = self.server.clock.callLater(
            self.server.limits.ping_timeout,
            self._fail, ErrorCode.PING_TIMEOUT, "no answer to ping",
        )
        self._schedule_ping()


class ChatServerFactory(Factory):
    """Builds a :class:`ChatServerProtocol` per connection, all sharing one ChatServer."""

    def __init__(self, server: ChatServer) -> None:
        self.server = server

    def buildProtocol(self, addr: IAddress | None) -> ChatServerProtocol:
        return ChatServerProtocol(self.server, addr)
