"""``chatproto-client``: an irssi-like terminal client, and the entry point of the command line.

Why urwid: urwid ships :class:`urwid.TwistedEventLoop`, so the user interface runs on Twisted's
own reactor, the same one the client library's connections, timers and Deferreds use. There is
one event loop and one thread: keystrokes, network events and timers are all reactor callbacks,
with no asyncio bridge, no threads and no locking between the UI and the protocol. (Textual and
prompt_toolkit are asyncio applications and would need the asyncio reactor and a bridge.)

The layout follows irssi and weechat::

    ┌ topic: the window's peer and presence, or the group and its members ───────┐
    │ window list │ 14:02 <bob> hi ✓✓                                            │
    │ 1 status    │ 14:03 <alice> hello ✓✓ read                                  │
    │ 2 ● bob (2) │                                                              │
    ├─────────────┴──────────────────────────────────────────────────────────────┤
    │ bob is typing…                                                             │
    │ [14:03] [alice] [connected] [2:bob] [act: 3] [lag 2 ms]                    │
    │ [bob] the input line, /help for commands, Tab completes                    │
    └────────────────────────────────────────────────────────────────────────────┘

Everything the client shows lives in :class:`chatproto.terminal.model.ChatModel`; this module
draws it and feeds it from the library (only the public API of :mod:`chatproto.client`).
Once signed in, the client is a :class:`~chatproto.client.ChatSession`
(:func:`~chatproto.client.open_session`): when the connection drops it reconnects by itself
(status ``reconnecting`` then ``resumed``), and messages typed meanwhile wait in its outbox,
kept in the state directory, so they are sent even after a restart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import urwid
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure

from chatproto.client import (
    MAX_IMAGE_BYTES,
    ChatListener,
    ChatSession,
    RegisterError,
    ServerError,
    ServerKeyChanged,
    SessionClosed,
    SigninError,
    UnknownUser,
    UntrustedServer,
    connect,
    open_session,
)
from chatproto.terminal.cli import (
    EXIT_AUTH,
    EXIT_CONNECTION,
    EXIT_IDENTITY,
    EXIT_OK,
    Settings,
    build_parser,
    format_size,
    load_device_id,
    run_command,
    save_image,
)
from chatproto.terminal.model import (
    COMMANDS,
    MARKS,
    ChatModel,
    Conversation,
    Line,
    complete,
    last_seen_text,
    parse_command,
)
from chatproto.wire import messages as m

__all__ = ["TerminalClient", "main", "run_interactive"]

_log = Logger()

NICK_COLOURS = ["light red", "light green", "yellow", "light blue", "light magenta",
                "light cyan", "dark red", "dark green", "brown", "dark magenta", "dark cyan"]

PALETTE: list[tuple[str, str, str]] = [
    ("header", "white", "dark blue"),
    ("status", "white", "dark blue"),
    ("status_em", "yellow,bold", "dark blue"),
    ("time", "dark gray", ""),
    ("dim", "dark gray", ""),
    ("info", "dark cyan", ""),
    ("error", "light red,bold", ""),
    ("presence", "dark green", ""),
    ("event", "brown", ""),
    ("image", "light magenta", ""),
    ("mark", "dark gray", ""),
    ("mark_read", "dark green", ""),
    ("mark_failed", "light red", ""),
    ("me", "white,bold", ""),
    ("typing", "dark gray", ""),
    ("online", "light green", ""),
    ("offline", "dark gray", ""),
    ("win", "light gray", ""),
    ("win_active", "black", "light gray"),
    ("win_unread", "yellow,bold", ""),
    ("win_highlight", "light magenta,bold", ""),
    ("prompt", "light cyan", ""),
    ("title", "white,bold", ""),
    ("alert", "white,bold", "dark red"),
    ("field", "white", "dark gray"),
] + [(f"nick{i}", colour, "") for i, colour in enumerate(NICK_COLOURS)]

#: Seconds between typing notifications while typing, and of silence before "stopped".
TYPING_REFRESH = 3.0
TYPING_PAUSE = 4.0

Size = tuple[()] | tuple[int] | tuple[int, int]


def nick_attr(name: str) -> str:
    """A stable colour for a nick."""
    return f"nick{zlib.crc32(name.encode()) % len(NICK_COLOURS)}"


def render_line(line: Line, me: str) -> list[Any]:
    """The urwid markup of one window line."""
    out: list[Any] = [("time", time.strftime("%H:%M ", time.localtime(line.time_ms / 1000)))]
    if line.kind == "info":
        attr = {"error": "error", "presence": "presence"}.get(line.level, "info")
        out += [(attr, "-!- "), (attr, line.text)]
        return out
    if line.kind == "event":
        out += [("event", f"-*- {line.text}")]
        return out
    sender = line.sender or "?"
    out += [("dim", "<"), ("me" if sender == me else nick_attr(sender), sender), ("dim", "> ")]
    if line.kind == "image":
        out += [("image", "[image] "), line.text]
    else:
        out.append(line.text)
    if line.status:
        attr = {"read": "mark_read", "failed": "mark_failed"}.get(line.status, "mark")
        out.append((attr, f" {MARKS[line.status]}"))
    return out


class InputLine(urwid.Edit):
    """The command line: Tab completes, Up/Down recall earlier lines."""

    def __init__(self, completer: Callable[[str, int], Sequence[tuple[str, int]]]) -> None:
        super().__init__("", text_completer=completer)
        self.recall: list[str] = []
        self.recall_index = 0

    def remember(self, text: str) -> None:
        """Add a submitted line to the recall list."""
        if text and (not self.recall or self.recall[-1] != text):
            self.recall.append(text)
        self.recall_index = len(self.recall)

    def keypress(self, size: Size, key: str) -> str | None:
        """Up/Down walk the recall list; the rest is the Edit's."""
        if key in ("up", "down") and self.recall:
            step = -1 if key == "up" else 1
            self.recall_index = max(0, min(len(self.recall), self.recall_index + step))
            text = self.recall[self.recall_index] if self.recall_index < len(self.recall) else ""
            self.set_edit_text(text)
            self.set_edit_pos(len(text))
            return None
        return super().keypress(size, key)  # type: ignore[arg-type]  # an Edit is a flow widget


