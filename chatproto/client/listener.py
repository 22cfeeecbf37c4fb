"""What a client application hears from the server: :class:`ChatListener`."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.wire import messages as m


class BridgedSession(Protocol):
    """What :class:`SessionBridge` needs of its session (a
    :class:`~chatproto.client.reconnect.ChatSession`; named structurally so this module does
    not import the one that imports it)."""

    _generation: int

    def _on_deliver(self, deliver: m.Deliver, image: bytes | None) -> None: ...

    def _notify(self, method: str, *args: Any) -> None: ...

    def _connection_lost(self, reason: Failure) -> None: ...

    def close(self) -> Any: ...


__all__ = ["ChatListener", "SessionBridge", "notify"]

_log = Logger()


class ChatListener:
    """Receives what the server pushes; override the methods you need (all are no-ops).

    Exceptions raised by a listener method are logged and otherwise ignored.
    """

    def message_received(self, deliver: m.Deliver, image: bytes | None) -> None:
        """A message arrived. For an image, ``image`` is the whole verified image (``deliver``
        is the first frame; its ``body`` is only the first chunk)."""

    def receipt_received(self, receipt: m.Receipt) -> None:
        """A message we sent was delivered to or read by someone."""

    def typing_received(self, event: m.TypingEvent) -> None:
        """Someone started or stopped typing."""

    def presence_changed(self, event: m.PresenceEvent) -> None:
        """A contact came online or went offline."""

    def error_received(self, code: int, reason: str) -> None:
        """An error not tied to a request (an unsolicited ERROR, a corrupt image)."""

    def connection_state_changed(self, state: str) -> None:
        """For a :class:`ChatClient`: ``"connected"`` (server trusted), ``"signed_in"`` or
        ``"offline"``. For a :class:`~chatproto.client.reconnect.ChatSession`:
        ``"connecting"``, ``"connected"``, ``"reconnecting"``, ``"resumed"`` or
        ``"offline"``."""

    def send_acknowledged(self, ack: m.SendAck) -> None:
        """(ChatSession only) A message of the outbox was stored by the server; also called
        for messages queued by an earlier process with the same outbox file."""

    def send_failed(self, client_msg_id: bytes, error: Exception) -> None:
        """(ChatSession only) The server refused an outbox message for good (unknown user,
        not a member, ...); it was removed from the outbox."""

    def connection_lost(self, reason: Failure) -> None:
        """The connection closed; ``reason`` says why."""

    def signed_out(self, reason: str) -> None:
        """Another device of the account signed this one out, changed the password or
        deleted the account; the server closes the connection (a ChatSession stops)."""


def notify(listener: ChatListener, method: str, *args: object) -> None:
    """Call a listener method; an exception in the application's code is logged, never
    allowed to break the connection's processing."""
    try:
        getattr(listener, method)(*args)
    except Exception:
        _log.failure("listener {method} raised", method=method)


class SessionBridge(ChatListener):
    """The listener of one connection: forwards to the session while it is current."""

    def __init__(self, session: BridgedSession, generation: int) -> None:
        self.session = session
        self.generation = generation

    def _current(self) -> bool:
        return self.generation == self.session._generation

    def message_received(self, deliver: m.Deliver, image: bytes | None) -> None:
        if self._current():
            self.session._on_deliver(deliver, image)

    def receipt_received(self, receipt: m.Receipt) -> None:
        if self._current():
            self.session._notify("receipt_received", receipt)

    def typing_received(self, event: m.TypingEvent) -> None:
        if self._current():
            self.session._notify("typing_received", event)

    def presence_changed(self, event: m.PresenceEvent) -> None:
        if self._current():
            self.session._notify("presence_changed", event)

    def error_received(self, code: int, reason: str) -> None:
        if self._current():
            self.session._notify("error_received", code, reason)

    def connection_state_changed(self, state: str) -> None:
        """The session reports its own states; the per-connection ones are not forwarded."""

    def connection_lost(self, reason: Failure) -> None:
        if self._current():
            self.session._connection_lost(reason)

    def signed_out(self, reason: str) -> None:
        if self._current():  # no reconnecting: the account said so
            self.session._notify("signed_out", reason)
            self.session.close()
