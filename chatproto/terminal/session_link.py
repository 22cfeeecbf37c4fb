"""The terminal client's listener on its :class:`~chatproto.client.ChatSession`."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.python.failure import Failure

from chatproto.client import ChatListener, ServerError
from chatproto.terminal.model import ChatModel
from chatproto.wire import messages as m

__all__ = ["SessionLink"]


class LinkedApp(Protocol):
    """What the link uses of :class:`chatproto.terminal.app.TerminalClient` (named
    structurally: the app imports this module)."""

    generation: int
    model: ChatModel
    reactor: Any

    def on_message(self, deliver: m.Deliver, image: bytes | None) -> None: ...
    def on_state(self, state: str) -> None: ...
    def on_connection_lost(self, reason: Failure) -> None: ...
    def redraw(self) -> None: ...
    def save_windows(self) -> None: ...


class SessionLink(ChatListener):
    """The listener of one session: forwards to the app while the session is current."""

    def __init__(self, app: LinkedApp, generation: int) -> None:
        self.app = app
        self.generation = generation

    def _current(self) -> bool:
        return self.generation == self.app.generation

    def message_received(self, deliver: m.Deliver, image: bytes | None) -> None:
        if self._current():
            self.app.on_message(deliver, image)

    def receipt_received(self, receipt: m.Receipt) -> None:
        if self._current():
            self.app.model.receipt(receipt)
            self.app.save_windows()
            self.app.redraw()

    def typing_received(self, event: m.TypingEvent) -> None:
        if self._current():
            self.app.model.typing(event, self.app.reactor.seconds())
            self.app.redraw()

    def presence_changed(self, event: m.PresenceEvent) -> None:
        if self._current():
            self.app.model.set_presence(event.name, event.online, event.last_seen_ms,
                                        announce=True)
            self.app.redraw()

    def error_received(self, code: int, reason: str) -> None:
        if self._current():
            self.app.model.notice(f"server error {code}: {reason}", level="error")
            self.app.redraw()

    def connection_state_changed(self, state: str) -> None:
        if self._current():
            self.app.on_state(state)

    def connection_lost(self, reason: Failure) -> None:
        if self._current():
            self.app.on_connection_lost(reason)

    def signed_out(self, reason: str) -> None:
        if self._current():  # the session stops; the window stays until /quit
            self.app.model.notice(f"signed out: {reason}; /quit to exit", level="error")
            self.app.redraw()

    def send_acknowledged(self, ack: m.SendAck) -> None:
        if self._current():
            self.app.model.acked(ack)
            self.app.redraw()

    def send_failed(self, client_msg_id: bytes, error: Exception) -> None:
        if self._current():
            why = f"{error.reason} ({error.code})" if isinstance(error, ServerError) else str(
                error)
            self.app.model.failed(client_msg_id, why)
            self.app.redraw()
