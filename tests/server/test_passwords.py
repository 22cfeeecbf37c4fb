"""Password policy, Argon2id hashing and the threaded PasswordHasher."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.defer import Deferred

from chatproto.server.passwords import (
    MAX_PASSWORD_CHARS,
    Argon2Parameters,
    HasherBusy,
    HasherStopped,
    HashQueue,
    PasswordHasher,
    Priority,
    hash_password,
    normalize_password,
    password_policy_error,
    phc_parameters,
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


def test_normalize_password_is_opaquestring() -> None:
    """NFD becomes NFC; non-ASCII spaces become U+0020; everything else is kept."""
    nfc = "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e"
    assert normalize_password(unicodedata.normalize("NFD", nfc)) == nfc
    assert normalize_password("a\u00a0b\u3000c\u2009d e") == "a b c d e"
    assert normalize_password("Tab-less ASCII!") == "Tab-less ASCII!"


def test_hash_in_nfc_verifies_in_nfd() -> None:
    """A password hashed as typed on one system (NFC) verifies as typed on another (NFD), and
    the other way round; a different password still fails."""
    nfc = "p\u00e4ssw\u00f6rt \u00c5ngstr\u00f6m"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    assert verify_password(nfd, hash_password(nfc, FAST))
    assert verify_password(nfc, hash_password(nfd, FAST))
    assert not verify_password(nfd + "x", hash_password(nfc, FAST))


def test_policy_counts_normalised_characters() -> None:
    """The length rule applies to the normalised password (NFD's extra marks do not count)."""
    seven = unicodedata.normalize("NFD", "\u00e9" * 7)
    assert len(seven) == 14
    assert password_policy_error(seven) is not None


def test_phc_parameters_and_needs_rehash() -> None:
    """The cost is read from the PHC string; a hash with other parameters than the server's
    needs a rehash, one with the same does not; a foreign string is left alone."""
    other = Argon2Parameters(memory_kib=128, iterations=1, lanes=1)
    assert phc_parameters(hash_password("some password", other)) == other
    assert phc_parameters("not a phc string") is None
    hasher = PasswordHasher(None, FAST)
    assert hasher.needs_rehash(hash_password("some password", other))
    assert not hasher.needs_rehash(hash_password("some password", FAST))
    assert not hasher.needs_rehash("$argon2i$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA")


class Jobs:
    """Jobs whose completion the test controls; records the order they started in."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.pending: dict[str, Deferred[str]] = {}

    def job(self, name: str):  # type: ignore[no-untyped-def]
        def run() -> Deferred[str]:
            self.started.append(name)
            self.pending[name] = d = Deferred()
            return d

        return run

    def finish(self, name: str) -> None:
        self.pending.pop(name).callback(name)


def test_queue_runs_signins_before_registrations() -> None:
    """At most ``concurrency`` jobs run; waiting sign-ins start before waiting registrations,
    each in arrival order."""
    q = HashQueue(concurrency=1, max_per_key=10)
    jobs = Jobs()
    results: list[str] = []
    for name, prio in [("r1", Priority.REGISTER), ("r2", Priority.REGISTER),
                       ("s1", Priority.SIGNIN), ("r3", Priority.REGISTER),
                       ("s2", Priority.SIGNIN)]:
        q.submit(prio, "k", jobs.job(name)).addCallback(results.append)
    assert jobs.started == ["r1"]
    for name in ["r1", "s1", "s2", "r2", "r3"]:
        jobs.finish(name)
    assert jobs.started == ["r1", "s1", "s2", "r2", "r3"]
    assert results == ["r1", "s1", "s2", "r2", "r3"]
    assert q.running == 0 and q.jobs("k") == 0


def test_queue_bounds_the_jobs_of_one_address() -> None:
    """An address may have ``max_per_key`` jobs waiting or running; more fail at once with
    HasherBusy (others are unaffected); a finished or failed job frees its place."""
    q = HashQueue(concurrency=1, max_per_key=2)
    jobs = Jobs()
    q.submit(Priority.SIGNIN, "a", jobs.job("a1"))
    q.submit(Priority.SIGNIN, "a", jobs.job("a2"))
    busy = q.submit(Priority.SIGNIN, "a", jobs.job("a3"))
    assert isinstance(busy.result.value, HasherBusy)
    busy.addErrback(lambda f: None)
    q.submit(Priority.SIGNIN, "b", jobs.job("b1"))
    q.submit(Priority.SIGNIN, None, jobs.job("any"))  # no key: no cap
    assert q.jobs("a") == 2
    jobs.pending["a1"].errback(RuntimeError("hash failed"))
    assert q.jobs("a") == 1
    q.submit(Priority.SIGNIN, "a", jobs.job("a4")).addErrback(lambda f: None)
    assert q.jobs("a") == 2


def test_queue_cancel_waiting_fails_jobs_not_started() -> None:
    """Stopping fails the jobs still waiting (HasherStopped); running ones finish."""
    q = HashQueue(concurrency=1, max_per_key=5)
    jobs = Jobs()
    running = q.submit(Priority.SIGNIN, "a", jobs.job("a1"))
    waiting = q.submit(Priority.SIGNIN, "a", jobs.job("a2"))
    q.cancel_waiting()
    assert isinstance(waiting.result.value, HasherStopped)
    waiting.addErrback(lambda f: None)
    jobs.finish("a1")
    assert running.result == "a1" and jobs.started == ["a1"] and q.jobs("a") == 0


@pytest_twisted.ensureDeferred
async def test_hasher_refuses_an_address_with_too_many_jobs() -> None:
    """The real hasher queues through its HashQueue: beyond ``jobs_per_address`` jobs of one
    address, verify fails with HasherBusy before any hashing."""
    from twisted.internet import reactor

    hasher = PasswordHasher(reactor, FAST, threads_max=1, jobs_per_address=2)
    hasher.start()
    try:
        phc = await hasher.hash("secret password")
        first = [hasher.verify("secret password", phc, key="192.0.2.1") for _ in range(2)]
        with pytest.raises(HasherBusy):
            await hasher.verify("secret password", phc, key="192.0.2.1")
        assert await defer.gatherResults(first) == [True, True]
        assert await hasher.verify("secret password", phc, key="192.0.2.1") is True
    finally:
        hasher.stop()


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_workers_shut_down_cleanly(tmp_path: Path, signum: str) -> None:
    """Ctrl-C in a terminal (SIGINT), or a service manager stopping the control group
    (SIGTERM), signals the server and its hashing workers at once: the server stops its
    workers itself, so stderr has no KeyboardInterrupt traceback from a
    worker and no "leaked semaphore objects" warning from multiprocessing's resource tracker.
    (A bounded wait for a subprocess: the one place we do not use a fake clock.)"""
    import os
    import select
    import signal
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent("""
        from twisted.internet import reactor
        from twisted.internet.defer import gatherResults

        from chatproto.server.passwords import Argon2Parameters, PasswordHasher
        from tests.server.test_passwords import worker_pid

        if __name__ == "__main__":  # spawned workers import this module too
            hasher = PasswordHasher(reactor, Argon2Parameters(64, 1, 1), processes=2)
            hasher.start()
            reactor.addSystemEventTrigger("before", "shutdown", hasher.stop)
            gatherResults([hasher._run(worker_pid) for _ in range(8)]).addCallback(
                lambda pids: print("ready", flush=True))
            reactor.run()
    """))
    root = Path(__file__).resolve().parents[2]

    def as_in_a_terminal() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background shell may ignore it

    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=root, start_new_session=True,
                            preexec_fn=as_in_a_terminal,
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and proc.stdout.readline() == b"ready\n"
        os.killpg(proc.pid, getattr(signal, signum))
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = stderr.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "leaked semaphore" not in text
    assert "KeyboardInterrupt" not in text and "Traceback" not in text, text
