#!/usr/bin/env python3
"""One user sends an image file; the other receives it, verifies it and saves it.

Usage (from the checkout, after ``make run`` created ``.venv``)::

    .venv/bin/python examples/image_exchange.py tcp:127.0.0.1:7777 picture.png [--out received/]

The image (PNG, JPEG, GIF or WebP, at most 10 MiB) travels in 256 KiB chunks. The library
reassembles it on the receiving side and checks it against the SHA-256 the sender announced
(a mismatch is reported to ``error_received`` and the image dropped); this script checks again
against the file it sent, then saves the image without overwriting anything.

The two users are ``example-alice`` and ``example-bob`` (registered or signed in) unless
``--names`` is given; the receiver waits for the image
sent in this run (by its message id), not one of an earlier run replayed to its new device,
so the script can run again and again on one server.
"""

from __future__ import annotations

import argparse
import hashlib
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
from chatproto.wire.messages import Deliver

EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif",
              "image/webp": ".webp"}


class Receiver(ChatListener):
    """Waits for the image with a given message id."""

    def __init__(self, msg_id: bytes) -> None:
        self.msg_id = msg_id
        self.image: Deferred[tuple[Deliver, bytes]] = Deferred()

    def message_received(self, deliver: Deliver, image: bytes | None) -> None:
        if image is not None and deliver.client_msg_id == self.msg_id and not self.image.called:
            self.image.callback((deliver, image))

    def error_received(self, code: int, reason: str) -> None:
        print(f"error {code}: {reason}", flush=True)


def save(directory: Path, stem: str, extension: str, data: bytes) -> Path:
    """Write ``data`` to a new file (``stem.ext``, else ``stem-1.ext``, ...)."""
    directory.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        path = directory / (f"{stem}{extension}" if n == 0 else f"{stem}-{n}{extension}")
        try:
            with open(path, "xb") as f:
                f.write(data)
            return path
        except FileExistsError:
            n += 1


async def sign_in(reactor: Any, args: argparse.Namespace, name: str,
                  listener: ChatListener | None = None) -> ChatClient:
    """Connect (trusting on first use unless --fingerprint), register if needed, sign in."""

    def trust(host: str, fingerprint: str) -> bool:
        print(f"trusting {host} with fingerprint {fingerprint}", flush=True)
        return True

    client: ChatClient = await connect(
        reactor, args.endpoint, listener=listener,
        trust=ServerTrust(server_fingerprint=args.fingerprint,
                          trust_on_first_use=None if args.fingerprint else trust))
    try:
        await client.register(name, args.password)
    except RegisterError as e:
        if e.code != ErrorCode.NAME_TAKEN:
            raise
    await client.signin(name, args.password)
    return client


async def main(reactor: Any, args: argparse.Namespace) -> None:
    sender_name, receiver_name = args.names
    data = args.image.read_bytes()
    expected = hashlib.sha256(data).hexdigest()
    msg_id = os.urandom(16)
    inbox = Receiver(msg_id)
    receiver = await sign_in(reactor, args, receiver_name, inbox)
    await receiver.sync()
    sender = await sign_in(reactor, args, sender_name)
    print(f"{sender_name} sends {args.image.name} ({len(data)} bytes, sha256 {expected[:16]}…)",
          flush=True)
    ack = await sender.send_image(receiver_name, data, client_msg_id=msg_id)
    print(f"stored by the server as message #{ack.conv_seq}", flush=True)

    deliver, image = await inbox.image
    got = hashlib.sha256(image).hexdigest()
    if got != expected:
        raise SystemExit(f"the received image differs: sha256 {got}")
    mime = deliver.image.mime if deliver.image is not None else None
    path = save(args.out, f"from-{deliver.sender}", EXTENSIONS.get(mime or "", ".img"), image)
    print(f"{receiver_name} received {len(image)} bytes ({mime}) from {deliver.sender}, "
          f"sha256 verified, saved to {path}", flush=True)
    await sender.quit()
    await receiver.quit()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint", help="the server, e.g. tcp:127.0.0.1:7777")
    parser.add_argument("image", type=Path, help="the image file to send")
    parser.add_argument("--out", type=Path, default=Path(os.curdir) / "received",
                        help="where the receiver saves it (default ./received)")
    parser.add_argument("--fingerprint", help="the server's SHA256:... fingerprint (else "
                                              "trusted on first use)")
    parser.add_argument("--names", nargs=2, default=["example-alice", "example-bob"],
                        metavar=("SENDER", "RECEIVER"),
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
