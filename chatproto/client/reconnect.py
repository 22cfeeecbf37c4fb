"""A session that survives connection loss: :func:`open_session` and :class:`ChatSession`.

:func:`~chatproto.client.api.connect` gives one connection; a :class:`ChatSession` owns a
series of them. It connects, signs in (new session keys each time), sends ``Sync`` with its
cursor, flushes its outbox, and when the connection is lost (closed, reset, or silent: no
``Pong`` in time) it reconnects with exponential backoff and full jitter. See "Delivery
semantics" in ``docs/protocol.rst`` for the guarantees.

Example (from an ``async def`` run with ``Deferred.fromCoroutine``)::

    session = open_session(reactor, "tcp:chat.example.org:7000", "alice", password,
                           known_servers=pins, outbox_path="alice.outbox",
                           state_path="alice.state", listener=MyListener())
    ack = await session.send_text("bob", "hello")   # survives reconnections
    await session.close()
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.client.api import ChatClient
from chatproto.client.backoff import Backoff, write_json_atomically
from chatproto.client.endpoint import connect
from chatproto.client.errors import (
    ConnectionLost,
    RegisterError,
    ServerError,
    ServerKeyChanged,
    SessionClosed,
    SigninError,
    UntrustedServer,
)
from chatproto.client.failover import EndpointRotation
from chatproto.client.feature_requests import FeatureSessionCalls
from chatproto.client.listener import ChatListener, SessionBridge, notify
from chatproto.client.options import ServerTrust, Timeouts, client_options
from chatproto.client.outbox import Outbox, OutboxEntry
from chatproto.client.outgoing import Target, encode_text, load_image, split_target
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode

__all__ = ["Backoff", "ChatSession", "Connector", "EndpointRotation", "open_session"]

_log = Logger()

#: ``connector(listener) -> Deferred[ChatClient]`` in the state ``"connected"``.
Connector = Callable[[ChatListener], "Deferred[ChatClient]"]

#: Server errors that say "try again later": the message stays in the outbox.
RETRYABLE_CODES = frozenset({
    ErrorCode.INTERNAL_ERROR, ErrorCode.STORAGE_UNAVAILABLE, ErrorCode.SERVER_BUSY,
    ErrorCode.TRY_LATER, ErrorCode.RATE_LIMITED,
})
#: The reason of a 308 RATE_LIMITED (docs/protocol.rst, "Error codes").
_RATE_LIMITED_REASON = re.compile(r"too many messages: retry after ([1-9][0-9]{0,8}) ms")


def retry_delay(error: ServerError, backoff_delay: float) -> float:
    """Seconds to wait before resending after a retryable error: the backoff delay, and no
    less than the time a 308 RATE_LIMITED names."""
    if error.code == ErrorCode.RATE_LIMITED:
        match = _RATE_LIMITED_REASON.fullmatch(error.reason)
        if match is not None:
            return max(backoff_delay, int(match.group(1)) / 1000)
    return backoff_delay
#: Signin / register refusals after which retrying later may succeed.
_RETRY_LOGIN_CODES = frozenset({ErrorCode.TRY_LATER, ErrorCode.TOO_MANY_ATTEMPTS,
                                ErrorCode.INTERNAL_ERROR, ErrorCode.STORAGE_UNAVAILABLE,
                                ErrorCode.SERVER_BUSY})


class ChatSession(FeatureSessionCalls):
    """A signed-in presence on a server that reconnects by itself, with an outbox.

    Usually created by :func:`open_session` (which documents the arguments). States, reported
    to ``listener.connection_state_changed``: ``"connecting"`` (first attempt),
    ``"connected"`` (signed in and synced for the first time), ``"reconnecting"`` (the
    connection was lost or an attempt failed; retrying after a backoff delay), ``"resumed"``
    (signed in and synced again), ``"offline"`` (closed, or a fatal error such as a wrong
    password or an untrusted server key; :attr:`failure` says which).

    Messages go through the outbox (:meth:`send_text`, :meth:`send_image`); other requests
    are forwarded to the current connection and fail with ConnectionLost while there is none
    (:meth:`wait_connected` waits for one).
    """

    def __init__(
        self,
        clock: Any,
        connector: Connector,
        name: str,
        password: str,
        *,
        register: bool = False,
        outbox_path: str | os.PathLike[str] | None = None,
        state_path: str | os.PathLike[str] | None = None,
        listener: ChatListener | None = None,
        device_id: bytes | None = None,
        backoff: Backoff | None = None,
        login_timeout: float = 30,
        max_in_flight: int = 64,
    ) -> None:
        self.clock: Any = clock
        self._connector = connector
        self.name = name
        self._password = password
        self._register = register
        self.listener = listener if listener is not None else ChatListener()
        self.backoff = backoff if backoff is not None else Backoff()
        self.login_timeout = login_timeout
        self.max_in_flight = max(1, max_in_flight)
        self.state_path = Path(state_path) if state_path is not None else None
        #: The highest user_seq delivered to the listener (messages at or below it are
        #: never shown again).
        self.cursor = 0
        self._have_cursor = False
        state = self._load_state()
        if device_id is None and "device_id" in state:
            device_id = bytes.fromhex(state["device_id"])
        if "cursor" in state:
            self.cursor = int(state["cursor"])
            self._have_cursor = True
        if device_id is not None and len(device_id) != 16:
            raise ValueError("device_id must be 16 bytes")
        #: 16 bytes identifying this device to the server (its own cursor, its own copies).
        self.device_id = device_id if device_id is not None else os.urandom(16)
        self.outbox = Outbox(outbox_path)
        #: ``"connecting"``, ``"connected"``, ``"reconnecting"``, ``"resumed"`` or
        #: ``"offline"``.
        self.state = "idle"
        #: Why the session went offline for good (None while it runs or after close()).
        self.failure: Failure | None = None
        #: Deliveries dropped because they were at or below the cursor.
        self.duplicates_ignored = 0
        #: Completed connections (signed in and synced), the first included.
        self.connections = 0
        #: Sends the server answered with a transient error (resent later).
        self.transient_errors = 0
        self._client: ChatClient | None = None
        self._attempt_client: ChatClient | None = None
        self._attempt_d: Deferred[Any] | None = None
        self._generation = 0
        self._ever_connected = False
        self._closing = False
        self._retry_call: Any = None
        self._timeout_call: Any = None
        self._save_call: Any = None
        self._resume_call: Any = None
        self._paused = False
        self._waiters: dict[bytes, Deferred[m.SendAck]] = {}
        self._connected_waiters: list[Deferred[ChatSession]] = []
        self._unsent: deque[bytes] = deque()
        self._in_flight: set[bytes] = set()
        self._image_in_flight: bytes | None = None
        self._save_state()

    # --- public API ----------------------------------------------------------------------

    @property
    def client(self) -> ChatClient | None:
        """The current connection, signed in and synced (None while there is none)."""
        return self._client

    @property
    def connected(self) -> bool:
        """Whether a connection is signed in and synced now."""
        return self._usable() is not None

    def start(self) -> None:
        """Start connecting (:func:`open_session` calls this)."""
        if self.state != "idle":
            return
        self._set_state("connecting")
        self._attempt()

    def wait_connected(self) -> Deferred[ChatSession]:
        """A Deferred firing with the session once it is signed in and synced (at once if it
        is), or failing if the session goes offline first."""
        if self._usable() is not None:
            return succeed(self)
        if self.state == "offline":
            return fail(self.failure or SessionClosed("the session is closed"))
        d: Deferred[ChatSession] = Deferred()
        self._connected_waiters.append(d)
        return d

    def send_text(self, to: Target, text: str,
                  client_msg_id: bytes | None = None) -> Deferred[m.SendAck]:
        """Queue a text for a user (by name) or a group (by id) and send it as soon as
        possible; it is resent with the same ``client_msg_id`` after reconnections.

        Args:
            to: A user name or a group id.
            text: At most ``messages.MAX_TEXT_BYTES`` bytes of UTF-8.
            client_msg_id: 16 bytes (random if omitted), chosen before the first send.

        Returns:
            A Deferred firing with the SendAck (perhaps after several connections), or
            failing with ServerError for a refusal that retrying cannot fix (unknown user,
            not a member, ...), or SessionClosed if the session is closed first (the message
            then stays in a persistent outbox).
        """
        try:
            group_id, peer = split_target(to)
            body = encode_text(text)
        except (TypeError, ValueError) as e:
            return fail(e)
        return self._enqueue(group_id, peer, m.ContentType.TEXT, body, client_msg_id)

    def send_image(self, to: Target, data: bytes | str | os.PathLike[str],
                   client_msg_id: bytes | None = None) -> Deferred[m.SendAck]:
        """Queue an image (bytes or a file path, at most 10 MiB); like :meth:`send_text`.
        Messages queued after an image are sent once the image is acknowledged, so the
        server stores them in order."""
        try:
            group_id, peer = split_target(to)
            data = load_image(data)
        except Exception as e:
            return fail(e)
        return self._enqueue(group_id, peer, m.ContentType.IMAGE, data, client_msg_id)

    def pending(self) -> list[OutboxEntry]:
        """The messages still waiting for their SendAck, oldest first."""
        return list(self.outbox)

    def close(self) -> Deferred[None]:
        """Stop: sign out (Quit) if connected, stop reconnecting, save the cursor and close
        the outbox file. Sends still waiting fail with SessionClosed (they stay in a
        persistent outbox, for the next session with the same ``outbox_path``)."""
        if self._closing:
            return succeed(None)
        self._closing = True
        for name in ("_retry_call", "_timeout_call", "_resume_call"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        if self._attempt_d is not None and not self._attempt_d.called:
            self._attempt_d.cancel()
        if self._attempt_client is not None:
            self._attempt_client.abort("the session was closed")
        client, self._client = self._client, None
        self._generation += 1
        if client is not None:
            d: Deferred[Any] = client.quit()
            d.addErrback(lambda _: client.close())
            d.addErrback(lambda _: None)
        else:
            d = succeed(None)

        def finish(_: object) -> None:
            self._flush_state()
            self.outbox.close()
            self._set_state("offline")
            self._fail_waiters(Failure(SessionClosed("the session was closed")))

        return d.addCallback(finish)

    # Requests forwarded to the current connection.

    def _usable(self) -> ChatClient | None:
        """The current connection, unless it is being lost (its pending requests fail before
        the session hears of the loss; a request made meanwhile must not go to it). A
        connector may return any object with ChatClient's methods: no ``lost``, not lost."""
        client = self._client
        return None if client is None or getattr(client, "lost", False) else client

    def _call(self, method: str, *args: Any) -> Deferred[Any]:
        client = self._usable()
        if client is None:
            return fail(ConnectionLost("not connected (the session is reconnecting)"))
        result: Deferred[Any] = getattr(client, method)(*args)
        return result

    def create_chat(self, peer: str) -> Deferred[m.AckCreate]:
        """:meth:`ChatClient.create_chat` on the current connection."""
        return self._call("create_chat", peer)

    def create_group(self, names: list[str] | tuple[str, ...], title: str = "",
                     kind: int = m.GroupKind.MANY) -> Deferred[m.AckCreateGroup]:
        """:meth:`ChatClient.create_group` on the current connection."""
        return self._call("create_group", names, title, kind)

    def group_add(self, group_id: int, names: list[str] | tuple[str, ...]) -> Deferred[None]:
        """:meth:`ChatClient.group_add` on the current connection."""
        return self._call("group_add", group_id, names)

    def group_remove(self, group_id: int, names: list[str] | tuple[str, ...]) -> Deferred[None]:
        """:meth:`ChatClient.group_remove` on the current connection."""
        return self._call("group_remove", group_id, names)

    def group_leave(self, group_id: int) -> Deferred[None]:
        """:meth:`ChatClient.group_leave` on the current connection."""
        return self._call("group_leave", group_id)

    def group_rename(self, group_id: int, title: str) -> Deferred[None]:
        """:meth:`ChatClient.group_rename` on the current connection."""
        return self._call("group_rename", group_id, title)

    def group_set_role(self, group_id: int, names: list[str] | tuple[str, ...],
                       admin: bool) -> Deferred[None]:
        """:meth:`ChatClient.group_set_role` on the current connection."""
        return self._call("group_set_role", group_id, names, admin)

    def list_groups(self) -> Deferred[tuple[m.GroupInfo, ...]]:
        """:meth:`ChatClient.list_groups` on the current connection."""
        return self._call("list_groups")

    def group_members(self, group_id: int) -> Deferred[tuple[m.MemberInfo, ...]]:
        """:meth:`ChatClient.group_members` on the current connection."""
        return self._call("group_members", group_id)

    def presence(self) -> Deferred[tuple[m.PresenceInfo, ...]]:
        """:meth:`ChatClient.presence` on the current connection."""
        return self._call("presence")

    def history(self, to: Target, before_seq: int = 0, limit: int = 50) -> Deferred[m.HistoryPage]:
        """:meth:`ChatClient.history` on the current connection."""
        return self._call("history", to, before_seq, limit)

    def mark_read(self, to: Target, up_to: int) -> Deferred[None]:
        """:meth:`ChatClient.mark_read` on the current connection."""
        return self._call("mark_read", to, up_to)

    def typing(self, to: Target, active: bool = True) -> Deferred[None]:
        """:meth:`ChatClient.typing` on the current connection."""
        return self._call("typing", to, active)

    # --- connecting ----------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._notify("connection_state_changed", state)

    def _notify(self, method: str, *args: object) -> None:
        notify(self.listener, method, *args)

    def _attempt(self) -> None:
        self._retry_call = None
        if self._closing:
            return
        self._generation += 1
        generation = self._generation
        bridge = SessionBridge(self, generation)
        d = self._connector(bridge)
        self._attempt_d = d
        if self.login_timeout > 0:
            self._timeout_call = self.clock.callLater(self.login_timeout, self._attempt_timed_out,
                                                      generation)
        d.addCallback(self._connected, generation)
        d.addCallbacks(self._attempt_succeeded, self._attempt_failed,
                       callbackArgs=(generation,), errbackArgs=(generation,))

    def _attempt_timed_out(self, generation: int) -> None:
        self._timeout_call = None
        if generation != self._generation or self._client is not None:
            return
        if self._attempt_client is not None:
            self._attempt_client.abort(f"no login within {self.login_timeout}s")
        elif self._attempt_d is not None and not self._attempt_d.called:
            self._attempt_d.cancel()

    async def _login(self, client: ChatClient) -> int:
        if self._register:
            try:
                await client.register(self.name, self._password)
            except RegisterError as e:
                if e.code != ErrorCode.NAME_TAKEN:
                    raise
            self._register = False  # registered now, by this attempt or an earlier one
        await client.signin(self.name, self._password)
        return await client.sync(self.cursor if self._have_cursor else None)

    def _connected(self, client: ChatClient, generation: int) -> Deferred[int]:
        if generation != self._generation:
            client.abort("a stale connection attempt")
            raise ConnectionLost("a stale connection attempt")
        self._attempt_client = client
        return Deferred.fromCoroutine(self._login(client))

    def _attempt_succeeded(self, last_seq: int, generation: int) -> None:
        client = self._attempt_client
        self._attempt_client = None
        self._attempt_d = None
        if self._timeout_call is not None and self._timeout_call.active():
            self._timeout_call.cancel()
        self._timeout_call = None
        if generation != self._generation or client is None or self._closing:
            if client is not None:
                client.abort("a stale connection attempt")
            return
        # Everything up to last_seq was delivered before SyncDone.
        self.cursor = max(self.cursor, last_seq)
        self._have_cursor = True
        self._save_state()
        self._client = client
        self.connections += 1
        self.backoff.reset()
        self._set_state("resumed" if self._ever_connected else "connected")
        self._ever_connected = True
        waiters, self._connected_waiters = self._connected_waiters, []
        for waiter in waiters:
            waiter.callback(self)
        self._paused = False
        self._unsent = deque(entry.client_msg_id for entry in self.outbox)
        self._in_flight.clear()
        self._image_in_flight = None
        self._pump()

    def _attempt_failed(self, failure: Failure, generation: int) -> None:
        client = self._attempt_client
        self._attempt_client = None
        self._attempt_d = None
        if self._timeout_call is not None and self._timeout_call.active():
            self._timeout_call.cancel()
        self._timeout_call = None
        if client is not None:
            client.abort("the login failed")
        if generation != self._generation or self._closing:
            return
        if self._is_fatal(failure):
            self._go_offline(failure)
            return
        delay = None
        error = failure.value
        if isinstance(error, SigninError | RegisterError) and error.retry_after_ms:
            delay = error.retry_after_ms / 1000
        _log.info("connection attempt failed: {error}", error=failure.getErrorMessage())
        self._schedule_reconnect(delay)

    @staticmethod
    def _is_fatal(failure: Failure) -> bool:
        error = failure.value
        if isinstance(error, UntrustedServer | ServerKeyChanged):
            return True
        if isinstance(error, SigninError | RegisterError):
            return error.code not in _RETRY_LOGIN_CODES
        return False

    def _go_offline(self, failure: Failure) -> None:
        self.failure = failure
        self._closing = True
        self._flush_state()
        self._set_state("offline")
        self._fail_waiters(failure)

    def _fail_waiters(self, failure: Failure) -> None:
        waiters, self._connected_waiters = self._connected_waiters, []
        for waiter in waiters:
            waiter.errback(failure)
        sends, self._waiters = self._waiters, {}
        for d in sends.values():
            d.errback(failure)

    def _schedule_reconnect(self, delay: float | None = None) -> None:
        if self._closing or self._retry_call is not None:
            return
        self._set_state("reconnecting")
        wait = self.backoff.next_delay() if delay is None else max(delay,
                                                                   self.backoff.next_delay())
        self._retry_call = self.clock.callLater(wait, self._attempt)

    def _connection_lost(self, reason: Failure) -> None:
        self._notify("connection_lost", reason)
        if self._client is None:
            return  # lost during an attempt: _attempt_failed retries
        self._client = None
        self._generation += 1
        self._in_flight.clear()
        self._image_in_flight = None
        if self._resume_call is not None and self._resume_call.active():
            self._resume_call.cancel()
        self._resume_call = None
        self._schedule_reconnect()

    # --- receiving -----------------------------------------------------------------------

    def _on_deliver(self, deliver: m.Deliver, image: bytes | None) -> None:
        if deliver.user_seq <= self.cursor:
            self.duplicates_ignored += 1
            return
        self.cursor = deliver.user_seq
        self._have_cursor = True
        self._notify("message_received", deliver, image)
        self._save_state()

    def _load_state(self) -> dict[str, Any]:
        if self.state_path is None or not self.state_path.exists():
            return {}
        with open(self.state_path) as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError(f"{self.state_path} is not a session state file")
        return data

    def _save_state(self) -> None:
        """Write the state at the end of this reactor turn (coalesced)."""
        if self.state_path is None or self._save_call is not None:
            return
        self._save_call = self.clock.callLater(0, self._flush_state)

    def _flush_state(self) -> None:
        if self._save_call is not None and self._save_call.active():
            self._save_call.cancel()
        self._save_call = None
        if self.state_path is None:
            return
        data: dict[str, Any] = {"device_id": self.device_id.hex(), "name": self.name}
        if self._have_cursor:
            data["cursor"] = self.cursor
        write_json_atomically(self.state_path, data)

    # --- sending -------------------------------------------------------------------------

    def _enqueue(self, group_id: int, peer: str | None, content_type: int, body: bytes,
                 client_msg_id: bytes | None) -> Deferred[m.SendAck]:
        if self._closing:
            return fail(self.failure or SessionClosed("the session is closed"))
        try:
            entry = self.outbox.add(group_id, peer, content_type, body, client_msg_id)
        except ValueError as e:
            return fail(e)
        d: Deferred[m.SendAck] = Deferred()
        self._waiters[entry.client_msg_id] = d
        if self._client is not None:
            self._unsent.append(entry.client_msg_id)
            self._pump()
        return d

    def _pump(self) -> None:
        client = self._client
        if client is None or self._paused:
            return
        generation = self._generation
        while (self._unsent and self._image_in_flight is None
               and len(self._in_flight) < self.max_in_flight):
            msg_id = self._unsent[0]
            entry = self.outbox.get(msg_id)
            if entry is None or msg_id in self._in_flight:
                self._unsent.popleft()
                continue
            if entry.content_type == m.ContentType.IMAGE and self._in_flight:
                return  # an image waits for the texts before it, then goes alone
            self._unsent.popleft()
            self._in_flight.add(msg_id)
            if entry.content_type == m.ContentType.IMAGE:
                self._image_in_flight = msg_id
                d = client.send_image(entry.to, entry.body, msg_id)
            else:
                d = client.send_text(entry.to, entry.body.decode("utf-8"), msg_id)
            d.addCallbacks(self._acked, self._send_failed, callbackArgs=(msg_id, generation),
                           errbackArgs=(msg_id, generation))
            if self._client is not client or generation != self._generation:
                return  # the send failed at once and the connection is gone

    def _sent(self, msg_id: bytes, generation: int) -> bool:
        """Forget the send on the current connection; False if it belonged to an old one."""
        if generation != self._generation:
            return False
        self._in_flight.discard(msg_id)
        if self._image_in_flight == msg_id:
            self._image_in_flight = None
        return True

    def _acked(self, ack: m.SendAck, msg_id: bytes, generation: int) -> None:
        current = self._sent(msg_id, generation)
        if self.outbox.remove(msg_id) is not None:
            waiter = self._waiters.pop(msg_id, None)
            if waiter is not None:
                waiter.callback(ack)
            self._notify("send_acknowledged", ack)
        if current:
            self._pump()

    def _send_failed(self, failure: Failure, msg_id: bytes, generation: int) -> None:
        current = self._sent(msg_id, generation)
        error = failure.value
        if isinstance(error, ConnectionLost) or not current:
            return  # resent after the reconnection
        if isinstance(error, ServerError) and error.code in RETRYABLE_CODES:
            # Keep it; stop sending (later messages stay behind it) and retry after a delay.
            self.transient_errors += 1
            self._paused = True
            if self._resume_call is None:
                self._resume_call = self.clock.callLater(
                    retry_delay(error, self.backoff.next_delay()), self._resume, generation)
            return
        if self.outbox.remove(msg_id) is not None:
            self._notify("send_failed", msg_id, error)
            waiter = self._waiters.pop(msg_id, None)
            if waiter is not None:
                waiter.errback(failure)
        self._pump()

    def _resume(self, generation: int) -> None:
        self._resume_call = None
        if generation != self._generation or self._client is None:
            return
        self._paused = False
        self._unsent = deque(entry.client_msg_id for entry in self.outbox
                             if entry.client_msg_id not in self._in_flight)
        self._pump()


