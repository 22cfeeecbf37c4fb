"""The ``/commands`` of the terminal client, as a table: name → handler. Their usage and help
text is :data:`chatproto.terminal.commandline.COMMANDS`; a handler gets the client, the window
the command was typed in and the parsed line."""

from __future__ import annotations

import os
from pathlib import Path

from chatproto.terminal.cli import NAME_RULE
from chatproto.terminal.command_context import Handler, TerminalClient
from chatproto.terminal.commandline import COMMANDS, Command
from chatproto.terminal.feature_commands import FEATURE_COMMANDS, FEATURE_HANDLERS
from chatproto.terminal.model import Conversation
from chatproto.terminal.presentation import format_size, last_seen_text, read_image_file
from chatproto.wire import messages as m

__all__ = ["HANDLERS", "OFFLINE_COMMANDS", "TerminalClient"]



#: Commands that work without a live connection.
OFFLINE_COMMANDS = frozenset({"help", "win", "close", "quit", "image"})


def cmd_help(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/help"""
    app.model.notice("commands (Tab completes, Up/Down recall, PgUp/PgDn scroll, "
                     "Alt+N / Ctrl-N / Ctrl-P switch windows, Ctrl-Q quits; line editing: "
                     "Ctrl-A/E start/end, Ctrl-U/K delete to start/end, Ctrl-W delete a word, "
                     "Alt-B/F word back/forward, Esc clear):", conv)
    for name, (usage, text) in COMMANDS.items():
        app.model.notice(f"  /{name} {usage}".rstrip() + f" — {text}", conv)


def cmd_quit(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/quit: sign out and exit."""
    app.quit()


def cmd_win(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/win N|NAME"""
    target = app.model.find(cmd.rest) if cmd.rest else None
    if target is None:
        app.model.notice(f"no window {cmd.rest!r}", conv, level="error")
        return
    app.switch(app.model.windows.index(target))


def cmd_close(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/close: the window it was typed in."""
    app.close_window(conv)


def cmd_msg(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/msg NAME [TEXT]"""
    if not cmd.args or m.NAME_PATTERN.fullmatch(cmd.args[0]) is None:
        app.model.notice("usage: /msg NAME [TEXT]", conv, level="error")
        return
    peer = cmd.args[0]
    text = cmd.rest[len(peer):].strip()
    if peer == app.model.me:
        app.model.notice("that is you", conv, level="error")
        return
    assert app.client is not None

    def opened(ack: m.AckCreate) -> None:
        app.model.set_presence(ack.peer, ack.online, ack.last_seen_ms)
        window = app.model.dm(ack.peer)
        app.save_windows()
        app.switch(app.model.windows.index(window))
        if text:
            app.send_text(window, text)
        app.redraw()

    app.timed(app.client.create_chat(peer)).addCallbacks(opened, app.report(conv, f"/msg {peer}"))


def _group_create(app: TerminalClient, conv: Conversation, names: list[str]) -> None:
    assert app.client is not None
    bad = [n for n in names if m.NAME_PATTERN.fullmatch(n) is None]
    if not names or bad:
        app.model.notice(f"usage: /group create NAME... ({NAME_RULE})", conv, level="error")
        return
    title = ", ".join(sorted({app.model.me, *names}))[:200]

    def created(ack: m.AckCreateGroup) -> None:
        app.model.set_group_title(ack.group_id, title)
        app.model.left_groups.discard(ack.group_id)
        window = app.model.group(ack.group_id)
        app.model.group_members[ack.group_id] = [app.model.me, *names]
        if ack.offline:
            app.model.notice(f"offline now: {', '.join(ack.offline)}", window)
        app.refresh_presence()
        app.save_windows()
        app.switch(app.model.windows.index(window))

    app.client.create_group(names, title).addCallbacks(created,
                                                       app.report(conv, "/group create"))


def cmd_group(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/group create|add|remove|leave|members|rename"""
    assert app.client is not None
    sub = cmd.args[0] if cmd.args else ""
    names = cmd.args[1:]
    if sub == "create":
        _group_create(app, conv, names)
        return
    if not conv.is_group:
        app.model.notice("/group add, remove, leave, members and rename work in a group "
                         "window (or use /group create NAME...)", conv, level="error")
        return
    group_id = int(conv.target)
    if sub in ("add", "remove"):
        bad = [n for n in names if m.NAME_PATTERN.fullmatch(n) is None]
        if not names or bad:
            app.model.notice(f"usage: /group {sub} NAME... ({NAME_RULE})", conv, level="error")
            return
        call = app.client.group_add if sub == "add" else app.client.group_remove
        call(group_id, names).addErrback(app.report(conv, f"/group {sub}"))
    elif sub == "leave":
        def left(_: object) -> None:
            app.model.leave_group(group_id)
            app.save_windows()
            app.switch(app.model.active)

        app.client.group_leave(group_id).addCallbacks(left, app.report(conv, "/group leave"))
    elif sub == "members":
        def listed(members: tuple[m.MemberInfo, ...]) -> None:
            app.model.group_members[group_id] = [x.name for x in members]
            app.model.notice(f"{len(members)} members:", conv)
            now = app.model.now_ms()
            for x in members:
                state = "● online" if x.online else f"○ {last_seen_text(x.last_seen_ms, now)}"
                app.model.notice(f"  {x.name} ({x.role}) {state}", conv)
            app.redraw()

        app.client.group_members(group_id).addCallbacks(listed,
                                                        app.report(conv, "/group members"))
    elif sub == "rename":
        title = cmd.rest.partition(" ")[2].strip()
        app.client.group_rename(group_id, title).addErrback(app.report(conv, "/group rename"))
    else:
        app.model.notice("usage: /group create NAME... | add NAME... | remove NAME... | "
                         "leave | members | rename TITLE", conv, level="error")


def cmd_who(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/who"""
    assert app.client is not None

    def shown(entries: tuple[m.PresenceInfo, ...]) -> None:
        now = app.model.now_ms()
        for e in entries:
            app.model.set_presence(e.name, e.online, e.last_seen_ms)
        if not entries:
            app.model.notice("no contacts yet", conv)
        for e in sorted(entries, key=lambda e: (not e.online, e.name)):
            state = "● online" if e.online else f"○ {last_seen_text(e.last_seen_ms, now)}"
            app.model.notice(f"  {e.name} {state}", conv, level="presence")
        app.redraw()

    app.timed(app.client.presence()).addCallbacks(shown, app.report(conv, "/who"))


def cmd_history(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/history"""
    if conv.is_status:
        app.model.notice("the status window has no history", conv)
        return
    app.load_history(conv)


def cmd_image(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/image PATH: checked here (size, type) before anything is uploaded."""
    if conv.is_status:
        app.model.notice("open a chat first (/msg NAME)", conv, level="error")
        return
    path = Path(os.path.expanduser(cmd.rest.strip().strip("'\"")))
    try:
        data = read_image_file(path)
    except ValueError as e:
        app.model.notice(f"/image: {e}", conv, level="error")
        return
    msg_id = os.urandom(16)
    app.model.add_outgoing(conv, "image", f"sent an image: {path.name} ({format_size(len(data))})",
                           msg_id, str(path))
    app.send(conv, "image", msg_id, data)


#: Command name → handler (the names of :data:`~chatproto.terminal.commandline.COMMANDS`).
HANDLERS: dict[str, Handler] = {
    "msg": cmd_msg,
    "group": cmd_group,
    "image": cmd_image,
    "history": cmd_history,
    "who": cmd_who,
    "win": cmd_win,
    "close": cmd_close,
    "help": cmd_help,
    "quit": cmd_quit,
    **FEATURE_HANDLERS,
}
COMMANDS.update(FEATURE_COMMANDS)
