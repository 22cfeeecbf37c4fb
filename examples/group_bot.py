#!/usr/bin/env python3
"""A bot that answers commands in every group it is a member of.

Usage::

    .venv/bin/python examples/group_bot.py tcp:127.0.0.1:7777 [--name bot] \\
        [--fingerprint SHA256:...]

Add the bot to a group (``/group create bot alice`` or ``/group add bot`` in the terminal
client) and write in the group:

``!ping``     the bot answers ``pong``
``!time``     the server-independent time of the bot, in UTC
``!members``  the members of the group, with their presence
``!help``     the list of commands

The bot greets a group when it is added to it. It runs on a
:class:`~chatproto.client.ChatSession` (``open_session``): it reconnects by itself if the
server restarts, and keeps its position in ``--state`` so it never answers a command twice.
Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from chatproto.client import ChatListener, ChatSession, ServerTrust, open_session
from chatproto.wire.messages import (
    ContentType,
    Deliver,
    GroupAction,
    GroupEvent,
    MemberInfo,
    decode_record,
)

HELP = "I answer !ping, !time, !members and !help"


class Bot(ChatListener):
    """Reacts to group events and commands."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.session: ChatSession | None = None
        self.ready: Deferred[None] = Deferred()

    def connection_state_changed(self, state: str) -> None:
        print(f"bot: {state}", flush=True)
        if state in ("connected", "resumed") and not self.ready.called:
            self.ready.callback(None)

    def message_received(self, deliver: Deliver, image: bytes | None) -> None:
        if not deliver.group_id or deliver.sender == self.name:
            return
        if deliver.content_type == ContentType.EVENT:
            event = decode_record(GroupEvent, deliver.body)
            joined = event.action in (GroupAction.CREATED, GroupAction.ADDED)
            if joined and self.name in event.names:
                print(f"bot: added to group {deliver.group_id} by {event.actor}", flush=True)
                self.say(deliver.group_id, f"hello! {HELP}")
            return
        if deliver.content_type == ContentType.TEXT:
            text = deliver.body.decode("utf-8", "replace").strip()
            if text.startswith("!"):
                print(f"bot: {deliver.sender} in group {deliver.group_id}: {text}", flush=True)
                self.command(deliver.group_id, deliver.sender, text.split()[0].lower())

    def command(self, group_id: int, sender: str, word: str) -> None:
        """Answer one command."""
        if word == "!ping":
            self.say(group_id, "pong")
        elif word == "!time":
            now = datetime.datetime.now(datetime.UTC)
            self.say(group_id, now.strftime("it is %Y-%m-%d %H:%M:%S UTC"))
        elif word == "!members":
            assert self.session is not None
            d = self.session.group_members(group_id)
            d.addCallbacks(lambda members: self.say(group_id, describe(members)),
                           lambda f: self.say(group_id, f"sorry: {f.getErrorMessage()}"))
        elif word == "!help":
            self.say(group_id, HELP)
        else:
            self.say(group_id, f"{sender}: I do not know {word}. {HELP}")

    def say(self, group_id: int, text: str) -> None:
        """Send to a group (through the session's outbox: survives reconnections)."""
        assert self.session is not None

        def failed(f: Failure) -> None:
            print(f"bot: could not answer in group {group_id}: {f.getErrorMessage()}",
                  flush=True)

        self.session.send_text(group_id, text).addErrback(failed)


def describe(members: tuple[MemberInfo, ...]) -> str:
    """``3 members: alice (owner, online), bob (offline), ...``"""
    parts = [f"{x.name} ({x.role}, {'online' if x.online else 'offline'})" for x in members]
    return f"{len(members)} members: " + ", ".join(parts)


async def main(reactor: Any, args: argparse.Namespace) -> None:
    bot = Bot(args.name)
    trust = None

    if args.fingerprint is None:
        def trust(host: str, fingerprint: str) -> bool:
            print(f"bot: trusting {host} with fingerprint {fingerprint}", flush=True)
            return True

    session = open_session(reactor, args.endpoint, args.name, args.password, register=True,
                           trust=ServerTrust(server_fingerprint=args.fingerprint,
                                             trust_on_first_use=trust),
                           state_path=args.state or f"{args.name}.state.json", listener=bot)
    bot.session = session
    await session.wait_connected()
    print(f"bot: ready as {args.name}", flush=True)
    stop: Deferred[None] = Deferred()

    def stopped(*_: object) -> None:
        reactor.callFromThread(lambda: None if stop.called else stop.callback(None))

    signal.signal(signal.SIGINT, stopped)
    signal.signal(signal.SIGTERM, stopped)
    await stop
    print("bot: signing out", flush=True)
    await session.close()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", help="the server, e.g. tcp:127.0.0.1:7777")
    parser.add_argument("--name", default="bot")
    parser.add_argument("--password", default="bot password")
    parser.add_argument("--fingerprint", help="the server's SHA256:... fingerprint (else "
                                              "trusted on first use)")
    parser.add_argument("--state", help="the bot's state file (default NAME.state.json)")
    return parser.parse_args(argv)


async def run(reactor: Any, args: argparse.Namespace) -> None:
    """``main``, with any failure said in one line (exit status 1), not a traceback."""
    try:
        await main(reactor, args)
    except Exception as e:
        raise SystemExit(f"{Path(sys.argv[0]).name}: {type(e).__name__}: {e}")


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    task.react(lambda reactor: ensureDeferred(run(reactor, arguments)))