def open_session(
    reactor: Any,
    endpoint: str | Sequence[str],
    name: str,
    password: str,
    *,
    register: bool = False,
    outbox_path: str | os.PathLike[str] | None = None,
    state_path: str | os.PathLike[str] | None = None,
    listener: ChatListener | None = None,
    trust: ServerTrust | None = None,
    timeouts: Timeouts | None = None,
    device_id: bytes | None = None,
    backoff: Backoff | tuple[float, float, float] | None = None,
    clock: Any = None,
    max_in_flight: int = 64,
    connector: Connector | None = None,
    **shorthand: Any,
) -> ChatSession:
    """Open a session that stays signed in across connection losses, and start connecting.

    Args:
        reactor: The reactor (connections; also the timers unless ``clock`` is given).
        endpoint: A client endpoint description (``tcp:host:port``, ``tls:host:port``, ...),
            or several (the nodes of one deployment, sharing one server key): each attempt
            goes to one, and a failed attempt moves to the next (:class:`EndpointRotation`).
        name: The user name.
        password: The password (kept in memory to sign in again after each reconnection).
        register: Create the account on the first connection (an existing name is fine).
        outbox_path: A file (SQLite) keeping unacknowledged messages across restarts; a new
            session with the same file resends what is left. None: in memory only.
        state_path: A JSON file (replaced atomically) keeping ``device_id`` and the cursor.
        listener: Receives messages (each at most once), receipts, typing, presence, errors,
            ``connection_state_changed`` with ``"connecting"``, ``"connected"``,
            ``"reconnecting"``, ``"resumed"`` or ``"offline"``, ``connection_lost`` per lost
            connection, and ``send_acknowledged`` / ``send_failed`` for outbox messages.
        trust: How to trust the server (:class:`~chatproto.client.api.ServerTrust`, as
            :func:`connect`).
        timeouts: The timers (:class:`~chatproto.client.api.Timeouts`); a missing Pong
            closes the connection, which triggers a reconnection; ``login_timeout`` bounds
            one whole attempt (connect, sign in, sync) before it is abandoned and retried.
        device_id: 16 bytes identifying this device (default: from ``state_path``, else
            random).
        backoff: A :class:`Backoff`, or ``(initial, maximum, factor)`` seconds; default
            ``(0.5, 30, 2)`` with full jitter.
        clock: The IReactorTime for the session's timers (backoff, timeouts); default the
            reactor.
        max_in_flight: Messages sent and not yet acknowledged at most, per connection.
        connector: ``connector(listener) -> Deferred[ChatClient]`` replacing :func:`connect`
            (tests).
        shorthand: The fields of ``ServerTrust`` and ``Timeouts`` as keywords
            (``known_servers=pins, ping_timeout=5``).

    Returns:
        The :class:`ChatSession` (already connecting; see :meth:`ChatSession.wait_connected`).
    """
    if isinstance(backoff, tuple):
        backoff = Backoff(*backoff)
    trust, timeouts = client_options(trust, timeouts, shorthand)
    timers = clock if clock is not None else reactor
    session: ChatSession

    rotation = EndpointRotation(endpoint)

    def default_connector(bridge: ChatListener) -> Deferred[ChatClient]:
        where = rotation.current
        d = connect(reactor, where, trust=trust, timeouts=timeouts,
                    device_id=session.device_id, listener=bridge)

        def failed(f: Failure) -> Failure:
            rotation.failed(where)
            return f

        return d.addErrback(failed)

    session = ChatSession(
        timers, connector or default_connector, name, password, register=register,
        outbox_path=outbox_path, state_path=state_path, listener=listener,
        device_id=device_id, backoff=backoff, login_timeout=timeouts.login_timeout,
        max_in_flight=max_in_flight,
    )
    session.start()
    return session
