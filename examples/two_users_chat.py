#!/usr/bin/env python3
"""Two users on one server exchange a few messages; every message is printed as it arrives.

Usage (from the checkout, after ``make run`` created ``.venv``)::

    .venv/bin/python examples/two_users_chat.py tcp:127.0.0.1:7777 [--fingerprint SHA256:...]

The two users are ``example-alice`` and ``example-bob`` (apart from the quick start's alice and
bob) unless ``--names`` is given; each is registered if needed (an existing account with the
same password is fine, so a second run registers nobody), then signs in on a connection of its
own. Only the messages sent in this run are counted, so the script
can run again and again on one server. Only the public API of :mod:`chatproto.client` is used.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred

from chatproto.client import (
    ChatClient,
    ChatListener,
    RegisterError,
    ServerTrust,
    SigninError,
    connect,
)
from chatproto.wire.errors import ErrorCode
from chatproto.wire.messages import Deliver, Receipt, ReceiptKind


class Printer(ChatListener):
    """Prints what one user receives in this run, and lets the script wait for the n-th
    message (messages of earlier runs, replayed to this new device, are left out)."""

    def __init__(self, name: str, this_run: set[bytes]) -> None:
        self.name = name
        self.this_run = this_run
        self.received: list[str] = []
        self.last_seq = 0
        self.waiting: list[tuple[int, Deferred[None]]] = []

    def message_received(self, deliver: Deliver, image: bytes | None) -> None:
        if deliver.sender == self.name or deliver.client_msg_id not in self.this_run:
            return  # the copy of our own message, or a message of an earlier run
        text = deliver.body.decode()
        print(f"[{self.name}] <{deliver.sender}> {text}", flush=True)
        self.received.append(text)
        self.last_seq = max(self.last_seq, deliver.conv_seq)
        for count, d in list(self.waiting):
            if len(self.received) >= count:
                self.waiting.remove((count, d))
                d.callback(None)

    def receipt_received(self, receipt: Receipt) -> None:
        kind = "read" if receipt.kind == ReceiptKind.READ else "delivered"
        print(f"[{self.name}] ({receipt.by} {kind} up to #{receipt.conv_seq})", flush=True)

    def wait_for(self, count: int) -> Deferred[None]:
        """Fires once ``count`` messages have arrived."""
        d: Deferred[None] = Deferred()
        if len(self.received) >= count:
            d.callback(None)
        else:
            self.waiting.append((count, d))
        return d


def trust_and_say(host: str, fingerprint: str) -> bool:
    """Trust on first use, loudly (a real client asks the user)."""
    print(f"trusting {host} with fingerprint {fingerprint}", flush=True)
    return True


async def sign_in(reactor: Any, endpoint: str, fingerprint: str | None, name: str,
                  password: str, listener: ChatListener) -> ChatClient:
    """Connect, register if needed, sign in and start receiving."""
    trust = ServerTrust(server_fingerprint=fingerprint,
                        trust_on_first_use=None if fingerprint else trust_and_say)
    client: ChatClient = await connect(reactor, endpoint, trust=trust, listener=listener)
    try:
        await client.register(name, password)
        print(f"registered {name}", flush=True)
    except RegisterError as e:
        if e.code != ErrorCode.NAME_TAKEN:
            raise
    await client.signin(name, password)
    await client.sync()
    return client


async def main(reactor: Any, args: argparse.Namespace) -> None:
    first, second = args.names
    this_run: set[bytes] = set()
    alice_inbox, bob_inbox = Printer(first, this_run), Printer(second, this_run)
    alice = await sign_in(reactor, args.endpoint, args.fingerprint, first, args.password,
                          alice_inbox)
    bob = await sign_in(reactor, args.endpoint, args.fingerprint, second, args.password,
                        bob_inbox)
    script = [
        (alice, second, f"hi {second}, how are you?"),
        (bob, first, f"fine, thanks {first}! and you?"),
        (alice, second, "great. see you tomorrow"),
        (bob, first, "bye!"),
    ]
    for n, (sender, to, text) in enumerate(script):
        msg_id = os.urandom(16)
        this_run.add(msg_id)
        ack = await sender.send_text(to, text, client_msg_id=msg_id)
        print(f"[{sender.name}] sent #{ack.conv_seq}: {text}", flush=True)
        inbox = bob_inbox if sender is alice else alice_inbox
        await inbox.wait_for(n // 2 + 1)  # each reply waits for the message it answers
    await alice.mark_read(second, alice_inbox.last_seq)  # bob gets a read receipt
    await alice.quit()
    await bob.quit()
    print(f"done: {first} received {len(alice_inbox.received)}, {second} received "
          f"{len(bob_inbox.received)}", flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", help="the server, e.g. tcp:127.0.0.1:7777")
    parser.add_argument("--fingerprint", help="the server's SHA256:... fingerprint (else "
                                              "trusted on first use)")
    parser.add_argument("--names", nargs=2, default=["example-alice", "example-bob"],
                        metavar="NAME",
                        help="the two users, registered or signed in (default: example-alice "
                             "example-bob, apart from the quick start's alice and bob)")
    parser.add_argument("--password", default="example password")
    return parser.parse_args(argv)


async def run(reactor: Any, args: argparse.Namespace) -> None:
    """``main``, with any failure said in one line (exit status 1), not a traceback."""
    try:
        await main(reactor, args)
    except Exception as e:
        hint = " (another password? --names picks other users)" \
            if isinstance(e, SigninError) else ""
        raise SystemExit(f"{Path(sys.argv[0]).name}: {type(e).__name__}: {e}{hint}")


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    task.react(lambda reactor: ensureDeferred(run(reactor, arguments)))
