"""``chatproto-client``: an irssi-like terminal client, and the entry point of the command line.

Why urwid: urwid ships :class:`urwid.TwistedEventLoop`, so the user interface runs on Twisted's
own reactor, the same one the client library's connections, timers and Deferreds use. There is
one event loop and one thread: keystrokes, network events and timers are all reactor callbacks,
with no asyncio bridge, no threads and no locking between the UI and the protocol. (Textual and
prompt_toolkit are asyncio applications and would need the asyncio reactor and a bridge.)

The pieces: :mod:`~chatproto.terminal.model` (everything shown, no I/O),
:mod:`~chatproto.terminal.view` (the main screen), :mod:`~chatproto.terminal.screens` (sign-in,
trust, fatal), :mod:`~chatproto.terminal.commands` (the ``/commands``),
:mod:`~chatproto.terminal.local_state` (the state directory). This module connects them to the
library: once signed in, the client is a :class:`~chatproto.client.ChatSession`
(:func:`~chatproto.client.open_session`): when the connection drops it reconnects by itself
(status ``reconnecting`` then ``resumed``), and messages typed meanwhile wait in its outbox,
kept in the state directory, so they are sent even after a restart.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import urwid
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.client import (
    ChatSession,
    RegisterError,
    ServerError,
    ServerKeyChanged,
    SessionClosed,
    SigninError,
    UnknownUser,
    UntrustedServer,
    connect,
    encode_text,
    open_session,
)
from chatproto.terminal.cli import (
    EXIT_AUTH,
    EXIT_IDENTITY,
    EXIT_OK,
    Settings,
    load_device_id,
)
from chatproto.terminal.commandline import complete, parse_command
from chatproto.terminal.commands import HANDLERS, OFFLINE_COMMANDS
from chatproto.terminal.feature_commands import SECRET_COMMANDS
from chatproto.terminal.local_state import LocalStore
from chatproto.terminal.model import ChatModel, Conversation
from chatproto.terminal.presentation import format_size, save_image
from chatproto.terminal.screens import (
    LoginForm,
    key_changed_text,
    message_view,
    trust_question,
)
from chatproto.terminal.session_link import SessionLink
from chatproto.terminal.view import MainView, StatusInfo
from chatproto.terminal.widgets import PALETTE, KeyView
from chatproto.wire import messages as m

__all__ = ["TerminalClient"]

_log = Logger()

#: Seconds between typing notifications while typing, and of silence before "stopped".
TYPING_REFRESH = 3.0
TYPING_PAUSE = 4.0
#: Seconds the status line shows ``resumed`` after a reconnection before ``connected``.
RESUMED_SHOWN = 3.0


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
        self.store = LocalStore(settings.state_dir, settings.host)
        self.model = ChatModel()
        self.client: ChatSession | None = None
        self.generation = 0
        self.conn_state = "offline"
        self.quitting = False
        self.exit_code = EXIT_OK
        self.lag_ms: int | None = None
        #: Who waits for the answer to the trust question shown (every connection attempt
        #: that asked, and a registration to retry if its connection closed meanwhile).
        self.trust_waiters: list[Deferred[bool]] = []
        self.fatal = False
        self._typing_sent_at = 0.0
        self._typing_target: str | int | None = None
        self._typing_stop: Any = None
        self._redraw_call: Any = None
        self._resumed_call: Any = None
        self._ticks = 0
        self.device_id = load_device_id(settings.state_dir)

        self.main = MainView(self._complete)
        urwid.connect_signal(self.main.input, "submit", self._submitted)
        urwid.connect_signal(self.main.input, "postchange", self._input_changed)
        self.login = LoginForm(settings.server, settings.name or self.store.last_name(),
                               self._login_submit)
        self.root = KeyView(self.login.view, self._global_key)
        self.loop = urwid.MainLoop(
            self.root, PALETTE, screen=screen, handle_mouse=False,
            event_loop=urwid.TwistedEventLoop(reactor=reactor, manage_reactor=True),
            unhandled_input=lambda key: None)
        self.ticker = LoopingCall(self._tick)
        self.view = "login"

    # --- screens -----------------------------------------------------------------------------

    def _show(self, view: str, widget: urwid.Widget) -> None:
        self.view = view
        self.root.set(widget)
        self.redraw()

    def show_login(self, message: str | tuple[str, str] = "") -> None:
        """The sign-in / register form."""
        self.login.say(message)
        self._show("login", self.login.view)

    def _global_key(self, key: str) -> bool:
        if key == "ctrl q":
            if self.view == "main":
                self.quit()
            else:
                self.stop(self.exit_code)
            return True
        if self.view == "trust":
            if key in ("y", "Y", "n", "N") and self.trust_waiters:
                waiters, self.trust_waiters = self.trust_waiters, []
                for waiter in waiters:  # a yes pins the key, even if the connection closed
                    waiter.callback(key in ("y", "Y"))
            return True
        if self.view == "fatal":
            if key in ("q", "Q", "enter", "esc"):
                self.stop(self.exit_code)
            return True
        if self.view == "login":
            if key == "ctrl r":
                self.login.try_submit(True)
                return True
            if key == "tab":
                self.login.toggle_field()
                return True
            return False
        return self.view == "main" and self._main_key(key)

    def _main_key(self, key: str) -> bool:
        if key.startswith("meta ") and key[5:].isdigit():
            self.switch((int(key[5:]) or 10) - 1)
        elif key == "ctrl n":
            self.switch((self.model.active + 1) % len(self.model.windows))
        elif key == "ctrl p":
            self.switch((self.model.active - 1) % len(self.model.windows))
        elif key in ("page up", "page down"):
            if not self.main.scroll(-10 if key == "page up" else 10):
                self.load_history(self.model.current)
            self.redraw()
        elif key == "ctrl l":
            self.loop.screen.clear()
        else:
            return False
        return True

    # --- trust on first use ------------------------------------------------------------------

    def ask_trust(self, host: str, fingerprint: str) -> Deferred[bool]:
        """The first-contact prompt: show the fingerprint, wait for y or n. The server may
        close the connection while the user compares the fingerprint (its handshake timeout);
        the answer still counts (a yes pins the key) and the attempt is made again."""
        answer: Deferred[bool] = Deferred()
        self.trust_waiters.append(answer)
        self._show("trust", message_view(trust_question(host, fingerprint,
                                                        self.settings.known_servers.path)))
        return answer

    async def _answered_late(self) -> bool | None:
        """If the trust question is still shown (its connection closed before the answer),
        wait for the answer: True if the user trusted the server (None: no question)."""
        if self.view != "trust" or not self.trust_waiters:
            return None
        late: Deferred[bool] = Deferred()
        self.trust_waiters.append(late)
        return await late

    def show_fatal(self, text: list[Any], code: int) -> None:
        """A failure the user can only acknowledge (Enter or q quits)."""
        self.fatal = True
        self.exit_code = code
        self._show("fatal", message_view(text + ["\n\nPress q to quit."]))

    def _trust_failure(self, error: BaseException) -> bool:
        if isinstance(error, ServerKeyChanged):
            pins = self.settings.known_servers.path
            self.show_fatal(key_changed_text(error, pins), EXIT_IDENTITY)
            return True
        if isinstance(error, UntrustedServer):
            self.show_fatal([f"You did not trust {error.host} ({error.fingerprint}); not "
                             "connecting."], EXIT_IDENTITY)
            return True
        return False

    # --- connecting and signing in -----------------------------------------------------------

    def start(self) -> None:
        """Show the sign-in form."""
        self.ticker.start(1.0, now=False)
        self.show_login(f"Sign in to {self.settings.server}, or register a new account.")

    def _login_submit(self, name: str, password: str, register: bool) -> None:
        if self.client is not None and self.client.state not in ("offline", "idle"):
            return  # an attempt is running
        self.login.say(f"Connecting to {self.settings.server}…")
        ensureDeferred(self._login(name, password, register))

    async def _register(self, name: str, password: str) -> bool:
        """Create the account on a connection of its own (clear errors: name taken, ...)."""
        try:
            client = await connect(self.reactor, self.settings.server,
                                   trust=self.settings.trust(self.ask_trust),
                                   device_id=self.device_id)
        except Exception as e:
            trusted = await self._answered_late()
            if trusted:
                return await self._register(name, password)
            if trusted is False:
                self.show_fatal([f"You did not trust {self.settings.host}; not connecting."],
                                EXIT_IDENTITY)
            elif not self._trust_failure(e):
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
        self.main.reset()
        session = open_session(
            self.reactor, self.settings.servers, name, password,
            trust=self.settings.trust(self.ask_trust), device_id=self.device_id,
            state_path=self.store.path("session", name, "json"),
            outbox_path=self.store.path("outbox", name, "sqlite"),
            listener=SessionLink(self, self.generation))
        self.client = session
        self.store.restore_windows(self.model)
        try:
            await session.wait_connected()
        except Exception as e:
            await session.close()
            if self._trust_failure(e):
                return
            if isinstance(e, SigninError):
                self.exit_code = EXIT_AUTH
                self.login.clear_password()
                self.show_login(("error", f"Sign-in refused: {e.reason} ({e.code})"))
            else:
                self.show_login(("error", f"Failed: {e}"))
            return
        self.exit_code = EXIT_OK
        self.settings.name = name
        self.store.remember_name(name)
        self.login.clear_password()
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
        self._show("main", self.main.widget)
        await self._refresh_contacts()

    async def _refresh_contacts(self) -> None:
        """Groups (with their members) and presence, after each (re)connection."""
        client = self.client
        if client is None:
            return
        try:
            groups = await self.timed(client.list_groups())
            for info in groups:
                self.model.set_group_title(info.group_id, info.title)
                self.model.left_groups.discard(info.group_id)
                self.model.group(info.group_id)
                self.load_members(info.group_id)
            for entry in await client.presence():
                self.model.set_presence(entry.name, entry.online, entry.last_seen_ms)
            self.model.blocked = set(await client.block_list())
        except Exception as e:
            self.model.notice(f"could not load the conversations: {e}", level="error")
        self.save_windows()
        current = self.model.current
        if not current.is_status and not current.history_loaded:
            self.load_history(current)
        self._mark_read(current)
        self.redraw()

    def load_members(self, group_id: int) -> None:
        """Ask for a group's members (shown in its window's topic)."""
        if not self.signed_in():
            return
        assert self.client is not None

        def listed(members: tuple[m.MemberInfo, ...]) -> None:
            if group_id not in self.model.left_groups:
                self.model.group_members[group_id] = [x.name for x in members]
                for x in members:
                    self.model.set_presence(x.name, x.online, x.last_seen_ms)
            self.redraw()

        self.client.group_members(group_id).addCallbacks(listed, lambda _: None)

    def on_state(self, state: str) -> None:
        """The session's state: connecting, connected, reconnecting, resumed, offline."""
        self.conn_state = state
        if self._resumed_call is not None and self._resumed_call.active():
            self._resumed_call.cancel()
        self._resumed_call = None
        if state in ("reconnecting", "offline"):
            self.lag_ms = None  # a lag measured across the outage would mean nothing
        if self.view == "login" and state == "reconnecting":
            self.login.say(("error", f"Cannot reach {self.settings.server}; retrying… "
                                     "(Ctrl-Q quits)"))
        if self.view == "main":
            if state == "resumed":
                self.model.notice("reconnected; session resumed")
                self._resumed_call = self.reactor.callLater(RESUMED_SHOWN, self._settled)
                ensureDeferred(self._refresh_contacts())
            elif state == "offline" and not self.quitting and self.client is not None:
                failure = self.client.failure
                error = failure.value if failure is not None else None
                if failure is not None and not (error and self._trust_failure(error)):
                    self.model.notice(f"offline: {failure.getErrorMessage()}; /quit to exit",
                                      level="error")
        self.redraw()

    def _settled(self) -> None:
        """A while after a reconnection the status line says ``connected`` again."""
        self._resumed_call = None
        if self.conn_state == "resumed":
            self.conn_state = "connected"
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

    def timed(self, d: Deferred[Any]) -> Deferred[Any]:
        """``d``, measuring the lag of the request (only one made while signed in)."""
        start = self.reactor.seconds()
        client = self.client
        connections = client.connections if client is not None else -1

        async def wait() -> Any:
            result = await d
            if client is not None and client.connections == connections and self.signed_in():
                self.lag_ms = int((self.reactor.seconds() - start) * 1000)
            return result

        return ensureDeferred(wait())

    # --- windows -----------------------------------------------------------------------------

    def save_windows(self) -> None:
        """Save the window list and marks in the state directory."""
        if self.model.me:
            self.store.save_windows(self.model)

    def switch(self, index: int) -> None:
        """Show window ``index`` (0-based)."""
        if self.model.switch(index):
            self.main.follow = True
            self._stop_typing()
            conv = self.model.current
            if not conv.is_status and not conv.history_loaded:
                self.load_history(conv)
            self._mark_read(conv)
            self.redraw()

    def close_window(self, conv: Conversation) -> None:
        """Close ``conv`` (the focus stays where it was, or goes to the window before)."""
        self.model.close(conv)
        self.save_windows()
        self.switch(self.model.active)

    def load_history(self, conv: Conversation) -> None:
        """Load the previous page of a window's history."""
        if conv.is_status or not self.signed_in():
            return
        if conv.history_loaded and not conv.has_more:
            self.model.notice("no older messages", conv)
            self.redraw()
            return
        assert self.client is not None
        d = self.client.history(conv.target, before_seq=conv.oldest_seq or 0, limit=50)

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
        own_copy = deliver.sender == self.model.me and known is not None and any(
            line.client_msg_id == deliver.client_msg_id for line in known.lines)
        if image is not None and not own_copy:
            try:
                path = str(save_image(self.settings.downloads, deliver, image))
            except OSError as e:
                self.model.notice(f"cannot save an image from {deliver.sender}: {e}",
                                  level="error")
        line = self.model.add_deliver(deliver, path)
        if known is None and line is not None:
            self.save_windows()
            self.refresh_presence()
            if deliver.group_id:
                self.load_members(deliver.group_id)
        elif known is not None and known.key not in self.model.by_key:
            self.save_windows()  # we left the group (perhaps on another device)
            self.switch(self.model.active)
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

        self.timed(self.client.presence()).addCallbacks(learned, lambda _: None)

    # --- the command line --------------------------------------------------------------------

    def _complete(self, text: str, pos: int) -> list[tuple[str, int]]:
        return complete(text, pos, self.model.known_names())

    def _input_changed(self, _edit: urwid.Edit, _old: str) -> None:
        text = self.main.input.edit_text
        conv = self.model.current
        if self.main.input.recalling:
            return  # a recalled line is not typing
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
        self.main.input.replace_text("")
        if not text.startswith(SECRET_COMMANDS):  # no passwords in the recall history
            self.main.input.remember(text)
        if not text.strip():
            return
        try:
            self.execute(text)
        except Exception as e:  # a bug must not take the terminal down
            _log.failure("command {text!r} failed", text=text)
            self.model.notice(f"error: {e}", self.model.current, level="error")
        self.main.follow = True
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
        handler = HANDLERS.get(cmd.name)
        if handler is None:
            self.model.notice(f"unknown command /{cmd.name}; /help lists them", conv,
                              level="error")
            return
        if cmd.name not in OFFLINE_COMMANDS and not self.signed_in():
            self.model.notice(f"not connected ({self.conn_state}); try again when connected",
                              conv, level="error")
            return
        handler(self, conv, cmd)

    def report(self, conv: Conversation, what: str) -> Callable[[Failure], None]:
        """An errback showing a failed request in ``conv``."""
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

    def send_text(self, conv: Conversation, text: str) -> None:
        """Send a text to a window (queued while reconnecting)."""
        try:
            encode_text(text)
        except ValueError as e:
            self.model.notice(f"not sent: {e}", conv, level="error")
            return
        msg_id = os.urandom(16)
        self.model.add_outgoing(conv, "text", text, msg_id)
        self.send(conv, "text", msg_id, text)

    def send(self, conv: Conversation, kind: str, msg_id: bytes, payload: bytes | str) -> None:
        """Through the session's outbox: sent now, or after the reconnection."""
        assert self.client is not None
        if kind == "text":
            assert isinstance(payload, str)
            d = self.client.send_text(conv.target, payload, client_msg_id=msg_id)
        else:
            assert isinstance(payload, bytes)
            d = self.client.send_image(conv.target, payload, client_msg_id=msg_id)

        def stored(ack: m.SendAck) -> None:
            self.model.acked(ack)
            self.redraw()

        def failed(f: Failure) -> None:
            if not f.check(SessionClosed) and not self.quitting:
                self.model.failed(msg_id, f.getErrorMessage())
            self.redraw()

        self.timed(d).addCallbacks(stored, failed)

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
        self._ticks += 1
        if self._ticks % 60 == 0:
            self.refresh_presence()  # also measures the lag
        self.model.flush_presence()
        self._redraw_now()

    def refresh(self) -> None:
        """Update every widget of the main screen from the model."""
        if self.view != "main":
            return
        queued = len(self.client.pending()) if self.client is not None else 0
        status = StatusInfo(self.settings.server, self.conn_state, self.lag_ms, queued)
        self.main.refresh(self.model, status, self.reactor.seconds())

    # --- leaving -----------------------------------------------------------------------------

    def quit(self) -> None:
        """/quit and Ctrl-Q: sign out properly, then stop."""
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
