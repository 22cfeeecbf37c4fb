"""``chatproto-admin``: account management against a temporary SQLite database."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted

from chatproto.server import admin
from chatproto.server.identity import identity_fingerprint, load_or_create_identity
from chatproto.server.passwords import verify_password
from chatproto.server.tap import MIN_ARGON2
from chatproto.storage.database import Database
from chatproto.storage.store import ChatStore
from tests.server.conftest import FAST

PASSWORD = "correct horse battery"


class Terminal(io.StringIO):
    """A standard input that is a terminal (so the password is prompted for)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    """An existing (empty) SQLite database: the admin commands never create one."""
    path = tmp_path / "chat.db"
    sqlite3.connect(path).close()
    return f"sqlite:{path}"


async def run(*argv: str, stdin: str | io.StringIO = "",
              fast: bool = True) -> tuple[int, str]:
    """Parse and run one command in-process; returns (exit code, stdout)."""
    from twisted.internet import reactor

    args = admin.build_parser().parse_args(list(argv))
    out = io.StringIO()
    source = stdin if isinstance(stdin, io.StringIO) else io.StringIO(stdin)
    try:
        code = await admin.run(reactor, args, stdin=source, stdout=out,
                               params=FAST if fast else None)
    except admin.AdminError as e:
        return admin.FAILED, str(e)
    return code, out.getvalue()


async def stored_hash(uri: str, name: str) -> str | None:
    db = Database.from_uri(uri)
    await db.start()
    try:
        return await ChatStore(db).get_password_hash(name)
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_add_list_reset_delete(sqlite_uri: str, tmp_path: Path) -> None:
    """add-user creates a verifiable account; list-users shows it (no hash); reset-password
    changes the hash; delete-user removes it. The password is never printed."""
    code, out = await run("add-user", "alice", "--database", sqlite_uri, "--password-stdin",
                          stdin=PASSWORD + "\n")
    assert code == 0 and PASSWORD not in out
    phc = await stored_hash(sqlite_uri, "alice")
    assert phc is not None and verify_password(PASSWORD, phc)

    code, out = await run("list-users", "--database", sqlite_uri)
    assert code == 0 and out.startswith("alice\t") and "$argon2" not in out

    pwfile = tmp_path / "pw"
    pwfile.write_text("a new long password\n")
    code, out = await run("reset-password", "alice", "--database", sqlite_uri,
                          "--password-file", str(pwfile))
    assert code == 0 and "a new long password" not in out
    phc = await stored_hash(sqlite_uri, "alice")
    assert phc is not None and verify_password("a new long password", phc)
    assert not verify_password(PASSWORD, phc)

    code, _ = await run("delete-user", "alice", "--database", sqlite_uri)
    assert code == 0
    assert await stored_hash(sqlite_uri, "alice") is None
    code, out = await run("list-users", "--database", sqlite_uri)
    assert code == 0 and out == ""


@pytest_twisted.ensureDeferred
async def test_failures(sqlite_uri: str) -> None:
    """An existing user, an unknown user, a weak password or an invalid name fail (code 1)."""
    assert (await run("add-user", "bob", "--database", sqlite_uri, "--password-stdin",
                      stdin=PASSWORD))[0] == 0
    code, msg = await run("add-user", "bob", "--database", sqlite_uri, "--password-stdin",
                          stdin=PASSWORD)
    assert code == 1 and "exists" in msg
    code, msg = await run("reset-password", "nobody", "--database", sqlite_uri,
                          "--password-stdin", stdin=PASSWORD)
    assert code == 1 and "no such user" in msg
    code, msg = await run("delete-user", "nobody", "--database", sqlite_uri)
    assert code == 1 and "no such user" in msg
    code, msg = await run("add-user", "carol", "--database", sqlite_uri, "--password-stdin",
                          stdin="short")
    assert code == 1 and "characters" in msg and "short" not in msg
    code, msg = await run("add-user", "Not Valid", "--database", sqlite_uri,
                          "--password-stdin", stdin=PASSWORD)
    assert code == 1 and "1 to 32 of a-z 0-9 _ . - starting with a letter or a digit" in msg


@pytest_twisted.ensureDeferred
async def test_password_from_stdin_without_a_terminal(sqlite_uri: str) -> None:
    """With no terminal (``add-user NAME </dev/null`` or a pipe) and no option, the password
    is the first line of standard input; an empty one is a clear error, not a traceback."""
    code, _ = await run("add-user", "gina", "--database", sqlite_uri, stdin=PASSWORD + "\n")
    assert code == 0
    phc = await stored_hash(sqlite_uri, "gina")
    assert phc is not None and verify_password(PASSWORD, phc)
    code, msg = await run("add-user", "hank", "--database", sqlite_uri, stdin="")
    assert code == 1 and "no password" in msg and "--password-file" in msg


