"""The Twisted Protocol adapter of the client: bytes in and out, timers, nothing else.

:class:`ChatClientProtocol` feeds received bytes to the sans-IO
:class:`~chatproto.wire.handshake.ClientHandshake` and, once signed in, to its
:class:`~chatproto.wire.session.Session`; it writes what they produce, answers pings, sends its
own pings and enforces the handshake deadline. Everything else (checking the server identity,
matching replies to requests, the listener) belongs to its :class:`ProtocolDelegate`, which is
:class:`chatproto.client.api.ChatClient` in the library; a reconnecting owner can later create a
new protocol per connection and keep the delegate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from chatproto.client.errors import ConnectionLost, HandshakeTimeout
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from chatproto.wire.handshake import (
    ClientEvent,
    ClientHandshake,
    ClientState,
    HandshakeFailed,
    LoginComplete,
    ServerIdentityReceived,
)
from chatproto.wire.session import Session

__all__ = ["ChatClientProtocol", "ProtocolDelegate"]


class ProtocolDelegate(TypingProtocol):
    """What the protocol reports to its owner."""

    def handshake_event(self, protocol: ChatClientProtocol, event: ClientEvent) -> None:
        """A handshake event (identity received, signin answer, login complete, failure)."""

    def message_received(self, protocol: ChatClientProtocol, msg: m.Message) -> None:
        """A session message other than Ping and Pong."""

    def connection_lost(self, protocol: ChatClientProtocol, reason: Failure) -> None:
        """The connection closed; ``reason`` says why (our own error if we closed it)."""


class ChatClientProtocol(Protocol):
    """One connection to a chatproto server.

    Args:
        delegate: Receives the handshake events, the session messages and the close.
        clock: Schedules the timers (the reactor, or a ``task.Clock`` in tests).
        ping_interval: Seconds between our pings once signed in (0 disables them).
        ping_timeout: Seconds to wait for the Pong before closing the connection.
        handshake_timeout: Seconds to wait for the server's key after Hello.
        handshake: The handshake machine (tests may pass one with a fixed rng).
    """

    transport: Any  # an ITransport (typed loosely: mypy does not read zope interfaces)

    def __init__(
        self,
        delegate: ProtocolDelegate,
        clock: Any,  # an IReactorTime (mypy does not read zope interfaces)
        *,
        ping_interval: float = 30,
        ping_timeout: float = 10,
        handshake_timeout: float = 10,
        handshake: ClientHandshake | None = None,
    ) -> None:
        self.delegate = delegate
        # Typed loosely: mypy does not read zope interfaces.
        self.clock: Any = clock
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.handshake_timeout = handshake_timeout
        self.handshake = handshake if handshake is not None else ClientHandshake()
        self.session: Session | None = None
        self.closed = False
        self._close_error: BaseException | None = None
        self._handshake_deadline: Any = None
        self._ping_call: Any = None
        self._pong_deadline: Any = None
        self._ping_nonce = 0
        self._streams: deque[_Stream] = deque()
        self._producer: _FrameProducer | None = None

    # Twisted callbacks.

    def connectionMade(self) -> None:
        """Send Hello and start the handshake deadline."""
        self.handshake.start()
        self._flush_handshake()
        if self.handshake_timeout > 0:
            self._handshake_deadline = self.clock.callLater(
                self.handshake_timeout, self._handshake_timed_out
            )

    def dataReceived(self, data: bytes) -> None:
        """Feed the handshake or the session; dispatch what comes out."""
        if self.closed:
            return
        try:
            if self.session is None:
                self._handshake_data(data)
            else:
                self.session.receive_data(data)
            if self.session is not None:
                self._dispatch()
        except ProtocolError as e:
            # A client never sends ERROR (docs/protocol.rst): it just closes the connection.
            self.close(e)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop the timers, fail the outgoing streams and tell the delegate."""
        self.closed = True
        for call in (self._handshake_deadline, self._ping_call, self._pong_deadline):
            if call is not None and call.active():
                call.cancel()
        self._handshake_deadline = self._ping_call = self._pong_deadline = None
        self._fail_streams()
        if self._close_error is not None:
            reason = Failure(self._close_error)
        self.delegate.connection_lost(self, reason)

    # Commands from the owner.

    def accept_identity(self) -> None:
        """The server identity is trusted: the handshake may send credentials."""
        self.handshake.accept_identity()

    def signin(self, name: str, password: str, device_id: bytes) -> None:
        """Send Signin (the answer comes as a handshake event)."""
        self.handshake.signin(name, password, device_id)
        self._flush_handshake()

    def register(self, name: str, password: str) -> None:
        """Send register (the answer comes as a handshake event)."""
        self.handshake.register(name, password)
        self._flush_handshake()

    def send(self, msg: m.Message) -> None:
        """Send one session message now.

        Raises:
            LocalProtocolError: If the message is invalid (nothing is sent), or FRAME_LIMIT
                when version-1 keys reached their volume limit (the connection is closed).
        """
        assert self.session is not None, "not signed in"
        try:
            data = self.session.send(msg)
        except LocalProtocolError as e:
            if e.code is ErrorCode.FRAME_LIMIT:
                # Version 1's keys protected their volume limit: close, so the owner
                # reconnects with fresh keys (version 2 updates its keys instead).
                self.close(ConnectionLost("the session keys reached their volume limit",
                                          cause=e))
            raise
        self.transport.write(data)

    def send_stream(self, msgs: Iterable[m.Message]) -> Deferred[None]:
        """Send messages one frame at a time as the transport asks for data (a pull producer),
        so a large upload is never one big buffer. Messages sent meanwhile with :meth:`send`
        go out between the frames (each frame is encoded just before it is written).

        Returns:
            A Deferred firing when the last frame is written, or failing with ConnectionLost.
        """
        stream = _Stream(iter(msgs), Deferred())
        if self.closed:
            stream.done.errback(ConnectionLost())
            return stream.done
        self._streams.append(stream)
        if self._producer is None:
            self._producer = _FrameProducer(self)
            self.transport.registerProducer(self._producer, False)
        return stream.done

    def close(self, error: BaseException | None = None) -> None:
        """Close the connection (after writing what is queued); a client sends no ERROR.

        Args:
            error: Reported to the delegate as the reason of the close.
        """
        if self.closed:
            return
        self.closed = True
        if error is not None and self._close_error is None:
            self._close_error = error
        if self.transport is not None:
            self.transport.loseConnection()

    def abort(self, error: BaseException) -> None:
        """Drop the connection without flushing (the peer is unresponsive)."""
        if self._close_error is None:
            self._close_error = error
        self.closed = True
        if self.transport is not None:
            self.transport.abortConnection()

    # Internals.

    def _flush_handshake(self) -> None:
        data = self.handshake.data_to_send()
        if data:
            self.transport.write(data)

    def _handshake_data(self, data: bytes) -> None:
        events = self.handshake.receive_data(data)
        self._flush_handshake()
        for event in events:
            if isinstance(event, ServerIdentityReceived):
                self._cancel_handshake_deadline()
            elif isinstance(event, LoginComplete):
                self.session = self.handshake.session
                self._schedule_ping()
            self.delegate.handshake_event(self, event)
            if isinstance(event, HandshakeFailed):
                self.close()
        if self.handshake.state is ClientState.FAILED:
            self.close()

    def _dispatch(self) -> None:
        session = self.session
        assert session is not None
        while not self.closed:
            msg = session.next_message()
            if msg is None:
                return
            if isinstance(msg, m.Ping):
                self.send(m.Pong(msg.nonce))
            elif isinstance(msg, m.Pong):
                self._pong_received(msg.nonce)
            else:
                self.delegate.message_received(self, msg)

    def _cancel_handshake_deadline(self) -> None:
        if self._handshake_deadline is not None and self._handshake_deadline.active():
            self._handshake_deadline.cancel()
        self._handshake_deadline = None

    def _handshake_timed_out(self) -> None:
        self._handshake_deadline = None
        self.abort(HandshakeTimeout(f"no answer to Hello within {self.handshake_timeout}s"))

    def _schedule_ping(self) -> None:
        if self.ping_interval > 0 and not self.closed:
            self._ping_call = self.clock.callLater(self.ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        self._ping_call = None
        if self.closed:
            return
        self._ping_nonce += 1
        self.send(m.Ping(self._ping_nonce))
        self._pong_deadline = self.clock.callLater(self.ping_timeout, self._ping_timed_out)

    def _pong_received(self, nonce: int) -> None:
        if nonce != self._ping_nonce or self._pong_deadline is None:
            return  # a stale or unsolicited Pong
        if self._pong_deadline.active():
            self._pong_deadline.cancel()
        self._pong_deadline = None
        self._schedule_ping()

    def _ping_timed_out(self) -> None:
        self._pong_deadline = None
        self.abort(
            ConnectionLost("the server did not answer a ping", cause=RemoteProtocolError(
                ErrorCode.PING_TIMEOUT, f"no Pong within {self.ping_timeout}s"))
        )

    def _produce(self) -> None:
        """Write the next frame of the first stream (called by the transport)."""
        while self._streams:
            stream = self._streams[0]
            if self.closed:
                break
            try:
                msg = next(stream.msgs)
                self.send(msg)
            except StopIteration:
                self._streams.popleft()
                stream.done.callback(None)
                continue
            except Exception:
                self._streams.popleft()
                stream.done.errback()
                continue
            return
        self._producer = None
        if self.transport is not None and not self.closed:
            self.transport.unregisterProducer()

    def _fail_streams(self) -> None:
        streams, self._streams = self._streams, deque()
        for stream in streams:
            stream.done.errback(ConnectionLost(cause=self._close_error))
        self._producer = None


class _Stream:
    """Messages still to send one frame at a time, and who waits for the end."""

    __slots__ = ("done", "msgs")

    def __init__(self, msgs: Iterator[m.Message], done: Deferred[None]) -> None:
        self.msgs = msgs
        self.done = done


@implementer(IPullProducer)
class _FrameProducer:
    """A pull producer writing one queued frame per request of the transport."""

    def __init__(self, protocol: ChatClientProtocol) -> None:
        self._protocol = protocol

    def resumeProducing(self) -> None:
        """Write the next frame."""
        self._protocol._produce()

    def stopProducing(self) -> None:
        """The transport is going away; the protocol fails the streams in connectionLost."""
