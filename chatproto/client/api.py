"""The Deferred API of the client: :func:`connect` and :class:`ChatClient`.

Example (from an ``async def`` run with ``Deferred.fromCoroutine``)::

    client = await connect(reactor, "tcp:chat.example.org:7000", known_servers=pins,
                           trust_on_first_use=ask_user, listener=MyListener())
    await client.signin("alice", password)
    ack = await client.send_text("bob", "hello")
    await client.quit()

:class:`ChatClient` owns the request bookkeeping (request numbers, pending Deferreds, image
reassembly, delivery acknowledgements); the :class:`~chatproto.client.protocol.ChatClientProtocol`
it is given per connection owns the bytes and the timers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.client.errors import (
    ChatClientError,
    ConnectionLost,
    HandshakeError,
    InvalidState,
    RegisterError,
    ServerError,
    SigninError,
)
from chatproto.client.feature_requests import FEATURE_REPLIES, FeatureRequests
from chatproto.client.listener import ChatListener, notify
from chatproto.client.options import (
    ServerTrust,
    Timeouts,
    TrustCallback,
    check_server_identity,
    client_options,
)
from chatproto.client.outgoing import (
    IMAGE_CHUNK_BYTES,
    MAX_IMAGE_BYTES,
    Target,
    encode_text,
    image_frames,
    load_image,
    split_target,
)
from chatproto.client.protocol import ChatClientProtocol
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode, LocalProtocolError
from chatproto.wire.feature_messages import SignedOut
from chatproto.wire.handshake import (
    ClientEvent,
    ClientHandshake,
    ClientState,
    HandshakeFailed,
    LoginComplete,
    Registered,
    RegisterRejected,
    ServerIdentityReceived,
    SigninRejected,
)
from chatproto.wire.keys import constant_time_equal

__all__ = [
    "IMAGE_CHUNK_BYTES",
    "MAX_IMAGE_BYTES",
    "ChatClient",
    "ChatListener",
    "ServerTrust",
    "Timeouts",
    "TrustCallback",
    "check_server_identity",
    "encode_text",
]


T = TypeVar("T")
_log = Logger()


@dataclass
class _Pending:
    """A request waiting for its reply."""

    deferred: Deferred[Any]
    replies: tuple[type[m.Message], ...]


@dataclass
class _IncomingImage:
    """An image being reassembled from DELIVER and IMAGE_CHUNK frames."""

    deliver: m.Deliver
    info: m.ImageInfo
    parts: list[bytes] = field(default_factory=list)
    received: int = 0
    next_index: int = 1


class ChatClient(FeatureRequests):
    """A connection to a chatproto server, with one Deferred-returning method per request.

    Usually created by :func:`connect`. The owner of the connection calls
    :meth:`build_protocol` for each transport; :attr:`ready` fires with the client once the
    server identity is trusted (state ``"connected"``: handshaken, not signed in).

    Args:
        clock: The reactor (timers and the per-turn delivery acknowledgement).
        host: The server as ``host:port``, the key of its pin.
        trust: How to decide whether to trust the server (:class:`ServerTrust`).
        timeouts: The connection's timers (:class:`Timeouts`).
        device_id: 16 bytes identifying this device (random if omitted).
        listener: Receives pushed messages and state changes.
        auto_ack: Acknowledge delivered messages by itself at the end of each reactor turn
            (True), or only through :meth:`acknowledge` (False: an application that must not
            lose what it has not handled yet, such as ``chatproto-client tail --count``).
        shorthand: The fields of :class:`ServerTrust` and :class:`Timeouts` as keywords.
    """

    def __init__(
        self,
        clock: Any,  # an IReactorTime (mypy does not read zope interfaces)
        host: str,
        *,
        trust: ServerTrust | None = None,
        timeouts: Timeouts | None = None,
        device_id: bytes | None = None,
        listener: ChatListener | None = None,
        auto_ack: bool = True,
        **shorthand: Any,
    ) -> None:
        if device_id is not None and len(device_id) != 16:
            raise ValueError("device_id must be 16 bytes")
        self.clock: Any = clock  # typed loosely: mypy does not read zope interfaces
        self.host = host
        self.trust, self.timeouts = client_options(trust, timeouts, shorthand)
        self.device_id = device_id if device_id is not None else os.urandom(16)
        self.listener = listener if listener is not None else ChatListener()
        self.auto_ack = auto_ack
        #: Fires with this client once the server is trusted, or fails.
        self.ready: Deferred[ChatClient] = Deferred(self._cancel_ready)
        #: ``"connecting"``, ``"connected"``, ``"signed_in"`` or ``"offline"``.
        self.state = "connecting"
        #: True from the moment the connection is lost (before anything pending is failed,
        #: so code resumed by those failures sees it).
        self.lost = False
        #: The fingerprint of the server's identity key, once received.
        self.fingerprint: str | None = None
        #: The signed-in user's name and the session id, once signed in.
        self.name: str | None = None
        self.session_id: bytes | None = None
        self._protocol: ChatClientProtocol | None = None
        self._connecting: Deferred[Any] | None = None
        self._auth: Deferred[Any] | None = None
        self._next_req = 1
        self._pending: dict[int, _Pending] = {}
        self._closed_waiters: list[Deferred[None]] = []
        self._images: dict[int, _IncomingImage] = {}
        self.blocked: set[str] = set()
        self._highest_seq = 0
        self._acked_seq = 0
        self._ack_call: Any = None  # an IDelayedCall

    # --- connection ownership --------------------------------------------------------------

    def build_protocol(self, handshake: ClientHandshake | None = None) -> ChatClientProtocol:
        """A protocol for a new transport, reporting to this client.

        Args:
            handshake: A handshake machine to use (tests fix its randomness).

        Returns:
            The protocol (connect it to a transport with ``makeConnection``).
        """
        self._protocol = ChatClientProtocol(
            self,
            self.clock,
            ping_interval=self.timeouts.ping_interval,
            ping_timeout=self.timeouts.ping_timeout,
            handshake_timeout=self.timeouts.handshake_timeout,
            handshake=handshake,
        )
        return self._protocol

    def _cancel_ready(self, _: Deferred[ChatClient]) -> None:
        if self._connecting is not None and not self._connecting.called:
            self._connecting.cancel()
        if self._protocol is not None:
            self._protocol.abort(ConnectionLost("connect() was cancelled"))

    def _fire_ready(self, result: ChatClient | Failure) -> None:
        if self.ready.called:
            return
        if isinstance(result, Failure):
            self.ready.errback(result)
        else:
            self.ready.callback(result)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._notify("connection_state_changed", state)

    def _notify(self, method: str, *args: object) -> None:
        notify(self.listener, method, *args)

    # ProtocolDelegate.

    def handshake_event(self, protocol: ChatClientProtocol, event: ClientEvent) -> None:
        """Handle a handshake event (called by the protocol)."""
        if isinstance(event, ServerIdentityReceived):
            self.fingerprint = event.fingerprint
            d = self.trust.check(self.host, event.fingerprint)
            d.addCallbacks(self._identity_accepted, self._identity_refused,
                           callbackArgs=(protocol,), errbackArgs=(protocol,))
        elif isinstance(event, Registered):
            self._answer_auth(None)
        elif isinstance(event, RegisterRejected):
            self._answer_auth(Failure(
                RegisterError(event.code, event.reason, event.retry_after_ms)))
        elif isinstance(event, SigninRejected):
            self._answer_auth(Failure(SigninError(event.code, event.reason, event.retry_after_ms)))
        elif isinstance(event, LoginComplete):
            self.name, self.session_id = event.name, event.session_id
            self._set_state("signed_in")
            self._answer_auth(event)
        elif isinstance(event, HandshakeFailed):
            error = Failure(HandshakeError(event.code, event.reason))
            if self._auth is not None:
                self._answer_auth(error)
            else:
                self._fire_ready(error)

    def _identity_accepted(self, _: None, protocol: ChatClientProtocol) -> None:
        if protocol.closed or protocol is not self._protocol:
            return  # lost while deciding; connection_lost failed ready
        protocol.accept_identity()
        self._set_state("connected")
        self._fire_ready(self)

    def _identity_refused(self, failure: Failure, protocol: ChatClientProtocol) -> None:
        # Nothing is sent to an untrusted server, not even an ERROR: just close.
        self._fire_ready(failure)
        protocol.close(failure.value)

    def _answer_auth(self, result: object) -> None:
        d, self._auth = self._auth, None
        if d is None:
            return
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)

    def message_received(self, protocol: ChatClientProtocol, msg: m.Message) -> None:
        """Handle a session message (called by the protocol)."""
        if isinstance(msg, m.Deliver):
            self._on_deliver(msg)
        elif isinstance(msg, m.ImageChunk):
            self._on_image_chunk(msg)
        elif isinstance(msg, m.Receipt):
            self._notify("receipt_received", msg)
        elif isinstance(msg, m.TypingEvent):
            self._notify("typing_received", msg)
        elif isinstance(msg, m.PresenceEvent):
            self._notify("presence_changed", msg)
        elif isinstance(msg, SignedOut):
            self._notify("signed_out", msg.reason)
        elif isinstance(msg, m.Error):
            pending = self._pending.pop(msg.req, None) if msg.req else None
            if pending is None:
                self._notify("error_received", msg.code, msg.reason)
            else:
                pending.deferred.errback(ServerError.from_code(msg.code, msg.reason, msg.names))
        elif isinstance(msg, _REPLIES):
            self._on_reply(msg)
        else:
            _log.warn("ignoring unexpected {type} from the server", type=type(msg).__name__)

    def connection_lost(self, protocol: ChatClientProtocol, reason: Failure) -> None:
        """Fail everything pending (called by the protocol)."""
        if protocol is not self._protocol:
            return
        self.lost = True
        cause = reason.value
        lost = cause if isinstance(cause, ConnectionLost) else ConnectionLost(cause=cause)
        self._fire_ready(Failure(cause if isinstance(cause, ChatClientError) else lost))
        self._answer_auth(Failure(lost))
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            entry.deferred.errback(lost)
        self._images.clear()
        if self._ack_call is not None and self._ack_call.active():
            self._ack_call.cancel()
        self._ack_call = None
        self._set_state("offline")
        self._notify("connection_lost", reason)
        waiters, self._closed_waiters = self._closed_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    # --- incoming messages -----------------------------------------------------------------

    def _on_reply(self, msg: m.Message) -> None:
        req: int = getattr(msg, "req")  # noqa: B009 - every reply type has req
        pending = self._pending.pop(req, None)
        if pending is None:
            _log.warn("ignoring {type} for unknown request {req}", type=type(msg).__name__,
                      req=req)
        elif not isinstance(msg, pending.replies):
            pending.deferred.errback(ChatClientError(
                f"unexpected reply {type(msg).__name__} to request {req}"))
        else:
            pending.deferred.callback(msg)

    def _on_deliver(self, msg: m.Deliver) -> None:
        self._highest_seq = max(self._highest_seq, msg.user_seq)
        info = msg.image
        if msg.content_type != m.ContentType.IMAGE or info is None:
            self._notify("message_received", msg, None)
        elif info.total_size > MAX_IMAGE_BYTES or len(msg.body) > info.total_size:
            self._bad_image(msg.user_seq, "image size is invalid")
        else:
            image = _IncomingImage(msg, info, [msg.body], len(msg.body))
            self._images[msg.user_seq] = image
            self._maybe_complete(image)
        self._schedule_ack()

    def _on_image_chunk(self, msg: m.ImageChunk) -> None:
        image = self._images.get(msg.ref)
        if image is None:
            self._notify("error_received", int(ErrorCode.BAD_IMAGE),
                         f"image chunk for unknown message {msg.ref}")
            return
        if msg.index != image.next_index:
            self._bad_image(msg.ref, f"image chunk {msg.index} out of order")
        elif image.received + len(msg.data) > image.info.total_size:
            self._bad_image(msg.ref, "image is larger than announced")
        else:
            image.parts.append(msg.data)
            image.received += len(msg.data)
            image.next_index += 1
            self._maybe_complete(image)
        self._schedule_ack()

    def _maybe_complete(self, image: _IncomingImage) -> None:
        if image.received < image.info.total_size:
            return
        seq = image.deliver.user_seq
        del self._images[seq]
        data = b"".join(image.parts)
        if not constant_time_equal(hashlib.sha256(data).digest(), image.info.sha256):
            self._notify("error_received", int(ErrorCode.BAD_IMAGE),
                         f"image of message {seq} does not match its SHA-256")
            return
        self._notify("message_received", image.deliver, data)

    def _bad_image(self, seq: int, why: str) -> None:
        self._images.pop(seq, None)
        self._notify("error_received", int(ErrorCode.BAD_IMAGE), f"message {seq}: {why}")

    def _schedule_ack(self) -> None:
        if self.auto_ack and self._ack_call is None:
            self._ack_call = self.clock.callLater(0, self._send_ack)

    def acknowledge(self, up_to: int) -> None:
        """Tell the server this device has handled every message up to user_seq ``up_to``
        (cumulative; for ``auto_ack=False``). Messages after it are delivered again to this
        device on its next sync."""
        if self._images:  # never past an image still arriving
            up_to = min(up_to, min(self._images) - 1)
        protocol = self._protocol
        if up_to > self._acked_seq and protocol is not None and not protocol.closed:
            self._acked_seq = up_to
            protocol.send(m.DeliveryAck(up_to))

    def _send_ack(self) -> None:
        self._ack_call = None
        self.acknowledge(self._highest_seq)

    # --- handshake requests ----------------------------------------------------------------

    def _auth_request(self, start: Callable[[ChatClientProtocol], None]) -> Deferred[Any]:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            return fail(ConnectionLost("not connected"))
        if protocol.handshake.state is not ClientState.READY or self._auth is not None:
            return fail(InvalidState(
                f"cannot sign in or register now (state {protocol.handshake.state.name})"))
        try:
            start(protocol)
        except LocalProtocolError as e:
            return fail(e)
        self._auth = Deferred()
        return self._auth

    def register(self, name: str, password: str) -> Deferred[None]:
        """Create an account (the connection stays handshaken; sign in next).

        Returns:
            A Deferred firing with None, or failing with RegisterError (or HandshakeError if the
            connection is closed by the server).
        """
        return self._auth_request(lambda p: p.register(name, password))

    def signin(self, name: str, password: str) -> Deferred[LoginComplete]:
        """Sign in; after a SigninError it may be called again on the same connection.

        Returns:
            A Deferred firing with LoginComplete, or failing with SigninError, or
            HandshakeError (the connection is then closed).
        """
        return self._auth_request(lambda p: p.signin(name, password, self.device_id))

    # --- session requests ------------------------------------------------------------------

    def _session_protocol(self) -> ChatClientProtocol:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            raise ConnectionLost("not connected")
        if protocol.session is None:
            raise InvalidState("not signed in")
        return protocol

    def _allocate_req(self) -> int:
        while True:
            req = self._next_req
            self._next_req = req + 1 if req < 0xFFFFFFFF else 1
            if req not in self._pending:
                return req

    def _request(self, build: Callable[[int], m.Message],
                 replies: tuple[type[m.Message], ...]) -> Deferred[Any]:
        try:
            protocol = self._session_protocol()
            req = self._allocate_req()
            msg = build(req)
            d: Deferred[Any] = Deferred()
            self._pending[req] = _Pending(d, replies)
            try:
                protocol.send(msg)
            except BaseException:
                del self._pending[req]
                raise
        except Exception as e:
            return fail(e)
        return d

    def _expect(self, req: int, replies: tuple[type[m.Message], ...]) -> Deferred[Any]:
        """A second reply to request ``req`` (a file transfer's SendAck after its Ok)."""
        d: Deferred[Any] = Deferred()
        self._pending[req] = _Pending(d, replies)
        return d

    def _oneway(self, msg: Callable[[], m.Message]) -> Deferred[None]:
        try:
            self._session_protocol().send(msg())
        except Exception as e:
            return fail(e)
        return succeed(None)

    def create_chat(self, peer: str) -> Deferred[m.AckCreate]:
        """Open a direct chat with ``peer``.

        Returns:
            A Deferred firing with AckCreate (the peer's presence), or failing with ServerError.
        """
        return self._request(lambda req: m.Create(req, peer), (m.AckCreate,))

    def create_group(self, names: Sequence[str], title: str = "",
                     kind: int = m.GroupKind.MANY) -> Deferred[m.AckCreateGroup]:
        """Create a group with ``names`` (besides ourselves).

        Returns:
            A Deferred firing with AckCreateGroup, or failing with ServerError.
        """
        members = tuple(names)
        return self._request(
            lambda req: m.CreateGroup(req, kind, len(members), members, title),
            (m.AckCreateGroup,),
        )

    def send_text(self, to: Target, text: str,
                  client_msg_id: bytes | None = None) -> Deferred[m.SendAck]:
        """Send a text message to a user (by name) or a group (by id).

        Args:
            to: A user name or a group id.
            text: At most ``messages.MAX_TEXT_BYTES`` bytes of UTF-8.
            client_msg_id: 16 bytes identifying the message (random if omitted).

        Returns:
            A Deferred firing with SendAck, or failing with ServerError.
        """
        try:
            group_id, peer = split_target(to)
            body = encode_text(text)
        except (TypeError, ValueError) as e:
            return fail(e)
        msg_id = client_msg_id if client_msg_id is not None else os.urandom(16)
        return self._request(
            lambda req: m.Chat(req, msg_id, group_id, peer, None, m.ContentType.TEXT, body,
                               None),
            (m.SendAck,),
        )

    def send_image(self, to: Target, data: bytes | str | os.PathLike[str],
                   client_msg_id: bytes | None = None) -> Deferred[m.SendAck]:
        """Send an image (bytes, or the path of a file), in chunks of 256 KiB.

        The first chunk travels in CHAT, the rest in IMAGE_CHUNK frames written one at a time
        as the transport asks for data.

        Args:
            to: A user name or a group id.
            data: The image, or the path of a file holding it (at most 10 MiB).
            client_msg_id: 16 bytes identifying the message (random if omitted).

        Returns:
            A Deferred firing with SendAck, or failing with ServerError or ImageTooLarge.
        """
        try:
            group_id, peer = split_target(to)
            data = load_image(data)
            protocol = self._session_protocol()
        except Exception as e:
            return fail(e)
        info = m.ImageInfo(len(data), hashlib.sha256(data).digest(), None)
        msg_id = client_msg_id if client_msg_id is not None else os.urandom(16)
        req = self._allocate_req()
        d: Deferred[Any] = Deferred()
        self._pending[req] = _Pending(d, (m.SendAck,))
        frames = image_frames(req, msg_id, group_id, peer, data, info)

        def stream_failed(failure: Failure) -> None:
            pending = self._pending.pop(req, None)
            if pending is not None:
                pending.deferred.errback(failure)

        protocol.send_stream(frames).addErrback(stream_failed)
        return d

    def _group_request(self, build: Callable[[int], m.Message]) -> Deferred[None]:
        d = self._request(build, (m.Ok,))
        return d.addCallback(lambda _: None)

    def group_add(self, group_id: int, names: Sequence[str]) -> Deferred[None]:
        """Add members to a group (ServerError if not allowed or unknown names)."""
        members = tuple(names)
        return self._group_request(lambda req: m.GroupAdd(req, group_id, members))

    def group_remove(self, group_id: int, names: Sequence[str]) -> Deferred[None]:
        """Remove members from a group (ServerError if not allowed)."""
        members = tuple(names)
        return self._group_request(lambda req: m.GroupRemove(req, group_id, members))

    def group_leave(self, group_id: int) -> Deferred[None]:
        """Leave a group."""
        return self._group_request(lambda req: m.GroupLeave(req, group_id))

    def group_rename(self, group_id: int, title: str) -> Deferred[None]:
        """Rename a group."""
        return self._group_request(lambda req: m.GroupRename(req, group_id, title))

    def group_set_role(self, group_id: int, names: Sequence[str], admin: bool) -> Deferred[None]:
        """Make members admins (``admin=True``) or plain members; only the owner may."""
        return self._group_request(
            lambda req: m.GroupSetRole(req, group_id, tuple(names), admin))

    def list_groups(self) -> Deferred[tuple[m.GroupInfo, ...]]:
        """The groups we belong to."""
        d = self._request(m.GroupList, (m.Groups,))
        return d.addCallback(lambda reply: reply.groups)

    def group_members(self, group_id: int) -> Deferred[tuple[m.MemberInfo, ...]]:
        """The members of a group."""
        d = self._request(lambda req: m.GroupMembers(req, group_id), (m.Members,))
        return d.addCallback(lambda reply: reply.members)

    def presence(self) -> Deferred[tuple[m.PresenceInfo, ...]]:
        """The presence of our contacts."""
        d = self._request(m.PresenceQuery, (m.Presence,))
        return d.addCallback(lambda reply: reply.entries)

    def history(self, to: Target, before_seq: int = 0, limit: int = 50) -> Deferred[m.HistoryPage]:
        """A page of archived messages of a direct chat or group, newest first.

        Args:
            to: A user name or a group id.
            before_seq: Only messages with a smaller conversation sequence (0: the newest).
            limit: At most this many entries.
        """
        try:
            group_id, peer = split_target(to)
        except TypeError as e:
            return fail(e)
        return self._request(lambda req: m.History(req, group_id, peer, before_seq, limit),
                             (m.HistoryPage,))

    def mark_read(self, to: Target, up_to: int) -> Deferred[None]:
        """Tell the server (and the sender) we read a conversation up to ``up_to`` (no reply)."""
        try:
            group_id, peer = split_target(to)
        except TypeError as e:
            return fail(e)
        return self._oneway(lambda: m.Read(group_id, peer, up_to))

    def typing(self, to: Target, active: bool = True) -> Deferred[None]:
        """Tell a user or a group we are (or stopped) typing (no reply)."""
        try:
            group_id, peer = split_target(to)
        except TypeError as e:
            return fail(e)
        return self._oneway(lambda: m.Typing(group_id, peer, active))

    def sync(self, cursor: int | None = None) -> Deferred[int]:
        """Ask for the messages after ``cursor`` (None: after the last acknowledged one); they
        arrive as pushes before the reply.

        Returns:
            A Deferred firing with the last user sequence number of the sync.
        """
        d = self._request(lambda req: m.Sync(req, cursor), (m.SyncDone,))
        return d.addCallback(lambda reply: reply.last_seq)

    def quit(self) -> Deferred[None]:
        """Sign out: send Quit, wait for AckQuit, close and wait for the connection to close.

        A cumulative ack still waiting for the end of the reactor turn goes out first, so the
        server stores this device's cursor before the session ends.
        """
        if self._ack_call is not None:
            self._ack_call.cancel()
            self._send_ack()
        d = self._request(m.Quit, (m.AckQuit,))

        def acked(_: object) -> Deferred[None]:
            return self.close()

        return d.addCallback(acked)

    def abort(self, reason: str = "the connection was aborted") -> None:
        """Drop the connection at once, without flushing (pending requests fail with
        ConnectionLost); for an unresponsive server."""
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.abort(ConnectionLost(reason))

    def close(self) -> Deferred[None]:
        """Close the connection now (pending requests fail with ConnectionLost).

        Returns:
            A Deferred firing once the connection is closed.
        """
        protocol = self._protocol
        if protocol is None or self.state == "offline":
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._closed_waiters.append(d)
        protocol.close()
        return d


_REPLIES = (
    m.Ok, m.AckCreate, m.AckCreateGroup, m.SendAck, m.Groups, m.Members, m.Presence,
    m.HistoryPage, m.SyncDone, m.AckQuit, *FEATURE_REPLIES,
)
