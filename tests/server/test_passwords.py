"""Password policy, Argon2id hashing and the threaded PasswordHasher."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted

from chatproto.server.passwords import (
    MAX_PASSWORD_CHARS,
    Argon2Parameters,
    PasswordHasher,
    hash_password,
    password_policy_error,
    verify_password,
)

FAST = Argon2Parameters(memory_kib=64, iterations=1, lanes=1)


@pytest.mark.parametrize("password", ["12345678", "x" * MAX_PASSWORD_CHARS, "pässwört ☃ ok"])
def test_policy_accepts(password: str) -> None:
    """8 to 256 printable characters (any script) are accepted."""
    assert password_policy_error(password) is None


@pytest.mark.parametrize("password", ["", "1234567", "x" * (MAX_PASSWORD_CHARS + 1),
                                      "tab\there!", "newline\n123"])
def test_policy_refuses(password: str) -> None:
    """Too short, too long, or with control characters: refused with a reason."""
    assert password_policy_error(password)


def test_hash_verify_round_trip() -> None:
    """A PHC string verifies its own password only; it names Argon2id and the parameters."""
    phc = hash_password("secret password", FAST)
    assert phc.startswith("$argon2id$") and "m=64,t=1,p=1" in phc
    assert "secret password" not in phc
    assert verify_password("secret password", phc)
    assert not verify_password("secret passwore", phc)
    assert hash_password("secret password", FAST) != phc  # fresh salt


def test_verify_garbage_hash_is_false() -> None:
    """A malformed stored hash verifies nothing (no exception)."""
    assert not verify_password("anything", "not a phc string")


@pytest_twisted.ensureDeferred
async def test_password_hasher_in_threads() -> None:
    """PasswordHasher hashes and verifies in its pool; an unknown user (phc None) is False."""
    from twisted.internet import reactor

    hasher = PasswordHasher(reactor, FAST, threads_max=2)
    hasher.start()
    try:
        phc = await hasher.hash("secret password")
        assert await hasher.verify("secret password", phc) is True
        assert await hasher.verify("wrong password", phc) is False
        assert await hasher.verify("secret password", None) is False
    finally:
        hasher.stop()


def worker_pid() -> int:
    """Runs in the hasher's worker (module-level, so a spawned process can import it)."""
    import os

    return os.getpid()


@pytest_twisted.ensureDeferred
async def test_hashes_run_in_worker_processes() -> None:
    """With processes > 0, hashing and verifying happen in another process (Argon2id holds
    the GIL, so a thread would stall the reactor), with the same results as in a thread."""
    import os

    from twisted.internet import reactor

    hasher = PasswordHasher(reactor, FAST, threads_max=2, processes=1)
    hasher.start()
    try:
        assert await hasher._run(worker_pid) != os.getpid()
        phc = await hasher.hash("correct horse")
        assert phc.startswith("$argon2id$") and verify_password("correct horse", phc)
        assert await hasher.verify("correct horse", phc) is True
        assert await hasher.verify("wrong horse", phc) is False
        assert await hasher.verify("anything", None) is False
    finally:
        hasher.stop()


def test_hashing_workers_exit_when_the_server_is_killed(tmp_path: Path) -> None:
    """A server killed with SIGKILL leaves no hashing worker behind: each worker notices its
    parent is gone and exits (bounded wait; polling a subprocess is the one place we sleep)."""
    import os
    import select
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent("""
        from twisted.internet import reactor
        from twisted.internet.defer import gatherResults

        from chatproto.server.passwords import Argon2Parameters, PasswordHasher
        from tests.server.test_passwords import worker_pid

        if __name__ == "__main__":  # spawned workers import this module too
            hasher = PasswordHasher(reactor, Argon2Parameters(64, 1, 1), processes=2)
            hasher.start()
            gatherResults([hasher._run(worker_pid) for _ in range(8)]).addCallback(
                lambda pids: print(" ".join(map(str, sorted(set(pids)))), flush=True))
            reactor.run()
    """))
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the test server did not report its workers"
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert workers and proc.pid not in workers
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in workers if _running(p)]
    assert alive == [], f"workers still running: {alive}"


def _running(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
