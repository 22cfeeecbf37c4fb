"""Password hashing with Argon2id, off the reactor thread, with bounded concurrency."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool

_T = TypeVar("_T")

#: Passwords accepted for new accounts (characters).
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 256


@dataclass(frozen=True)
class Argon2Parameters:
    """Argon2id cost; the defaults are OWASP's minimum (m=19 MiB, t=2, p=1)."""

    memory_kib: int = 19 * 1024
    iterations: int = 2
    lanes: int = 1

    def hasher(self) -> Argon2id:
        return Argon2id(
            salt=os.urandom(16),
            length=32,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        )


def password_policy_error(password: str) -> str | None:
    """Why a new password is refused, or None if it is acceptable."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        return f"passwords have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
    if not password.isprintable():
        return "passwords may not contain control characters"
    return None


def hash_password(password: str, params: Argon2Parameters) -> str:
    """The PHC string for a password (blocking: call it in a thread)."""
    return params.hasher().derive_phc_encoded(password.encode("utf-8"))


def verify_password(password: str, phc: str) -> bool:
    """Whether the password matches the PHC string (blocking, constant-time inside)."""
    try:
        Argon2id.verify_phc_encoded(password.encode("utf-8"), phc)
    except (InvalidKey, ValueError):
        return False
    return True


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: leave when the server process is gone, however it died.

    A killed server (SIGKILL) cannot stop its pool, and a worker never sees its task queue
    close (it holds both ends), so each worker watches its parent instead.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(WORKER_WATCH_INTERVAL)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


#: Seconds between a hashing worker's checks that the server still runs.
WORKER_WATCH_INTERVAL = 0.5


class PasswordHasher:
    """Runs Argon2id off the reactor thread, with bounded concurrency.

    With ``processes`` > 0 the hashes run in that many worker processes (started on first
    use): cryptography's Argon2id holds the GIL while it works, so in a thread it would stall
    the reactor and give no parallelism across cores. The thread pool then only waits for
    the workers (waiting releases the GIL). With ``processes`` = 0 hashes run in the
    threads themselves (tests, tiny deployments). ``threads_max`` bounds how many hashes
    run at once either way; more requests wait in the queue.

    Unknown users are verified against a dummy hash of the same cost, so the answer takes
    the same time whether or not the account exists.
    """

    def __init__(self, reactor: Any, params: Argon2Parameters, threads_max: int = 2,
                 processes: int = 0) -> None:
        self._reactor = reactor
        self.params = params
        self._pool = ThreadPool(minthreads=0, maxthreads=threads_max, name="argon2id")
        self._processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self._dummy = hash_password(os.urandom(16).hex(), params)

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _run(self, fn: Callable[..., _T], *args: Any) -> Deferred[_T]:
        if self._processes <= 0:
            return threads.deferToThreadPool(self._reactor, self._pool, fn, *args)
        if self._executor is None:
            # spawn, not fork: the server process has threads (database, this pool).
            self._executor = ProcessPoolExecutor(
                max_workers=self._processes, mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent, initargs=(os.getpid(),))
        executor = self._executor
        return threads.deferToThreadPool(
            self._reactor, self._pool, lambda: executor.submit(fn, *args).result())

    def hash(self, password: str) -> Deferred[str]:
        return self._run(hash_password, password, self.params)

    def verify(self, password: str, phc: str | None) -> Deferred[bool]:
        """Fires True only if ``phc`` is a hash of ``password``; None means no such user."""
        if phc is None:
            d = self._run(verify_password, password, self._dummy)
            d.addCallback(lambda _: False)
            return d
        return self._run(verify_password, password, phc)
