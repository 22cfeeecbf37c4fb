"""One client connection's state and behaviour, whatever carries its bytes.

A transport adapter (:class:`chatproto.server.protocol.ChatServerProtocol` for TCP and TLS)
runs the wire protocol and hands the :class:`Connection` what happens: credentials received,
login verified, session messages, connection lost. The connection sees the adapter only
through :class:`Link`. It holds the login flow, the requests in flight, Quit, keepalive, the
delivery stream and the image uploads.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.server.delivery import DeliveryStream
from chatproto.server.limits import TokenBucket
from chatproto.server.refusals import RequestError
from chatproto.server.uploads import ImageUploads
from chatproto.storage.database import StorageUnavailable
from chatproto.storage.store import LogEntry
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode, RemoteProtocolError
from chatproto.wire.handshake import CredentialsReceived, LoginVerified

if TYPE_CHECKING:
    from chatproto.server.admission import Admission
    from chatproto.server.limits import LimitSettings
    from chatproto.server.login import Authenticator, Decision
    from chatproto.server.metrics import ServerStats
    from chatproto.server.presence import PresenceAnnouncer
    from chatproto.storage.store import ChatStore

log = Logger()

#: A request handler: the connection and the message; a Deferred if it completes later.
RequestHandler = Callable[["Connection", Any], "Deferred[Any] | None"]


class Link(TypingProtocol):
    """What a connection sees of its transport adapter."""

    @property
    def peer_ip(self) -> str:
        """The peer's address (as the adapter trusts it)."""
        ...

    def send(self, msg: m.Message, *, check: bool = True) -> None:
        """Send one session message (nothing after close). ``check=False`` skips re-validating
        fields the server built from validated values (the relay hot path)."""
        ...

    def send_encoded(self, payload: bytes, kind: str = "fan-out") -> None:
        """Send a message already encoded (once for many recipients); ``kind`` names it in
        the metrics."""
        ...

    def fail(self, code: ErrorCode, reason: str) -> None:
        """A fatal error: tell the peer (best effort), then close."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...

    def accept_credentials(self, register: bool) -> None:
        """Answer the handshake's credentials: accepted."""
        ...

    def reject_credentials(self, register: bool, code: ErrorCode, reason: str,
                           retry_after_ms: int) -> None:
        """Answer the handshake's credentials: refused."""
        ...

    def open_session(self, session_id: bytes, now_ms: int) -> None:
        """The login is complete: finish the handshake and start the session."""
        ...

    def pause_reading(self) -> None:
        """Read nothing more from the peer (received frames stay undecoded) until
        :meth:`resume_reading`."""
        ...

    def resume_reading(self) -> None:
        """Decode the frames already received, then read from the peer again (unless that
        paused reading again)."""
        ...


class Services(TypingProtocol):
    """What a connection needs of the server it belongs to."""

    @property
    def clock(self) -> Any: ...
    @property
    def store(self) -> ChatStore: ...
    @property
    def auth(self) -> Authenticator: ...
    @property
    def limits(self) -> LimitSettings: ...
    @property
    def stats(self) -> ServerStats: ...
    @property
    def admission(self) -> Admission: ...
    @property
    def presence(self) -> PresenceAnnouncer: ...
    @property
    def requests(self) -> Mapping[type[m.Message], RequestHandler]: ...

    def now_ms(self) -> int: ...

    def connection_closed(self, conn: Connection) -> None:
        """Forget a closed connection."""
        ...


#: ``in_flight`` of a connection with no request waiting (an idle connection holds no set).
NO_REQUESTS: frozenset[Deferred[Any]] = frozenset()


def _req_of(msg: m.Message) -> int:
    """The ``req`` an Error answers (an ImageChunk's ``ref``; 0 if it cannot be one)."""
    req: int = getattr(msg, "req", 0) or getattr(msg, "ref", 0)
    return req if req < 2**32 else 0


class State(enum.Enum):
    HANDSHAKE = 1  # credentials, then the test message
    SESSION = 2  # signed in
    QUITTING = 3  # Quit received: later requests are ignored
    ENDED = 4  # closed, or closing