class KeyView(urwid.WidgetWrap[urwid.Widget]):
    """Gives global keys to a handler before the wrapped widget sees them."""

    def __init__(self, widget: urwid.Widget, handler: Callable[[str], bool]) -> None:
        super().__init__(widget)
        self.handler = handler

    def set(self, widget: urwid.Widget) -> None:
        """Show another widget."""
        self._w = widget

    def selectable(self) -> bool:
        """Always: the global keys must arrive even on screens of plain text."""
        return True

    def keypress(self, size: Size, key: str) -> str | None:
        """Global keys first."""
        if self.handler(key):
            return None
        if not self._w.selectable():
            return key
        result: str | None = self._w.keypress(size, key)
        return result


class _Link(ChatListener):
    """The listener of one session: forwards to the app while the session is current."""

    def __init__(self, app: TerminalClient, generation: int) -> None:
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


class TerminalClient:
    """The interactive client: login screens, then windows, status bar and command line.

    Args:
        reactor: The Twisted reactor (the UI runs on it).
        settings: The resolved options.
        screen: An urwid screen (tests may pass a fake one); the terminal by default.
    """

    def __init__(self, reactor: Any, settings: Settings,
                 screen: urwid.display.BaseScreen | None = None) -> None:
        self.reactor = reactor
        self.settings = settings
        self.model = ChatModel()
        self.client: ChatSession | None = None
        self.generation = 0
        self.conn_state = "offline"
        self.signed_in_once = False
        self.quitting = False
        self.exit_code = EXIT_OK
        self.lag_ms: int | None = None
        self.trust_answer: Deferred[bool] | None = None
        self.fatal = False
        self._typing_sent_at = 0.0
        self._typing_target: str | int | None = None
        self._typing_stop: Any = None
        self._redraw_call: Any = None
        self._shown: tuple[Any, int] | None = None
        self.device_id = load_device_id(settings.state_dir)

        # The main screen.
        self.topic = urwid.Text("")
        self.window_list: urwid.SimpleFocusListWalker[urwid.Columns] = \
            urwid.SimpleFocusListWalker([])
        self.messages: urwid.SimpleFocusListWalker[urwid.Text] = \
            urwid.SimpleFocusListWalker([])
        self.message_box = urwid.ListBox(self.messages)
        self.follow = True
        self.typing_text = urwid.Text("")
        self.status_text = urwid.Text("")
        self.input = InputLine(self._complete)
        urwid.connect_signal(self.input, "submit", self._submitted)
        urwid.connect_signal(self.input, "postchange", self._input_changed)
        sidebar = urwid.ListBox(self.window_list)
        rule = urwid.AttrMap(urwid.SolidFill("│"), "dim")
        body = urwid.Columns([(18, sidebar), (1, rule), self.message_box], dividechars=1)
        footer = urwid.Pile([
            urwid.AttrMap(self.typing_text, "typing"),
            urwid.AttrMap(self.status_text, "status"),
            self.input,
        ])
        self.main_view = urwid.Frame(body, header=urwid.AttrMap(self.topic, "header"),
                                     footer=footer, focus_part="footer")

        # The login screen.
        self.login_name = urwid.Edit("Name:     ", settings.name or "")
        self.login_password = urwid.Edit("Password: ", mask="*")
        urwid.connect_signal(self.login_name, "submit", lambda *_: self._login_next())
        urwid.connect_signal(self.login_password, "submit", lambda *_: self._login_submit(False))
        self.login_message = urwid.Text("")
        self.login_form = urwid.Pile([
            urwid.AttrMap(self.login_name, "field"),
            urwid.AttrMap(self.login_password, "field"),
        ])
        if settings.name:
            self.login_form.focus_position = 1
        self.login_view = self._boxed(urwid.Pile([
            urwid.Text(("title", "chatproto"), align="center"),
            urwid.Text(f"server {settings.server}", align="center"),
            urwid.Divider(),
            self.login_form,
            urwid.Divider(),
            urwid.Text("Enter: sign in    Ctrl-R: register a new account with this name and "
                       "password    Tab: next field    Ctrl-Q: quit"),
            urwid.Divider(),
            self.login_message,
        ]), "sign in")

        self.root = KeyView(self.login_view, self._global_key)
        self.loop = urwid.MainLoop(
            self.root, PALETTE, screen=screen, handle_mouse=False,
            event_loop=urwid.TwistedEventLoop(reactor=reactor, manage_reactor=True),
            unhandled_input=self._unhandled)
        self.ticker = LoopingCall(self._tick)
        self.view = "login"

    # --- screens -----------------------------------------------------------------------------

    @staticmethod
    def _boxed(widget: urwid.Widget, title: str, attr: str = "") -> urwid.Widget:
        box = urwid.LineBox(urwid.Padding(widget, left=1, right=1), title=title)
        return urwid.Filler(urwid.Padding(urwid.AttrMap(box, attr), "center", ("relative", 80)),
                            "middle")

    def _message_view(self, text: str | list[Any], attr: str = "") -> urwid.Widget:
        return self._boxed(urwid.Text(text), "chatproto", attr)

    def _show(self, view: str, widget: urwid.Widget) -> None:
        self.view = view
        self.root.set(widget)
        self.redraw()

    def show_login(self, message: str | tuple[str, str] = "") -> None:
        """The sign-in / register form."""
        self.login_message.set_text(message)
        self._show("login", self.login_view)

    def _global_key(self, key: str) -> bool:
        if key == "ctrl q" and self.view != "main":
            self.stop(self.exit_code)
            return True
        if self.view == "trust":
            if key in ("y", "Y", "n", "N") and self.trust_answer is not None:
                answer, self.trust_answer = self.trust_answer, None
                answer.callback(key in ("y", "Y"))
                return True
            return True
        if self.view == "fatal":
            if key in ("q", "Q", "enter", "esc"):
                self.stop(self.exit_code)
            return True
        if self.view == "login":
            if key == "ctrl r":
                self._login_submit(True)
                return True
            if key == "tab":
                self.login_form.focus_position = 1 - self.login_form.focus_position
                return True
            return False
        if self.view != "main":
            return False
        return self._main_key(key)

    def _main_key(self, key: str) -> bool:
        if key.startswith("meta ") and key[5:].isdigit():
            number = int(key[5:]) or 10
            self.switch(number - 1)
            return True
        if key == "ctrl n":
            self.switch((self.model.active + 1) % len(self.model.windows))
            return True
        if key == "ctrl p":
            self.switch((self.model.active - 1) % len(self.model.windows))
            return True
        if key in ("page up", "page down"):
            self._scroll(-10 if key == "page up" else 10)
            return True
        if key == "ctrl l":
            self.loop.screen.clear()
            return True
        return False

    def _unhandled(self, key: str | tuple[str, int, int, int]) -> bool | None:
        return None

    def _scroll(self, delta: int) -> None:
        if not self.messages:
            if delta < 0:
                self.load_history(self.model.current)
            return
        position = self.message_box.focus_position
        if delta < 0 and position == 0:
            self.load_history(self.model.current)
            return
        target = max(0, min(len(self.messages) - 1, position + delta))
        self.message_box.set_focus(target, "above" if delta < 0 else "below")
        self.follow = target == len(self.messages) - 1
        self.redraw()

    # --- trust on first use ------------------------------------------------------------------

    def ask_trust(self, host: str, fingerprint: str) -> Deferred[bool]:
        """The first-contact prompt: show the fingerprint, wait for y or n."""
        self.trust_answer = Deferred()
        self._show("trust", self._message_view([
            ("title", "New server\n\n"),
            f"You have not connected to {host} before. Its identity key fingerprint is\n\n",
            ("title", f"    {fingerprint}\n\n"),
            "Compare it with the one the server's operator gave you (the server logs it at "
            "start; chatproto-admin prints it).\n\n",
            f"Trust this server and remember its key in {self.settings.known_servers.path}? ",
            ("title", "[y/n]"),
        ]))
        return self.trust_answer

    def show_fatal(self, text: list[Any], code: int) -> None:
        """A failure the user can only acknowledge (Enter or q quits)."""
        self.fatal = True
        self.exit_code = code
        self._show("fatal", self._message_view(text + ["\n\nPress q to quit."]))

    def _key_changed(self, error: ServerKeyChanged) -> None:
        self.show_fatal([
            ("alert", " SERVER IDENTITY CHANGED "), "\n\n",
            f"The server {error.host} presented a different identity key than the one "
            "pinned for it.\n\n",
            "  pinned:    ", ("title", error.expected), "\n",
            "  presented: ", ("title", error.got), "\n\n",
            "Someone may be impersonating the server, or its key was replaced. Nothing was "
            "sent. If the operator confirms the new key, remove the line for "
            f"{error.host} from {self.settings.known_servers.path} and start again.",
        ], EXIT_IDENTITY)

    # --- connecting and signing in -----------------------------------------------------------

    def start(self) -> None:
        """Show the sign-in form."""
        self.ticker.start(1.0, now=False)
        self.show_login(f"Sign in to {self.settings.server}, or register a new account.")

    def _login_next(self) -> None:
        self.login_form.focus_position = 1

    def _login_submit(self, register: bool) -> None:
        if self.client is not None and self.client.state not in ("offline", "idle"):
            return  # an attempt is running
        name = self.login_name.edit_text.strip()
        password = self.login_password.edit_text
        if m.NAME_PATTERN.fullmatch(name) is None:
            self.login_message.set_text(("error", "A name is 1 to 32 of a-z 0-9 _ . - and "
                                                  "starts with a letter or a digit."))
            self.login_form.focus_position = 0
            return
        if not password:
            self.login_form.focus_position = 1
            return
        if register and len(password) < 8:
            self.login_message.set_text(("error", "A new password needs 8 characters or "
                                                  "more."))
            return
        self.login_message.set_text(f"Connecting to {self.settings.server}…")
        ensureDeferred(self._login(name, password, register))

    def _trust_failure(self, error: BaseException) -> bool:
        if isinstance(error, ServerKeyChanged):
            self._key_changed(error)
            return True
        if isinstance(error, UntrustedServer):
            self.show_fatal([f"You did not trust {error.host} ({error.fingerprint}); not "
                             "connecting."], EXIT_IDENTITY)
            return True
        return False

    async def _register(self, name: str, password: str) -> bool:
        """Create the account on a connection of its own (clear errors: name taken, ...)."""
        try:
            client = await connect(
                self.reactor, self.settings.server, known_servers=self.settings.known_servers,
                server_fingerprint=self.settings.server_fingerprint,
                trust_on_first_use=self.ask_trust, device_id=self.device_id)
        except Exception as e:
            if not self._trust_failure(e):
                self.show_login(("error", f"Cannot connect to {self.settings.server}: {e}"))
            return False
        try:
            await client.register(name, password)
        except RegisterError as e:
            self.show_login(("error", f"Registration refused: {e.reason} ({e.code})"))
            return False
        except Exception as e:
            self.show_login(("error", f"Registration failed: {e}"))
            return False
        finally:
            if client.state != "offline":
                client.close()
        self.show_login(f"Registered {name}; signing in…")
        return True

    async def _login(self, name: str, password: str, register: bool) -> None:
        if register and not await self._register(name, password):
            return
        self.generation += 1
        self.model = ChatModel(name)
        self._shown = None
        session = open_session(
            self.reactor, self.settings.server, name, password,
            known_servers=self.settings.known_servers,
            server_fingerprint=self.settings.server_fingerprint,
            trust_on_first_use=self.ask_trust, device_id=self.device_id,
            state_path=self._state_path("session", name, "json"),
            outbox_path=self._state_path("outbox", name, "sqlite"),
            listener=_Link(self, self.generation))
        self.client = session
        try:
            await session.wait_connected()
        except Exception as e:
            await session.close()
            if self._trust_failure(e):
                return
            if isinstance(e, SigninError):
                self.exit_code = EXIT_AUTH
                self.login_password.set_edit_text("")
                self.show_login(("error", f"Sign-in refused: {e.reason} ({e.code})"))
            else:
                self.show_login(("error", f"Failed: {e}"))
            return
        self.exit_code = EXIT_OK
        self.settings.name = name
        self.login_password.set_edit_text("")
        self.signed_in_once = True
        self._restore_windows()
        for entry in session.pending():
            conv = self.model.window(("group", entry.group_id) if entry.group_id
                                     else ("dm", entry.peer or ""))
            assert conv is not None
            kind = "image" if entry.content_type == m.ContentType.IMAGE else "text"
            text = entry.body.decode("utf-8", "replace") if kind == "text" else \
                f"sent an image ({format_size(len(entry.body))})"
            self.model.add_outgoing(conv, kind, text, entry.client_msg_id)
        self.model.notice(f"Signed in as {name} on {self.settings.server}. "
                          "Type /help for the commands.")
        self._show("main", self.main_view)
        await self._refresh_contacts()

    async def _refresh_contacts(self) -> None:
        """Groups and presence, after each (re)connection."""
        client = self.client
        if client is None:
            return
        try:
            groups = await self._timed(client.list_groups())
            for info in groups:
                self.model.set_group_title(info.group_id, info.title)
                self.model.group(info.group_id)
            for entry in await client.presence():
                self.model.set_presence(entry.name, entry.online, entry.last_seen_ms)
        except Exception as e:
            self.model.notice(f"could not load the conversations: {e}", level="error")
        self._save_windows()
        current = self.model.current
        if not current.is_status and not current.history_loaded:
            self.load_history(current)
        self.redraw()

    def on_state(self, state: str) -> None:
        """The session's state: connecting, connected, reconnecting, resumed, offline."""
        self.conn_state = state
        if self.view == "login" and state == "reconnecting":
            self.login_message.set_text(("error", f"Cannot reach {self.settings.server}; "
                                                  "retrying… (Ctrl-Q quits)"))
        if self.view == "main":
            if state == "resumed":
                self.model.notice("reconnected; session resumed")
                ensureDeferred(self._refresh_contacts())
            elif state == "offline" and not self.quitting and self.client is not None:
                failure = self.client.failure
                error = failure.value if failure is not None else None
                if failure is not None and not (error and self._trust_failure(error)):
                    self.model.notice(f"offline: {failure.getErrorMessage()}; /quit to exit",
                                      level="error")
        self.redraw()

    def on_connection_lost(self, reason: Failure) -> None:
        """A connection of the session closed (it reconnects by itself)."""
        if self.quitting or self.fatal or self.view != "main":
            return
        self.model.notice(f"connection lost ({reason.getErrorMessage()}); reconnecting",
                          level="error")
        self.redraw()

    def signed_in(self) -> bool:
        """A live, signed-in connection."""
        return self.client is not None and self.client.connected

    async def _timed(self, d: Deferred[Any]) -> Any:
        start = self.reactor.seconds()
        result = await d
        self.lag_ms = int((self.reactor.seconds() - start) * 1000)
        return result

    # --- windows -----------------------------------------------------------------------------

    def _state_path(self, kind: str, name: str, ext: str) -> Path:
        host = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.settings.host)
        self.settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self.settings.state_dir / f"{kind}-{host}-{name}.{ext}"

    def _state_file(self) -> Path:
        return self._state_path("windows", self.model.me, "json")

    def _restore_windows(self) -> None:
        try:
            saved = json.loads(self._state_file().read_text())
        except (OSError, ValueError):
            return
        for entry in saved.get("windows", []):
            if entry.get("dm"):
                self.model.dm(str(entry["dm"]))
            elif entry.get("group"):
                self.model.set_group_title(int(entry["group"]), str(entry.get("title", "")))
                self.model.group(int(entry["group"]))

    def _save_windows(self) -> None:
        windows: list[dict[str, Any]] = []
        for conv in self.model.windows[1:]:
            if conv.is_group:
                windows.append({"group": conv.target, "title": self.model.group_titles.get(
                    int(conv.target), "")})
            else:
                windows.append({"dm": conv.target})
        try:
            self.settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._state_file().write_text(json.dumps({"windows": windows}))
        except OSError as e:
            _log.warn("cannot save the window list: {e}", e=e)

    def switch(self, index: int) -> None:
        """Show window ``index`` (0-based)."""
        if self.model.switch(index):
            self.follow = True
            self._stop_typing()
            conv = self.model.current
            if not conv.is_status and not conv.history_loaded:
                self.load_history(conv)
            self._mark_read(conv)
            self.redraw()

    def load_history(self, conv: Conversation) -> None:
        """Load the previous page of a window's history."""
        if conv.is_status or not self.signed_in():
            return
        if conv.history_loaded and not conv.has_more:
            self.model.notice("no older messages", conv)
            self.redraw()
            return
        assert self.client is not None
        before = conv.oldest_seq or 0
        d = self.client.history(conv.target, before_seq=before, limit=50)

        def loaded(page: m.HistoryPage) -> None:
            self.model.add_history(conv, page)
            if conv is self.model.current:
                self._mark_read(conv)
            self.redraw()

        def failed(f: Failure) -> None:
            conv.history_loaded = True
            conv.has_more = False
            self.model.notice(f"history: {f.getErrorMessage()}", conv, level="error")
            self.redraw()

        d.addCallbacks(loaded, failed)

    def _mark_read(self, conv: Conversation) -> None:
        if conv.is_status or not self.signed_in():
            return
        up_to = conv.highest_foreign_seq(self.model.me)
        if up_to > conv.read_sent:
            conv.read_sent = up_to
            assert self.client is not None
            self.client.mark_read(conv.target, up_to).addErrback(lambda _: None)

    # --- incoming ----------------------------------------------------------------------------

    def on_message(self, deliver: m.Deliver, image: bytes | None) -> None:
        """A delivered message (saved to the downloads folder if it is an image)."""
        path: str | None = None
        known = self.model.window(self.model.key_of(deliver), create=False)
        if image is not None and not (deliver.sender == self.model.me and known is not None and any(
                line.client_msg_id == deliver.client_msg_id for line in known.lines)):
            try:
                path = str(save_image(self.settings.downloads, deliver, image))
            except OSError as e:
                self.model.notice(f"cannot save an image from {deliver.sender}: {e}",
                                  level="error")
        line = self.model.add_deliver(deliver, path)
        if known is None:
            self._save_windows()
            self.refresh_presence()
        if line is not None and self.model.key_of(deliver) == self.model.current.key:
            self._mark_read(self.model.current)
        self.redraw()

    def refresh_presence(self) -> None:
        """Ask for the presence of every contact (new windows, groups; once a minute)."""
        if not self.signed_in():
            return
        assert self.client is not None

        def learned(entries: tuple[m.PresenceInfo, ...]) -> None:
            for e in entries:
                self.model.set_presence(e.name, e.online, e.last_seen_ms)
            self.redraw()

        ensureDeferred(self._timed(self.client.presence())).addCallbacks(learned,
                                                                         lambda _: None)

    # --- the command line --------------------------------------------------------------------

    def _complete(self, text: str, pos: int) -> list[tuple[str, int]]:
        return complete(text, pos, self.model.known_names())

    def _input_changed(self, _edit: urwid.Edit, _old: str) -> None:
        text = self.input.edit_text
        conv = self.model.current
        if not text or text.startswith("/") or conv.is_status or not self.signed_in():
            self._stop_typing()
            return
        now = self.reactor.seconds()
        if self._typing_target != conv.target or now - self._typing_sent_at > TYPING_REFRESH:
            assert self.client is not None
            self.client.typing(conv.target, True).addErrback(lambda _: None)
            self._typing_target = conv.target
            self._typing_sent_at = now
        if self._typing_stop is not None and self._typing_stop.active():
            self._typing_stop.reset(TYPING_PAUSE)
        else:
            self._typing_stop = self.reactor.callLater(TYPING_PAUSE, self._stop_typing)

    def _stop_typing(self) -> None:
        if self._typing_stop is not None and self._typing_stop.active():
            self._typing_stop.cancel()
        self._typing_stop = None
        target, self._typing_target = self._typing_target, None
        self._typing_sent_at = 0.0
        if target is not None and self.signed_in():
            assert self.client is not None
            self.client.typing(target, False).addErrback(lambda _: None)

    def _submitted(self, _edit: urwid.Edit, text: str) -> None:
        self.input.set_edit_text("")
        self.input.remember(text)
        if not text.strip():
            return
        try:
            self.execute(text)
        except Exception as e:  # a bug must not take the terminal down
            _log.failure("command {text!r} failed", text=text)
            self.model.notice(f"error: {e}", self.model.current, level="error")
        self.follow = True
        self.redraw()

    def execute(self, text: str) -> None:
        """Run a command line, or send it as a message to the current window."""
        cmd = parse_command(text)
        conv = self.model.current
        if not cmd.name:
            self._stop_typing()
            if conv.is_status:
                self.model.notice("this is the status window: open a chat with /msg NAME",
                                  conv)
                return
            self.send_text(conv, cmd.rest)
            return
        handler = getattr(self, f"cmd_{cmd.name}", None)
        if handler is None:
            self.model.notice(f"unknown command /{cmd.name}; /help lists them", conv,
                              level="error")
            return
        if cmd.name not in ("help", "win", "close", "quit") and not self.signed_in() and \
                cmd.name != "image":
            self.model.notice(f"not connected ({self.conn_state}); try again when connected",
                              conv, level="error")
            return
        handler(conv, cmd.args, cmd.rest)

    def _report(self, conv: Conversation, what: str) -> Callable[[Failure], None]:
        def report(f: Failure) -> None:
            error = f.value
            if isinstance(error, UnknownUser):
                text = f"{what}: no such user {', '.join(error.names) or ''}".rstrip()
            elif isinstance(error, ServerError):
                text = f"{what}: {error.reason} ({error.code})"
            else:
                text = f"{what}: {f.getErrorMessage()}"
            self.model.notice(text, conv, level="error")
            self.redraw()
        return report

    def cmd_help(self, conv: Conversation, args: list[str], rest: str) -> None:
        """/help"""
        self.model.notice("commands (Tab completes, Up/Down recall, PgUp/PgDn scroll, "
                          "Alt+N / Ctrl-N / Ctrl-P switch windows):", conv)
        for name, (usage, text) in COMMANDS.items():
            self.model.notice(f"  /{name} {usage}".rstrip() + f" — {text}", conv)

    def cmd_quit(self, conv: Conversation, args: list[str], rest: str) -> None:
        """/quit: sign out and exit."""
        self.quit()

    def cmd_win(self, conv: Conversation, args: list[str], rest: str) -> None:
        """/win N|NAME"""
        target = self.model.find(rest) if rest else None
        if target is None:
            self.model.notice(f"no window {rest!r}", conv, level="error")
            return
        self.switch(self.model.windows.index(target))

    def cmd_close(self, conv: Conversation, args: list[str], rest: str) -> None:
        """/close"""
        self.model.close(conv)
        self._save_windows()
        self.switch(self.model.active)

    def cmd_msg(self, conv: Conversation, args: list[str], rest: str) -> None:
        """/msg NAME [TEXT]"""
        if not args or m.NAME_PATTERN.fullmatch(args[0]) is None:
            self.model.notice("usage: /msg NAME [TEXT]", conv, level="error")
            return
        peer = args[0]
        text = rest[len(peer):].strip()
        if peer == self.model.me:
            self.model.notice("that is you", conv, level="error")
            return
        assert self.client is not None

        def opened(ack: m.AckCreate) -> None:
            self.model.set_presence(ack.peer, ack.online, ack.last_seen_ms)
            window = self.model.dm(ack.peer)
            self._save_windows()
            self.switch(self.model.windows.index(window))
            if text:
                self.send_text(window, text)
            self.redraw()

        d = ensureDeferred(self._timed(self.client.create_chat(peer)))
        d.addCallbacks(opened, self._report(conv, f"/msg {peer}"))

    def cmd_group(self, conv: Conversation, args: list[str], rest: str) -> None:
        """/group create|add|remove|leave|members|rename"""
        assert self.client is not None
        sub = args[0] if args else ""
        names = args[1:]
        if sub == "create":
            bad = [n for n in names if m.NAME_PATTERN.fullmatch(n) is None]
            if not names or bad:
                self.model.notice("usage: /group create NAME...", conv, level="error")
                return
            title = ", ".join(sorted({self.model.me, *names}))[:200]

            def created(ack: m.AckCreateGroup) -> None:
                self.model.set_group_title(ack.group_id, title)
                window = self.model.group(ack.group_id)
                self.model.group_members[ack.group_id] = [self.model.me, *names]
                if ack.offline:
                    self.model.notice(f"offline now: {', '.join(ack.offline)}", window)
                self.refresh_presence()
                self._save_windows()
                self.switch(self.model.windows.index(window))

            self.client.create_group(names, title).addCallbacks(
                created, self._report(conv, "/group create"))
            return
        if not conv.is_group:
            self.model.notice("/group add, remove, leave, members and rename work in a group "
                              "window (or use /group create NAME...)", conv, level="error")
            return
        group_id = int(conv.target)
        if sub in ("add", "remove"):
            if not names:
                self.model.notice(f"usage: /group {sub} NAME...", conv, level="error")
                return
            call = self.client.group_add if sub == "add" else self.client.group_remove
            call(group_id, names).addErrback(self._report(conv, f"/group {sub}"))
        elif sub == "leave":
            def left(_: object) -> None:
                self.model.close(conv)
                self._save_windows()
                self.switch(self.model.active)

            self.client.group_leave(group_id).addCallbacks(left,
                                                           self._report(conv, "/group leave"))
        elif sub == "members":
            def listed(members: tuple[m.MemberInfo, ...]) -> None:
                self.model.group_members[group_id] = [x.name for x in members]
                self.model.notice(f"{len(members)} members:", conv)
                now = self.model.now_ms()
                for x in members:
                    state = "● online" if x.online else f"○ {last_seen_text(x.last_seen_ms, now)}"
                    self.model.notice(f"  {x.name} ({x.role}) {state}", conv)
                self.redraw()

            self.client.group_members(group_id).addCallbacks(
                listed, self._report(conv, "/group members"))
        elif sub == "rename":
            title = rest.partition(" ")[2].strip()
            self.client.group_rename(group_id, title).addErrback(
                self._report(conv, "/group rename"))
        else:
            self.model.notice("usage: /group create NAME... | add NAME... | remove NAME... | "
                              "leave | members | rename TITLE", conv, level="error")

    def cmd_who(self, conv: Conversation, args: list[str], rest: str) -> None:
        """/who"""
        assert self.client is not None

        def shown(entries: tuple[m.PresenceInfo, ...]) -> None:
            now = self.model.now_ms()
            for e in entries:
                self.model.set_presence(e.name, e.online, e.last_seen_ms)
            if not entries:
                self.model.notice("no contacts yet", conv)
            for e in sorted(entries, key=lambda e: (not e.online, e.name)):
                state = "● online" if e.online else f"○ {last_seen_text(e.last_seen_ms, now)}"
                self.model.notice(f"  {e.name} {state}", conv, level="presence")
            self.redraw()

        ensureDeferred(self._timed(self.client.presence())).addCallbacks(
            shown, self._report(conv, "/who"))

    def cmd_history(self, conv: Conversation, args: list[str], rest: str) -> None:
        """/history"""
        if conv.is_status:
            self.model.notice("the status window has no history", conv)
            return
        self.load_history(conv)

    def cmd_image(self, conv: Conversation, args: list[str], rest: str) -> None:
        """/image PATH"""
        if conv.is_status:
            self.model.notice("open a chat first (/msg NAME)", conv, level="error")
            return
        path = Path(os.path.expanduser(rest.strip().strip("'\"")))
        try:
            data = path.read_bytes()
        except OSError as e:
            self.model.notice(f"/image: {e.strerror or e}: {path}", conv, level="error")
            return
        if not data or len(data) > MAX_IMAGE_BYTES:
            self.model.notice(f"/image: an image is 1 byte to {format_size(MAX_IMAGE_BYTES)}",
                              conv, level="error")
            return
        msg_id = os.urandom(16)
        self.model.add_outgoing(conv, "image",
                                f"sent an image: {path.name} ({format_size(len(data))})",
                                msg_id, str(path))
        self._send(conv, "image", msg_id, data)

    def send_text(self, conv: Conversation, text: str) -> None:
        """Send a text to a window (queued while reconnecting)."""
        if len(text.encode()) > m.MAX_TEXT_BYTES:
            self.model.notice("that message is too long", conv, level="error")
            return
        msg_id = os.urandom(16)
        self.model.add_outgoing(conv, "text", text, msg_id)
        self._send(conv, "text", msg_id, text)

    def _send(self, conv: Conversation, kind: str, msg_id: bytes, payload: bytes | str) -> None:
        """Through the session's outbox: sent now, or after the reconnection."""
        assert self.client is not None
        if kind == "text":
            assert isinstance(payload, str)
            d = self.client.send_text(conv.target, payload, client_msg_id=msg_id)
        else:
            assert isinstance(payload, bytes)
            d = self.client.send_image(conv.target, payload, client_msg_id=msg_id)
        started = self.reactor.seconds()

        def stored(ack: m.SendAck) -> None:
            if self.signed_in():
                self.lag_ms = int((self.reactor.seconds() - started) * 1000)
            self.model.acked(ack)
            self.redraw()

        def failed(f: Failure) -> None:
            if not f.check(SessionClosed) and not self.quitting:
                self.model.failed(msg_id, f.getErrorMessage())
            self.redraw()

        d.addCallbacks(stored, failed)

    # --- drawing -----------------------------------------------------------------------------

    def redraw(self) -> None:
        """Redraw soon (once per reactor turn, however many events arrived)."""
        if self._redraw_call is None:
            self._redraw_call = self.reactor.callLater(0, self._redraw_now)

    def _redraw_now(self) -> None:
        self._redraw_call = None
        self.refresh()
        if self.loop.screen.started:
            self.loop.draw_screen()

    def _tick(self) -> None:
        self._ticks = getattr(self, "_ticks", 0) + 1
        if self._ticks % 60 == 0:
            self.refresh_presence()  # also measures the lag
        self.refresh()
        if self.loop.screen.started:
            self.loop.draw_screen()

    def refresh(self) -> None:
        """Update every widget of the main screen from the model."""
        if self.view != "main":
            return
        model = self.model
        conv = model.current
        self._refresh_topic(conv)
        self._refresh_window_list()
        shown = (conv.key, conv.version)
        if shown != self._shown:
            self._shown = shown
            self.messages[:] = [urwid.Text(render_line(line, model.me)) for line in conv.lines]
        if self.messages and self.follow:
            self.message_box.set_focus(len(self.messages) - 1)
        typing = conv.typing_names(self.reactor.seconds())
        if typing:
            who = " and ".join(typing) if len(typing) < 3 else f"{len(typing)} people"
            self.typing_text.set_text(f" {who} {'is' if len(typing) == 1 else 'are'} typing…")
        else:
            self.typing_text.set_text("")
        self.status_text.set_text(self._status_markup())
        self.input.set_caption(("prompt", f"[{conv.title}] "))

    def _refresh_topic(self, conv: Conversation) -> None:
        model = self.model
        if conv.is_status:
            text = f" chatproto — {model.me} on {self.settings.server}"
        elif conv.is_group:
            group_id = int(conv.target)
            members = model.group_members.get(group_id)
            text = f" {conv.title} (group {group_id})"
            if members:
                text += " — " + ", ".join(
                    f"{model.presence_mark(n)}{n}".strip() for n in members)
        else:
            name = str(conv.target)
            p = model.presence.get(name)
            if p is None:
                text = f" {name}"
            elif p.online:
                text = f" {name} ● online"
            else:
                text = f" {name} ○ {last_seen_text(p.last_seen_ms, model.now_ms())}"
        self.topic.set_text(text)

    def _refresh_window_list(self) -> None:
        model = self.model
        items: list[urwid.Columns] = []
        for index, conv in enumerate(model.windows):
            if conv.is_status:
                mark = " "
            elif conv.is_group:
                mark = "#"
            else:
                mark = model.presence_mark(str(conv.target))
            title = conv.title[1:] if conv.is_group else conv.title
            label = f"{index + 1:>2} {mark} {title}"
            if index == model.active:
                attr = "win_active"
            elif conv.highlight:
                attr = "win_highlight"
            elif conv.unread:
                attr = "win_unread"
            elif mark == "●":
                attr = "online"
            else:
                attr = "win"
            row: list[Any] = [urwid.Text((attr, label), wrap="ellipsis")]
            if conv.unread:
                row.append(("pack", urwid.Text(("win_unread", f"({conv.unread})"))))
            items.append(urwid.Columns(row, dividechars=1))
        self.window_list[:] = items

    def _status_markup(self) -> list[Any]:
        model = self.model
        conv = model.current
        parts: list[Any] = [f" [{time.strftime('%H:%M')}] [", ("status_em", model.me), "] ["]
        parts += [("status_em" if self.conn_state in ("connected", "resumed") else "alert",
                   self.conn_state), "] "]
        parts.append(f"[{model.active + 1}:{conv.title}] ")
        active = [str(i + 1) for i, c in enumerate(model.windows) if c.unread]
        if active:
            parts += ["[act: ", ("status_em", ",".join(active)), "] "]
        if self.lag_ms is not None:
            parts.append(f"[lag {self.lag_ms} ms] ")
        queued = len(self.client.pending()) if self.client is not None else 0
        if queued:
            parts.append(f"[{queued} queued] ")
        return parts

    # --- leaving -----------------------------------------------------------------------------

    def quit(self) -> None:
        """/quit: sign out properly, then stop."""
        if self.quitting:
            return
        self.quitting = True
        self.conn_state = "offline"
        self.model.notice("signing out…")
        self.redraw()
        client = self.client
        if client is None:
            self.stop(EXIT_OK)
            return
        timeout = self.reactor.callLater(5, lambda: self.stop(EXIT_OK))

        def done(_: object) -> None:
            if timeout.active():
                timeout.cancel()
            self.stop(EXIT_OK)

        client.close().addBoth(done)

    def stop(self, code: int) -> None:
        """Leave the main loop with an exit status."""
        self.exit_code = code
        self.quitting = True
        if self.ticker.running:
            self.ticker.stop()
        if self.reactor.running:
            self.reactor.stop()

    def run(self) -> int:
        """Run until the user quits; returns the exit status."""
        self.reactor.callWhenRunning(self.start)
        self.loop.run()
        return self.exit_code


def _start_log(state_dir: Path) -> None:
    """Log to ``STATE_DIR/client.log`` (the screen belongs to the UI)."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log_file = open(state_dir / "client.log", "a", encoding="utf-8")  # noqa: SIM115
    except OSError:
        return
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log_file)],  # type: ignore[list-item]
                                      redirectStandardIO=False)


def run_interactive(args: argparse.Namespace) -> int:
    """Run the interactive client with parsed options; returns the exit status."""
    from twisted.internet import reactor

    settings = Settings.from_args(args)
    _start_log(settings.state_dir)
    app = TerminalClient(reactor, settings)
    try:
        return app.run()
    except KeyboardInterrupt:
        return EXIT_CONNECTION


def main(argv: Sequence[str] | None = None) -> None:
    """The ``chatproto-client`` entry point: a command, or the interactive client."""
    args = build_parser().parse_args(argv)
    if args.command is None:
        sys.exit(run_interactive(args))
    run_command(args)
