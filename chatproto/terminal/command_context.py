"""What a command handler sees of the terminal client: :class:`TerminalClient`, named
structurally (the app imports the command tables, so they cannot import the app)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chatproto.client import ChatSession
from chatproto.terminal.cli import Settings
from chatproto.terminal.commandline import Command
from chatproto.terminal.model import ChatModel, Conversation

__all__ = ["Handler", "TerminalClient"]


class TerminalClient(Protocol):
    """What the command handlers use of :class:`chatproto.terminal.app.TerminalClient`."""

    client: ChatSession | None
    model: ChatModel
    settings: Settings

    def close_window(self, conv: Conversation) -> None: ...
    def load_history(self, conv: Conversation) -> None: ...
    def quit(self) -> None: ...
    def redraw(self) -> None: ...
    def refresh_presence(self) -> None: ...
    def report(self, conv: Conversation, what: str) -> Callable[[Failure], None]: ...
    def save_windows(self) -> None: ...
    def send(self, conv: Conversation, kind: str, msg_id: bytes,
             payload: bytes | str) -> None: ...
    def send_text(self, conv: Conversation, text: str) -> None: ...
    def switch(self, index: int) -> None: ...
    def timed(self, d: Deferred[Any]) -> Deferred[Any]: ...


#: A command handler: the client, the window the command was typed in, the parsed line.
Handler = Callable[[TerminalClient, Conversation, Command], None]
