"""The terminal client's commands for the everyday features: /edit, /delete, /file, /fetch,
/chats,
/search, /block, /unblock, /blocked, /devices, /signout, /password and /deleteaccount.
Merged into :data:`chatproto.terminal.commands.HANDLERS` and
:data:`chatproto.terminal.commandline.COMMANDS`."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from chatproto.terminal.command_context import Handler, TerminalClient
from chatproto.terminal.commandline import Command
from chatproto.terminal.message_changes import DELETED_TEXT, EDITED_MARK, save_file
from chatproto.terminal.model import Conversation
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m

__all__ = ["FEATURE_COMMANDS", "FEATURE_HANDLERS", "SECRET_COMMANDS"]


#: Command → (arguments, help), as in COMMANDS.
FEATURE_COMMANDS: dict[str, tuple[str, str]] = {
    "edit": ("TEXT", "replace the text of your last message in this window"),
    "file": ("PATH", "send any file (up to the server's limit, 100 MiB by default)"),
    "fetch": ("", "save the latest file of this window to the downloads folder"),
    "delete": ("", "delete your last message in this window"),
    "chats": ("", "list your conversations with their last message and unread count"),
    "search": ("WORDS", "search your conversations, newest first"),
    "block": ("NAME", "block NAME (no direct messages or presence; group messages hidden)"),
    "unblock": ("NAME", "unblock NAME"),
    "blocked": ("", "list the users you block"),
    "devices": ("", "list the devices of your account"),
    "signout": ("DEVICE", "sign out another device (the start of its id from /devices)"),
    "password": ("CURRENT NEW", "change your password (signs out your other devices)"),
    "deleteaccount": ("PASSWORD", "delete your account for good"),
}
#: Commands whose line holds a password: never kept in the input history.
SECRET_COMMANDS = ("/password", "/deleteaccount")
#: Search hits shown per /search.
SEARCH_PAGE = 20


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _time(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


def _change(app: TerminalClient, conv: Conversation, cmd: Command, edit: bool) -> None:
    what = "/edit" if edit else "/delete"
    if conv.is_status:
        app.model.notice(f"{what} works in a chat window", conv, level="error")
        return
    line = app.model.last_own_message(conv, ("text",) if edit else ("text", "image", "file"))
    text = cmd.rest.strip()
    if line is None or line.conv_seq is None:
        app.model.notice(f"{what}: you have no message here to change", conv, level="error")
        return
    if edit and not text:
        app.model.notice("usage: /edit TEXT", conv, level="error")
        return
    assert app.client is not None
    seq = line.conv_seq
    d = (app.client.edit(conv.target, seq, text) if edit
         else app.client.retract(conv.target, seq))

    def done(_: object) -> None:  # the entry itself arrives in the log and changes the line
        app.redraw()

    d.addCallbacks(done, app.report(conv, what))


def cmd_edit(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/edit TEXT"""
    _change(app, conv, cmd, edit=True)