@pytest_twisted.ensureDeferred
async def test_a_missing_database_is_not_created(tmp_path: Path) -> None:
    """list-users (or any command) on a mistyped path fails and creates nothing."""
    missing = tmp_path / "mistyped" / "path.db"
    for argv in (["list-users"], ["add-user", "ivy", "--password-stdin"],
                 ["delete-user", "ivy"]):
        code, msg = await run(*argv, "--database", f"sqlite:{missing}", stdin=PASSWORD)
        assert code == 1 and f"no database at {missing}" in msg
    assert not missing.exists() and not missing.parent.exists()


@pytest_twisted.ensureDeferred
async def test_hashes_use_the_servers_argon2_options(sqlite_uri: str) -> None:
    """The --argon2-* options (the server's, with its defaults) set the hash's cost; a cost
    below the minimum needs --insecure-fast-hashing, as for the server."""
    weak = ["--argon2-memory-kib", "64", "--argon2-iterations", "1"]
    code, msg = await run("add-user", "jill", "--database", sqlite_uri, "--password-stdin",
                          *weak, stdin=PASSWORD, fast=False)
    assert code == 1 and "--insecure-fast-hashing" in msg
    code, _ = await run("add-user", "jill", "--database", sqlite_uri, "--password-stdin",
                        *weak, "--insecure-fast-hashing", stdin=PASSWORD, fast=False)
    assert code == 0
    phc = await stored_hash(sqlite_uri, "jill")
    assert phc is not None and "m=64,t=1," in phc
    args = admin.build_parser().parse_args(["add-user", "x"])
    assert admin.argon2_parameters(args) == MIN_ARGON2


def test_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    """--help shows no reStructuredText markup, and names the Argon2 options."""
    assert admin.main(["--help"]) == 0
    top = capsys.readouterr().out
    assert admin.main(["add-user", "--help"]) == 0
    sub = capsys.readouterr().out
    for text in (top, sub):
        assert "``" not in text and ":mod:" not in text
    assert "--argon2-memory-kib" in sub and "exit status" in top


@pytest_twisted.ensureDeferred
async def test_prompted_password_must_match(sqlite_uri: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a password source the password is prompted twice; a mismatch fails, a match
    creates the account."""
    answers = iter([PASSWORD, PASSWORD + "x", PASSWORD, PASSWORD])
    monkeypatch.setattr(admin.getpass, "getpass", lambda prompt="": next(answers))
    code, msg = await run("add-user", "dora", "--database", sqlite_uri, stdin=Terminal())
    assert code == 1 and "do not match" in msg and PASSWORD not in msg
    code, _ = await run("add-user", "dora", "--database", sqlite_uri, stdin=Terminal())
    assert code == 0


@pytest_twisted.ensureDeferred
async def test_fingerprint(tmp_path: Path) -> None:
    """fingerprint prints the identity file's fingerprint; a missing file fails."""
    key = tmp_path / "server.key"
    expected = identity_fingerprint(load_or_create_identity(str(key)))
    code, out = await run("fingerprint", "--identity", str(key))
    assert code == 0 and out.strip() == expected
    code, _ = await run("fingerprint", "--identity", str(tmp_path / "missing"))
    assert code == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """No command, an unknown command, or a missing name is a usage error (2)."""
    assert admin.main([]) == 2
    assert admin.main(["frobnicate"]) == 2
    assert admin.main(["add-user"]) == 2
    assert admin.main(["add-user", "x", "--password-stdin", "--password-file", "f"]) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_exit_codes(sqlite_uri: str) -> None:
    """The real command (task.react in a fresh process, production Argon2 cost): 0 on
    success, 1 for a duplicate, and nothing secret on its output."""
    cmd = [sys.executable, "-m", "chatproto.server.admin"]
    ok = subprocess.run([*cmd, "add-user", "erin", "--database", sqlite_uri,
                         "--password-stdin"], input=PASSWORD + "\n", capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    dup = subprocess.run([*cmd, "add-user", "erin", "--database", sqlite_uri,
                          "--password-stdin"], input=PASSWORD + "\n", capture_output=True,
                         text=True, timeout=60)
    assert dup.returncode == 1 and "exists" in dup.stderr
    listed = subprocess.run([*cmd, "list-users", "--database", sqlite_uri],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "erin" in listed.stdout
    for result in (ok, dup, listed):
        assert PASSWORD not in result.stdout + result.stderr
        assert "$argon2" not in result.stdout + result.stderr
