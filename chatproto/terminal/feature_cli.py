"""The scripting commands of the everyday features (``chatproto-client COMMAND``): each signs
in, makes one request, prints JSON on stdout and exits (see :mod:`chatproto.terminal.cli`).

``conversations``, ``search``, ``edit``, ``delete``, ``block``, ``unblock``, ``blocked``,
``devices``, ``sign-out-device``, ``change-password``, ``delete-account``, ``send-file`` and
``fetch-file``; and how ``tail`` prints edits, retractions and files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatproto.client.api import ChatClient
from chatproto.terminal.presentation import time_iso
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m

#: The new password of ``change-password``, if no file is given.
NEW_PASSWORD_ENV = "CHATPROTO_NEW_PASSWORD"  # noqa: S105 (the name of a variable)

FEATURE_COMMAND_NAMES = frozenset({
    "conversations", "search", "edit", "delete", "block", "unblock", "blocked", "devices",
    "sign-out-device", "change-password", "delete-account", "send-file", "fetch-file"})


class FeatureUsageError(Exception):
    """A command line the command cannot run (exit status 2)."""


def change_json(content_type: int, body: bytes) -> dict[str, Any]:
    """The fields ``tail`` prints for an edit, a retraction or a file message."""
    try:
        if content_type == f.EDIT:
            edit = m.decode_record(f.EditBody, body)
            return {"type": "edit", "target_seq": edit.target_seq,
                    "text": edit.text.decode("utf-8", "replace")}
        if content_type == f.RETRACT:
            return {"type": "delete",
                    "target_seq": m.decode_record(f.RetractBody, body).target_seq}
        if content_type == f.FILE:
            info = m.decode_record(f.FileInfo, body)
            return {"type": "file", "name": info.name, "mime": info.mime, "size": info.size,
                    "sha256": info.sha256.hex()}
    except m.RemoteProtocolError:
        pass
    return {"type": str(content_type)}


def add_feature_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """Add the commands through ``command(name, help)`` (which adds the common options)."""
    command("conversations", "list your conversations (JSON lines, the most recent first)")
    p = command("search", "search your conversations (JSON lines, newest first)")
    p.add_argument("words", nargs="+", help="every word must occur")
    p.add_argument("--limit", type=int, default=20, help="at most this many hits (1..100)")
    p.add_argument("--before", type=int, default=0, metavar="HIT_ID",
                   help="the next page: the hit_id of the last hit printed")
    for name, what in (("edit", "replace the text of your message SEQ"),
                       ("delete", "delete message SEQ (yours, or any in a group you run)")):
        p = command(name, what)
        target = p.add_mutually_exclusive_group(required=True)
        target.add_argument("--to", metavar="NAME", help="the direct conversation's peer")
        target.add_argument("--group", metavar="ID", type=int, help="the group id")
        p.add_argument("seq", type=int, help="the message's conv_seq")
        if name == "edit":
            p.add_argument("text", nargs="+", help="the new text")
    p = command("send-file", "send any file (prints the SendAck as JSON)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="NAME", help="the recipient")
    target.add_argument("--group", metavar="ID", type=int, help="the group id")
    p.add_argument("path", type=Path, help="the file")
    p.add_argument("--mime", help="its media type (default: guessed from the name)")
    p = command("fetch-file", "fetch the file of a file message (from tail or history)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="NAME", help="the direct conversation's peer")
    target.add_argument("--group", metavar="ID", type=int, help="the group id")
    p.add_argument("seq", type=int, help="the message's conv_seq")
    p.add_argument("--output", type=Path, required=True, metavar="PATH",
                   help="where to write it (an existing file is not overwritten)")
    for name, what in (("block", "block a user"), ("unblock", "unblock a user")):
        command(name, what).add_argument("user", help="the user's name")
    command("blocked", "list the users you block (JSON)")
    command("devices", "list the devices of your account (JSON lines)")
    command("sign-out-device", "sign out another device of your account").add_argument(
        "device", help="its device id (hex, from 'devices')")
    command("change-password", "change your password; your other devices are signed out "
            f"(the new one: the first line of --new-password-file, or ${NEW_PASSWORD_ENV})"
            ).add_argument("--new-password-file", type=Path, metavar="PATH")
    command("delete-account", "delete your account for good (needs --yes)").add_argument(
        "--yes", action="store_true", help="yes, delete it")


def _new_password(args: argparse.Namespace) -> str:
    path: Path | None = args.new_password_file
    if path is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        if lines and lines[0]:
            return lines[0]
        raise FeatureUsageError(f"the new password file {path} is empty")
    value = os.environ.get(NEW_PASSWORD_ENV)
    if not value:
        raise FeatureUsageError(f"no new password: use --new-password-file or ${NEW_PASSWORD_ENV}")
    return value


def check_feature_args(args: argparse.Namespace) -> None:
    """Refuse a bad command line before connecting (FeatureUsageError)."""
    if args.command == "search" and not 1 <= args.limit <= 100:
        raise FeatureUsageError("--limit is 1 to 100")
    if args.command == "delete-account" and not args.yes:
        raise FeatureUsageError("delete-account deletes your account for good: add --yes")
    if args.command == "sign-out-device":
        try:
            if len(bytes.fromhex(args.device)) != 16:
                raise ValueError
        except ValueError:
            raise FeatureUsageError("a device id is 32 hex digits") from None
    if args.command == "change-password":
        _new_password(args)
    if args.command == "send-file" and not args.path.is_file():
        raise FeatureUsageError(f"no file {args.path}")
    if args.command == "fetch-file" and args.output.exists():
        raise FeatureUsageError(f"{args.output} exists")


def _print(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False))


async def run_feature_command(client: ChatClient, args: argparse.Namespace,
                              password: str) -> None:
    """Run one command on a signed-in client, printing its result."""
    command = args.command
    if command == "conversations":
        for c in await client.conversations():
            _print({"group_id": c.group_id, "peer": c.peer, "title": c.title,
                    "last_seq": c.last_seq, "last_sender": c.last_sender,
                    "last_time": time_iso(c.last_time_ms) if c.last_seq else None,
                    "last_content_type": c.last_content_type, "last_text": c.last_preview,
                    "unread": c.unread})
    elif command == "search":
        page = await client.search(" ".join(args.words), args.before, args.limit)
        for hit in page.hits:
            _print({"hit_id": hit.hit_id, "group_id": hit.group_id, "peer": hit.peer,
                    "conv_seq": hit.conv_seq, "sender": hit.sender,
                    "time": time_iso(hit.server_time_ms),
                    "text": hit.text.decode("utf-8", "replace")})
    elif command in ("edit", "delete"):
        to: str | int = args.to if args.to is not None else args.group
        ack = await (client.edit(to, args.seq, " ".join(args.text)) if command == "edit"
                     else client.retract(to, args.seq))
        _print({"group_id": ack.group_id, "conv_seq": ack.conv_seq,
                "time": time_iso(ack.server_time_ms)})
    elif command == "send-file":
        to_file: str | int = args.to if args.to is not None else args.group
        ack = await client.send_file(to_file, args.path, mime=args.mime)
        _print({"group_id": ack.group_id, "conv_seq": ack.conv_seq,
                "time": time_iso(ack.server_time_ms)})
    elif command == "fetch-file":
        source: str | int = args.to if args.to is not None else args.group
        data = await client.fetch_file(source, args.seq)
        with open(args.output, "xb") as out:
            out.write(data)
        _print({"path": str(args.output), "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest()})
    elif command == "block":
        await client.block(args.user)
    elif command == "unblock":
        await client.unblock(args.user)
    elif command == "blocked":
        _print(list(await client.block_list()))
    elif command == "devices":
        for d in await client.devices():
            _print({"device_id": d.device_id.hex(), "online": d.online, "current": d.current,
                    "acked_seq": d.acked_seq})
    elif command == "sign-out-device":
        await client.sign_out_device(bytes.fromhex(args.device))
    elif command == "change-password":
        await client.change_password(password, _new_password(args))
    elif command == "delete-account":
        await client.delete_account(password)
        return  # the server closes the connection
    await client.quit()