def cmd_delete(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/delete"""
    _change(app, conv, cmd, edit=False)


def cmd_file(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/file PATH"""
    if conv.is_status:
        app.model.notice("open a chat first (/msg NAME)", conv, level="error")
        return
    path = Path(os.path.expanduser(cmd.rest.strip().strip("'\"")))
    if not path.is_file():
        app.model.notice(f"/file: no file {str(path)!r}", conv, level="error")
        return
    assert app.client is not None
    app.model.notice(f"sending {path.name}…", conv)

    def sent(_: object) -> None:  # the message itself arrives through the log
        app.redraw()

    app.client.send_file(conv.target, path).addCallbacks(sent, app.report(conv, "/file"))


def cmd_fetch(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/fetch"""
    found = app.model.last_file(conv)
    if found is None:
        app.model.notice("/fetch: no file in this window", conv, level="error")
        return
    assert app.client is not None
    seq, info = found
    downloads = app.settings.downloads

    def fetched(data: bytes) -> None:
        try:
            path = save_file(downloads, info.name, data)
        except OSError as e:
            app.model.notice(f"/fetch: cannot save {info.name}: {e}", conv, level="error")
        else:
            app.model.notice(f"saved {info.name} to {path}", conv)
        app.redraw()

    app.client.fetch_file(conv.target, seq, info).addCallbacks(fetched,
                                                               app.report(conv, "/fetch"))


def conversation_line(info: f.ConversationInfo, titles: dict[int, str]) -> str:
    """One entry of /chats."""
    name = info.peer if info.peer else (info.title or titles.get(info.group_id)
                                        or f"group {info.group_id}")
    unread = f" [{info.unread} unread]" if info.unread else ""
    if info.last_seq == 0:
        last = "no messages yet"
    elif info.last_content_type == m.ContentType.IMAGE:
        last = f"{info.last_sender}: (an image)"
    elif info.last_content_type == f.FILE:
        last = f"{info.last_sender}: (a file)"
    elif info.last_content_type == f.RETRACT:
        last = f"{info.last_sender}: {DELETED_TEXT}"
    elif info.last_content_type == m.ContentType.EVENT:
        last = "(a group change)"
    else:
        mark = EDITED_MARK if info.last_content_type == f.EDIT else ""
        last = f"{info.last_sender}: {_short(info.last_preview)}{mark}"
    return f"  {name}{unread} — {last}"


def cmd_chats(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/chats"""
    assert app.client is not None

    def listed(infos: tuple[f.ConversationInfo, ...]) -> None:
        if not infos:
            app.model.notice("no conversations yet; /msg NAME starts one", conv)
        else:
            app.model.notice(f"{len(infos)} conversations:", conv)
        for info in infos:
            app.model.notice(conversation_line(info, app.model.group_titles), conv)
        app.redraw()

    app.timed(app.client.conversations()).addCallbacks(listed, app.report(conv, "/chats"))


def cmd_search(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/search WORDS"""
    query = cmd.rest.strip()
    if not query:
        app.model.notice("usage: /search WORDS", conv, level="error")
        return
    assert app.client is not None

    def found(page: f.SearchResults) -> None:
        app.model.notice(f"{len(page.hits)} messages with {query!r}"
                         + (" (the newest shown)" if page.has_more else "") + ":", conv)
        for hit in page.hits:
            where = hit.peer or app.model.group_titles.get(hit.group_id) or f"group {hit.group_id}"
            text = _short(hit.text.decode("utf-8", "replace"))
            app.model.notice(f"  [{where}] {_time(hit.server_time_ms)} {hit.sender}: {text}",
                             conv)
        app.redraw()

    app.timed(app.client.search(query, 0, SEARCH_PAGE)).addCallbacks(
        found, app.report(conv, "/search"))


def _name_command(app: TerminalClient, conv: Conversation, cmd: Command, block: bool) -> None:
    what = "/block" if block else "/unblock"
    if len(cmd.args) != 1 or m.NAME_PATTERN.fullmatch(cmd.args[0]) is None:
        app.model.notice(f"usage: {what} NAME", conv, level="error")
        return
    assert app.client is not None
    name = cmd.args[0]

    def done(_: object) -> None:
        if block:
            app.model.blocked.add(name)
            app.model.notice(f"you block {name}: no direct messages or presence; their group "
                             "messages are hidden", conv)
        else:
            app.model.blocked.discard(name)
            app.model.notice(f"you no longer block {name}", conv)
        app.redraw()

    d = app.client.block(name) if block else app.client.unblock(name)
    d.addCallbacks(done, app.report(conv, what))


def cmd_block(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/block NAME"""
    _name_command(app, conv, cmd, block=True)


def cmd_unblock(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/unblock NAME"""
    _name_command(app, conv, cmd, block=False)


def cmd_blocked(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/blocked"""
    assert app.client is not None

    def listed(names: tuple[str, ...]) -> None:
        app.model.blocked = set(names)
        app.model.notice("you block: " + (", ".join(names) if names else "nobody"), conv)
        app.redraw()

    app.client.block_list().addCallbacks(listed, app.report(conv, "/blocked"))


def cmd_devices(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/devices"""
    assert app.client is not None

    def listed(devices: tuple[f.DeviceInfo, ...]) -> None:
        app.model.notice(f"{len(devices)} devices:", conv)
        for device in devices:
            state = "this device" if device.current else (
                "● online" if device.online else "○ offline")
            app.model.notice(f"  {device.device_id.hex()} {state}", conv)
        app.redraw()

    app.client.devices().addCallbacks(listed, app.report(conv, "/devices"))


def cmd_signout(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/signout DEVICE: a unique start of the id /devices shows."""
    prefix = cmd.rest.strip().lower()
    if not prefix:
        app.model.notice("usage: /signout DEVICE (see /devices)", conv, level="error")
        return
    assert app.client is not None
    client = app.client

    def listed(devices: tuple[f.DeviceInfo, ...]) -> None:
        matches = [d for d in devices if d.device_id.hex().startswith(prefix) and not d.current]
        if len(matches) != 1:
            app.model.notice(f"/signout: {len(matches)} other devices start with {prefix!r}",
                             conv, level="error")
            app.redraw()
            return
        device = matches[0].device_id

        def done(_: object) -> None:
            app.model.notice(f"signed out {device.hex()}", conv)
            app.redraw()

        client.sign_out_device(device).addCallbacks(done, app.report(conv, "/signout"))

    client.devices().addCallbacks(listed, app.report(conv, "/signout"))


def cmd_password(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/password CURRENT NEW"""
    if len(cmd.args) != 2:
        app.model.notice("usage: /password CURRENT NEW (passwords with spaces in quotes)",
                         conv, level="error")
        return
    assert app.client is not None

    def done(_: object) -> None:
        app.model.notice("password changed; your other devices were signed out", conv)
        app.redraw()

    app.client.change_password(cmd.args[0], cmd.args[1]).addCallbacks(
        done, app.report(conv, "/password"))


def cmd_deleteaccount(app: TerminalClient, conv: Conversation, cmd: Command) -> None:
    """/deleteaccount PASSWORD"""
    if len(cmd.args) != 1:
        app.model.notice("usage: /deleteaccount PASSWORD", conv, level="error")
        return
    assert app.client is not None

    def done(_: object) -> None:
        app.model.notice("your account was deleted; /quit to exit", conv, level="error")
        app.redraw()

    app.client.delete_account(cmd.args[0]).addCallbacks(done,
                                                        app.report(conv, "/deleteaccount"))


FEATURE_HANDLERS: dict[str, Handler] = {
    "edit": cmd_edit,
    "file": cmd_file,
    "fetch": cmd_fetch,
    "delete": cmd_delete,
    "chats": cmd_chats,
    "search": cmd_search,
    "block": cmd_block,
    "unblock": cmd_unblock,
    "blocked": cmd_blocked,
    "devices": cmd_devices,
    "signout": cmd_signout,
    "password": cmd_password,
    "deleteaccount": cmd_deleteaccount,
}
