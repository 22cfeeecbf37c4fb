#!/usr/bin/env python3
"""Send N numbered messages to someone, surviving server restarts and our own restarts.

    .venv/bin/python examples/resilient_sender.py --server tcp:127.0.0.1:7777 --name alice \\
        --password secret --to bob --count 100 --outbox alice.outbox \\
        --fingerprint SHA256:...

Uses only the public client API (:func:`chatproto.client.open_session`). Every message gets
a ``client_msg_id`` derived from (name, recipient, number), so running the program again
after a crash queues the same ids: what the server already stored is acknowledged without
being stored or delivered again, and what was lost is sent. The session keeps unacknowledged
messages in ``--outbox`` and reconnects by itself when the server goes away.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chatproto.client import ChatListener, KnownServers, ServerTrust, open_session
from chatproto.wire import messages as m


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Send numbered messages reliably.")
    p.add_argument("--server", default="tcp:127.0.0.1:7777")
    p.add_argument("--name", required=True)
    p.add_argument("--password", default=os.environ.get("CHATPROTO_PASSWORD"))
    p.add_argument("--to", required=True)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--outbox", required=True, help="the outbox file (SQLite)")
    p.add_argument("--state", help="the session state file (default: OUTBOX.state)")
    p.add_argument("--register", action="store_true", help="create the account if needed")
    p.add_argument("--fingerprint", help="the server's expected identity fingerprint")
    p.add_argument("--known-servers", help="a pin file (trust on first use)")
    p.add_argument("--max-backoff", type=float, default=30.0,
                   help="the longest wait between reconnection attempts, in seconds")
    args = p.parse_args(argv)
    if not args.password:
        p.error("--password or CHATPROTO_PASSWORD is required")
    if not args.fingerprint and not args.known_servers:
        p.error("--fingerprint or --known-servers is required")
    return args


def message_id(name: str, to: str, number: int) -> bytes:
    """A stable client_msg_id for message ``number`` (the same after a restart)."""
    return hashlib.sha256(f"resilient_sender\0{name}\0{to}\0{number}".encode()).digest()[:16]


class Progress(ChatListener):
    """Counts acknowledgements and reports the connection state."""

    def __init__(self, ids: dict[bytes, int]) -> None:
        self.remaining = dict(ids)
        self.done: Deferred[None] = Deferred()
        self.failed: list[str] = []

    def connection_state_changed(self, state: str) -> None:
        print(f"[{state}]", flush=True)

    def send_acknowledged(self, ack: m.SendAck) -> None:
        self.remaining.pop(ack.client_msg_id, None)
        self._check()

    def send_failed(self, client_msg_id: bytes, error: Exception) -> None:
        number = self.remaining.pop(client_msg_id, None)
        self.failed.append(f"message {number}: {error}")
        self._check()

    def _check(self) -> None:
        if not self.remaining and not self.done.called:
            self.done.callback(None)


async def main(reactor: Any, argv: list[str]) -> int:
    args = parse(argv)
    ids = {message_id(args.name, args.to, i): i for i in range(1, args.count + 1)}
    progress = Progress(ids)
    pins = KnownServers(args.known_servers) if args.known_servers else None
    trust = ServerTrust(known_servers=pins, server_fingerprint=args.fingerprint,
                        trust_on_first_use=(lambda host, fp: True) if pins is not None else None)
    session = open_session(
        reactor, args.server, args.name, args.password, register=args.register,
        outbox_path=args.outbox, state_path=args.state or f"{args.outbox}.state",
        listener=progress, trust=trust, backoff=(0.2, args.max_backoff, 2.0),
    )
    queued = {entry.client_msg_id for entry in session.pending()}
    for msg_id, number in ids.items():
        if msg_id not in queued:  # left over from an earlier run: already being resent
            session.send_text(args.to, f"{number}", client_msg_id=msg_id).addErrback(
                lambda _: None)  # reported through send_failed
    await progress.done
    await session.close()
    for line in progress.failed:
        print(line, file=sys.stderr)
    print(f"sent {args.count - len(progress.failed)} of {args.count}", flush=True)
    return 1 if progress.failed else 0


if __name__ == "__main__":
    def _run(reactor: Any) -> Deferred[None]:
        d = Deferred.fromCoroutine(main(reactor, sys.argv[1:]))

        def finish(code: int) -> None:
            if code:
                raise SystemExit(code)

        def failed(failure: Failure) -> None:  # one line, not a traceback
            if failure.check(SystemExit):
                failure.raiseException()
            raise SystemExit(f"resilient_sender.py: {type(failure.value).__name__}: "
                             f"{failure.getErrorMessage()}")

        return d.addCallbacks(finish, failed)

    task.react(_run)