class Connection:
    """One client connection: the login flow, then the signed-in session."""

    __slots__ = ("_ended", "_lost", "_lost_waiters", "_max_in_flight", "_messages", "_ping",
                 "_ping_nonce", "_pong_deadline", "_reading_held", "_requests", "_uploads",
                 "device_id", "in_flight", "link", "log_advanced", "name", "push", "send",
                 "services", "session_id", "state", "stream", "ticket", "write_blocked")

    def __init__(self, services: Services, link: Link) -> None:
        self.services = services
        self.link = link
        self.send: Callable[..., None] = link.send
        #: The router sends encoded messages straight to the link.
        self.push: Callable[..., None] = link.send_encoded
        self.state = State.HANDSHAKE
        self.name = ""
        self.device_id = b""
        self.session_id = b""
        #: The requests waiting for an answer: a set while there are any, else NO_REQUESTS.
        self.in_flight: set[Deferred[Any]] | frozenset[Deferred[Any]] = NO_REQUESTS
        self.stream = DeliveryStream(self, services.store, services.stats, services.clock)
        #: The router tells the stream directly that the user's log advanced.
        self.log_advanced: Callable[[int, LogEntry | None, bytes | None], None] = (
            self.stream.log_advanced)
        self._requests = services.requests
        self._uploads: ImageUploads | None = None  # made by the first image (idle: no cost)
        self.ticket = services.admission.admit(link.peer_ip)
        self._ended: Deferred[None] | None = None
        self._lost = False
        self._lost_waiters: list[Deferred[None]] | None = None
        self._ping: Any = None
        self._pong_deadline: Any = None
        self._ping_nonce = 0
        limits = services.limits
        self._max_in_flight = limits.max_requests_in_flight
        #: Reading is paused because ``max_requests_in_flight`` requests wait for answers.
        self._reading_held = False
        #: The transport's write buffer is above its high-water mark: no live deliveries.
        self.write_blocked = False
        #: The Chat rate limit's bucket, made by the first Chat (it starts full either way).
        self._messages: TokenBucket | None = None

    @property
    def ip(self) -> str:
        return self.link.peer_ip

    @property
    def uploads(self) -> ImageUploads:
        """The connection's image transfers."""
        if self._uploads is None:
            self._uploads = ImageUploads(self.services.limits.max_image_bytes)
        return self._uploads

    @property
    def closed(self) -> bool:
        return self.state is State.ENDED

    def opened(self) -> None:
        """The transport is ready: refuse it now if admission says so."""
        if self.ticket.refusal is not None:
            self.fail(ErrorCode.SERVER_BUSY, self.ticket.refusal)

    def fail(self, code: ErrorCode, reason: str) -> None:
        self.link.fail(code, reason)

    # --- the login flow ----------------------------------------------------------------------

    def credentials_received(self, event: CredentialsReceived) -> None:
        d = self.services.auth.authenticate(event, self.ip)
        d.addCallback(self._decided, event.register)
        d.addErrback(self._handshake_failed)

    def _decided(self, decision: Decision, register: bool) -> None:
        if self.state is not State.HANDSHAKE:
            return
        if decision.ok:
            self.link.accept_credentials(register)
        else:
            self.link.reject_credentials(register, decision.code, decision.reason,
                                         decision.retry_after_ms)

    def login_verified(self, event: LoginVerified) -> None:
        self.name, self.device_id = event.name, event.device_id
        d = self.services.auth.record_login(event.name, self.ip)
        d.addCallback(self._logged_in)
        d.addErrback(self._handshake_failed)

    def _logged_in(self, _: object) -> None:
        if self.state is not State.HANDSHAKE:
            return
        self.session_id = os.urandom(16)
        self.state = State.SESSION
        self.ticket.handshake_done()
        self.services.stats.handshakes_completed += 1
        log.info("{name} signed in from {ip}", name=self.name, ip=self.ip)
        self.services.presence.session_started(self)
        self._schedule_ping()
        # Last: the messages that came right after the test message are handled in it.
        self.link.open_session(self.session_id, self.services.now_ms())

    def _handshake_failed(self, f: Failure) -> None:
        if self.state is not State.HANDSHAKE:
            return
        e = f.value
        if isinstance(e, RemoteProtocolError):
            self.fail(e.code, e.message)
        elif isinstance(e, StorageUnavailable):
            log.warn("handshake with {ip}: {e}", ip=self.ip, e=e)
            self.fail(ErrorCode.STORAGE_UNAVAILABLE, "the database is unavailable; try again")
        else:
            log.failure("server error during the handshake with {ip}", f, ip=self.ip)
            self.fail(ErrorCode.INTERNAL_ERROR, "internal server error")

    # --- the session -------------------------------------------------------------------------

    def message_received(self, msg: m.Message) -> None:
        """One session message. RemoteProtocolError for one a client may not send."""
        handler = self._requests.get(type(msg))
        if handler is None or self.state is not State.SESSION:
            self._other_message(msg)
            return
        if type(msg) is m.Chat:
            bucket = self._messages
            if bucket is None:
                limits = self.services.limits
                bucket = self._messages = TokenBucket(
                    limits.message_rate, limits.message_burst, self.services.clock.seconds)
            wait = bucket.take()
            if wait:
                self.send(m.Error(msg.req, int(ErrorCode.RATE_LIMITED),
                                  f"too many messages: retry after {math.ceil(wait * 1000)} ms",
                                  ()))
                return
        # maybeDeferred without its wrapping: most answers come later (a Deferred), a
        # refusal is raised at once, and a request answered at once makes no Deferred.
        try:
            d = handler(self, msg)
        except Exception:
            self._request_failed(Failure(), _req_of(msg))
            return
        if d is None:
            return
        d.addErrback(self._request_failed, _req_of(msg))
        if not d.called:
            in_flight = self.in_flight
            if not isinstance(in_flight, set):
                in_flight = self.in_flight = set()
            in_flight.add(d)
            d.addBoth(self._request_done, d)
            if len(in_flight) >= self._max_in_flight and not self._reading_held:
                self._reading_held = True
                self.link.pause_reading()

    def _other_message(self, msg: m.Message) -> None:
        """Keepalive, Quit, requests after Quit, and messages a client may not send."""
        if isinstance(msg, m.Ping):
            self.send(m.Pong(msg.nonce))
        elif isinstance(msg, m.Pong):
            self._pong(msg.nonce)
        elif self.state is not State.SESSION:
            return  # after Quit: ignored, whatever it is
        elif isinstance(msg, m.Quit):
            self._quit(msg.req)
        else:
            raise RemoteProtocolError(
                ErrorCode.UNEXPECTED_MESSAGE,
                f"{type(msg).__name__} is not a request a client may send",
            )

    def _request_done(self, result: object, d: Deferred[Any]) -> object:
        in_flight = self.in_flight
        if isinstance(in_flight, set):
            in_flight.discard(d)
            if not in_flight:
                self.in_flight = NO_REQUESTS  # an idle connection keeps no empty set
        if self._reading_held and len(in_flight) < self._max_in_flight:
            self._reading_held = False
            self.link.resume_reading()
        return result

    # --- the write side ----------------------------------------------------------------------

    def writes_paused(self) -> None:
        """The transport's write buffer passed its high-water mark: live deliveries stop (the
        log keeps them), and so does the keepalive (the write-stall deadline watches now)."""
        self.write_blocked = True
        if self._pong_deadline is not None and self._pong_deadline.active():
            self._pong_deadline.cancel()
        self._pong_deadline = None

    def writes_resumed(self) -> None:
        """The transport's write buffer drained: the stream catches up from the log."""
        self.write_blocked = False
        self.stream.resume()

    def _request_failed(self, f: Failure, req: int) -> None:
        e = f.value
        if isinstance(e, RequestError):
            self.send(m.Error(req, int(e.code), e.reason, e.names))
        elif isinstance(e, RemoteProtocolError):
            self.fail(e.code, e.message)
        elif self.closed:
            return  # e.g. the database closed under a request of a connection shut down
        elif isinstance(e, StorageUnavailable):
            log.warn("request {req} from {name}: {e}", req=req, name=self.name, e=e)
            self.send(m.Error(req, int(ErrorCode.STORAGE_UNAVAILABLE),
                              "the database is unavailable; try again", ()))
        else:
            log.failure("request {req} from {name} failed", f, req=req, name=self.name)
            self.send(m.Error(req, int(ErrorCode.INTERNAL_ERROR), "internal server error", ()))

    def drain(self) -> Deferred[Any]:
        """Fires when every request received so far has been answered."""
        return defer.DeferredList(list(self.in_flight), consumeErrors=True)

    def _quit(self, req: int) -> None:
        """Quit: the requests before it are answered (an ack sent just before Quit is stored),
        the user goes offline (last seen recorded), then AckQuit and close."""
        self.state = State.QUITTING
        d = self.drain()
        d.addCallback(lambda _: self._end_session())

        def done(_: object) -> None:
            if self.state is State.QUITTING:
                self.send(m.AckQuit(req))
                self.link.close()

        d.addCallback(done)

    # --- keepalive ---------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        interval = self.services.limits.ping_interval
        if interval > 0:
            self._ping = self.services.clock.callLater(interval, self._send_ping)

    def _send_ping(self) -> None:
        if self.state is State.ENDED:
            return
        if self.write_blocked:  # the peer would see it behind the full buffer; try later
            self._schedule_ping()
            return
        self._ping_nonce += 1
        self.send(m.Ping(self._ping_nonce))
        self._pong_deadline = self.services.clock.callLater(
            self.services.limits.ping_timeout, self._pong_overdue)
        self._schedule_ping()

    def _pong_overdue(self) -> None:
        """No Pong within the timeout. While this connection's reading is held back because
        its own requests wait (flow control), its Pong may be waiting unread behind them: the
        peer is sending, so it is alive; the deadline starts again instead."""
        if self._reading_held:
            self._pong_deadline = self.services.clock.callLater(
                self.services.limits.ping_timeout, self._pong_overdue)
            return
        self._pong_deadline = None
        self.fail(ErrorCode.PING_TIMEOUT, "no answer to ping")

    def _pong(self, nonce: int) -> None:
        if nonce == self._ping_nonce and self._pong_deadline is not None:
            if self._pong_deadline.active():
                self._pong_deadline.cancel()
            self._pong_deadline = None

    # --- the end -----------------------------------------------------------------------------

    def _end_session(self) -> Deferred[None]:
        """The session is over (quit, lost, or server stop): offline if it was the user's last
        one. Runs once; every call fires when that has happened (failures are logged)."""
        if self._ended is None:
            self._uploads = None
            ended = (self.services.presence.session_ended(self) if self.session_id
                     else defer.succeed(None))
            ended.addErrback(
                lambda f: log.failure("ending the session of {name}", f, name=self.name))
            self._ended = ended
        observer: Deferred[None] = Deferred()

        def fire(result: None) -> None:
            observer.callback(None)
            return result

        self._ended.addCallback(fire)
        return observer

    def connection_lost(self) -> Deferred[None]:
        """The transport is closed: stop everything; fires once the session has ended."""
        self.state = State.ENDED
        for call in (self._ping, self._pong_deadline):
            if call is not None and call.active():
                call.cancel()
        self.stream.stop()
        self.ticket.release()
        self._lost = True
        waiters, self._lost_waiters = self._lost_waiters, None
        d = self._end_session()
        d.addCallback(lambda _: self.services.connection_closed(self))
        for waiter in waiters or ():
            waiter.callback(None)
        return d

    def when_lost(self) -> Deferred[None]:
        """Fires once the transport has reported the connection closed."""
        if self._lost:
            return defer.succeed(None)
        waiter: Deferred[None] = Deferred()
        if self._lost_waiters is None:
            self._lost_waiters = []
        self._lost_waiters.append(waiter)
        return waiter

    def shutdown(self) -> Deferred[None]:
        """The server is stopping: answer the requests in flight, end the session, close;
        fires once the transport is closed (the error frame is out)."""
        if self.state is State.HANDSHAKE:
            self.state = State.ENDED  # a login decision still on its way is dropped
            self.fail(ErrorCode.SERVER_BUSY, "the server is shutting down")
            return self.when_lost()
        if self.state is State.SESSION:
            self.state = State.QUITTING  # requests from now on are ignored
        d = self.drain()
        d.addCallback(lambda _: self._end_session())

        def close(_: object) -> Deferred[None]:
            if self.state is not State.ENDED:
                self.state = State.ENDED
                self.fail(ErrorCode.SERVER_BUSY, "the server is shutting down")
            return self.when_lost()

        d.addCallback(close)
        return d
