"""The scripts in examples/, run against a ``twistd -n chatserver`` subprocess."""

from __future__ import annotations

import hashlib
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred

from chatproto.client import ChatListener, ServerTrust, connect
from chatproto.wire.messages import ContentType, Deliver
from tests.terminal.conftest import PASSWORD, WAIT, ChatServer, png_bytes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                          text=True, timeout=WAIT, cwd=cwd)


def test_two_users_chat(chat_server: ChatServer, tmp_path: Path) -> None:
    """The two users trade four messages; each side prints what it received, and receipts."""
    result = run_example("two_users_chat.py", chat_server.endpoint, "--fingerprint",
                         chat_server.fingerprint, "--names", "kate", "liam", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[liam] <kate> hi liam, how are you?" in out
    assert "[kate] <liam> bye!" in out
    assert "(kate read up to #4)" in out or "done: kate received 2, liam received 2" in out
    assert "done: kate received 2, liam received 2" in out


def test_image_exchange(chat_server: ChatServer, tmp_path: Path) -> None:
    """The receiver gets the exact bytes (trusting the server on first use) and saves them
    without overwriting an existing file."""
    image = tmp_path / "sent.png"
    image.write_bytes(png_bytes(200))
    out = tmp_path / "received"
    out.mkdir()
    (out / "from-mona.png").write_bytes(b"already here")
    result = run_example("image_exchange.py", chat_server.endpoint, str(image), "--out",
                         str(out), "--names", "mona", "nick", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"trusting 127.0.0.1:{chat_server.port} with fingerprint " \
           f"{chat_server.fingerprint}" in result.stdout
    assert "sha256 verified" in result.stdout
    saved = out / "from-mona-1.png"
    assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(
        image.read_bytes()).digest()
    assert (out / "from-mona.png").read_bytes() == b"already here"


def test_examples_run_as_documented(chat_server: ChatServer, tmp_path: Path) -> None:
    """Every example is executable with a ``python3`` shebang, so with the virtualenv's
    ``bin`` first on PATH (an activated ``.venv``) ``examples/x.py ENDPOINT`` runs; the README
    also shows ``.venv/bin/python examples/x.py``."""
    for script in EXAMPLES.glob("*.py"):
        assert os.access(script, os.X_OK), script
        assert script.read_text().startswith("#!/usr/bin/env python3\n"), script
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = subprocess.run([str(EXAMPLES / "two_users_chat.py"), chat_server.endpoint,
                             "--fingerprint", chat_server.fingerprint], capture_output=True,
                            text=True, timeout=WAIT, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr


def test_examples_run_twice_on_one_server(chat_server: ChatServer, tmp_path: Path) -> None:
    """Run after run on one server: with their default (fresh) names, and with the same
    names again, each run checks only what it sent: the second image exchange verifies the
    second picture, not the first one replayed to the receiver's new device."""
    for _ in range(2):
        result = run_example("two_users_chat.py", chat_server.endpoint, "--fingerprint",
                             chat_server.fingerprint, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "received 2" in result.stdout
    for _ in range(2):
        result = run_example("two_users_chat.py", chat_server.endpoint, "--fingerprint",
                             chat_server.fingerprint, "--names", "pia", "quin", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "done: pia received 2, quin received 2" in result.stdout
    for rows in (30, 60):
        image = tmp_path / f"picture-{rows}.png"
        image.write_bytes(png_bytes(rows))
        result = run_example("image_exchange.py", chat_server.endpoint, str(image), "--out",
                             str(tmp_path / "received"), "--names", "rosa", "sam",
                             "--fingerprint", chat_server.fingerprint, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"received {len(image.read_bytes())} bytes" in result.stdout
        assert "sha256 verified" in result.stdout


def test_examples_fail_in_one_line(chat_server: ChatServer, tmp_path: Path) -> None:
    """A name taken with another password (after the quick start's alice and bob, say) is
    reported in one line with exit status 1, not a traceback."""
    first = run_example("two_users_chat.py", chat_server.endpoint, "--fingerprint",
                        chat_server.fingerprint, "--names", "tess", "ugo", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    for script, extra in (("two_users_chat.py", []),
                          ("image_exchange.py", [str(tmp_path / "p.png")])):
        (tmp_path / "p.png").write_bytes(png_bytes())
        result = run_example(script, chat_server.endpoint, *extra, "--fingerprint",
                             chat_server.fingerprint, "--names", "tess", "ugo", "--password",
                             "another password", cwd=tmp_path)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().count("\n") == 0
        assert f"{script}: SigninError" in result.stderr and "AUTH_FAILED" in result.stderr


def _wait_line(proc: subprocess.Popen[bytes], text: str) -> str:
    """Read the process's output until it contains ``text`` (bounded); returns what was read.
    (Reads the pipe's file descriptor directly: a buffered reader could hold the line while
    select() says there is nothing to read.)"""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and text.encode() not in out:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
    if text.encode() not in out:
        raise AssertionError(f"{text!r} not printed; got {out.decode()!r}")
    return out.decode()


class Inbox(ChatListener):
    """Collects group texts from the bot; fires ``wanted`` on a text containing a word."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.waiting: list[tuple[str, Deferred[str]]] = []

    def message_received(self, deliver: Deliver, image: bytes | None) -> None:
        if deliver.content_type != ContentType.TEXT or deliver.sender != "botty":
            return
        text = deliver.body.decode()
        self.texts.append(text)
        for word, d in list(self.waiting):
            if word in text:
                self.waiting.remove((word, d))
                d.callback(text)

    def wait_for(self, word: str) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        for text in self.texts:
            if word in text:
                d.callback(text)
                return d
        self.waiting.append((word, d))
        d.addTimeout(WAIT, _reactor())
        return d


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.ensureDeferred
async def test_group_bot(chat_server: ChatServer, tmp_path: Path) -> None:
    """The bot greets a group it is added to and answers !ping, !time and !members there;
    it signs out on SIGTERM."""
    bot = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "group_bot.py"), chat_server.endpoint, "--name",
         "botty", "--fingerprint", chat_server.fingerprint, "--state",
         str(tmp_path / "bot.json")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        cwd=tmp_path)
    try:
        _wait_line(bot, "ready as botty")
        inbox = Inbox()
        client = await connect(_reactor(), chat_server.endpoint,
                               trust=ServerTrust(server_fingerprint=chat_server.fingerprint),
                               listener=inbox)
        await client.register("olga", PASSWORD)
        await client.signin("olga", PASSWORD)
        await client.sync()
        ack = await client.create_group(["botty"], "bots")
        assert "!ping" in await inbox.wait_for("hello!")
        await client.send_text(ack.group_id, "!ping")
        assert await inbox.wait_for("pong") == "pong"
        await client.send_text(ack.group_id, "!time")
        assert "UTC" in await inbox.wait_for("it is")
        await client.send_text(ack.group_id, "!members")
        members = await inbox.wait_for("members:")
        assert "olga (owner, online)" in members and "botty (member, online)" in members
        await client.quit()
    finally:
        bot.terminate()
        assert bot.wait(timeout=WAIT) == 0
    assert bot.stdout is not None
    assert b"signing out" in bot.stdout.read()
