"""Password hashing with Argon2id, off the reactor thread, with bounded concurrency.

Passwords are normalised as RFC 8265's OpaqueString profile does (non-ASCII spaces become
U+0020, then Unicode NFC) before they are hashed or checked, so the same password typed on
systems that compose characters differently signs in.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import multiprocessing
import os
import re
import signal
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
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


#: The parameters part of an Argon2id PHC string: ``$argon2id$v=19$m=..,t=..,p=..$``.
_PHC_PARAMETERS = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$")


def phc_parameters(phc: str) -> Argon2Parameters | None:
    """The Argon2id cost a PHC string was made with (None if it is not Argon2id v19)."""
    match = _PHC_PARAMETERS.match(phc)
    if match is None:
        return None
    memory, iterations, lanes = (int(g) for g in match.groups())
    return Argon2Parameters(memory_kib=memory, iterations=iterations, lanes=lanes)


def normalize_password(password: str) -> str:
    """RFC 8265 OpaqueString preparation: every non-ASCII space (Unicode Zs) becomes U+0020,
    then the string is put in Normalization Form C."""
    mapped = "".join(" " if c != " " and unicodedata.category(c) == "Zs" else c
                     for c in password)
    return unicodedata.normalize("NFC", mapped)


def password_policy_error(password: str) -> str | None:
    """Why a new password is refused, or None if it is acceptable (after normalising)."""
    password = normalize_password(password)
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        return f"passwords have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"
    if not password.isprintable():
        return "passwords may not contain control characters"
    return None


def hash_password(password: str, params: Argon2Parameters) -> str:
    """The PHC string for a password (blocking: call it in a thread)."""
    return params.hasher().derive_phc_encoded(normalize_password(password).encode("utf-8"))


def verify_password(password: str, phc: str) -> bool:
    """Whether the password matches the PHC string (blocking, constant-time inside)."""
    try:
        Argon2id.verify_phc_encoded(normalize_password(password).encode("utf-8"), phc)
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

    # Ctrl-C in a terminal signals the whole process group: the server shuts the workers
    # down itself (a KeyboardInterrupt here would leave tracebacks and leaked semaphores).
    # Normally already ignored since the worker started (PasswordHasher._start_workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


#: Seconds between a hashing worker's checks that the server still runs.
WORKER_WATCH_INTERVAL = 0.5


class Priority(enum.IntEnum):
    """Which hashing jobs go first: sign-ins before registrations."""

    SIGNIN = 0
    REGISTER = 1


#: Hashing jobs waiting or running for one client address at most (more: HasherBusy).
JOBS_PER_ADDRESS = 4


class HasherBusy(Exception):
    """The client's address has as many hashing jobs waiting or running as it may have."""


class HasherStopped(Exception):
    """The hasher stopped before the job ran."""


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    key: str | None = field(compare=False)
    run: Callable[[], Deferred[Any]] = field(compare=False)
    done: Deferred[Any] = field(compare=False)


class HashQueue:
    """The order of the hashing jobs (reactor thread only; it does no hashing itself).

    At most ``concurrency`` jobs run at once; the others wait, lower :class:`Priority` first
    and in arrival order within a priority. A key (the client's address) has at most
    ``max_per_key`` jobs waiting or running: one address cannot fill the queue and make
    everyone else's sign-in miss the handshake deadline.
    """

    def __init__(self, concurrency: int, max_per_key: int) -> None:
        self.concurrency = concurrency
        self.max_per_key = max_per_key
        self.running = 0
        self._waiting: list[_Job] = []
        self._seq = itertools.count()
        self._per_key: Counter[str] = Counter()

    def submit(self, priority: Priority, key: str | None,
               run: Callable[[], Deferred[_T]]) -> Deferred[_T]:
        """Run ``run()`` when its turn comes; fires with its result. ``key`` None: no cap."""
        if key is not None:
            if self._per_key[key] >= self.max_per_key:
                return defer.fail(HasherBusy(key))
            self._per_key[key] += 1
        done: Deferred[_T] = Deferred()
        heapq.heappush(self._waiting, _Job(int(priority), next(self._seq), key, run, done))
        self._start_next()
        return done

    def jobs(self, key: str) -> int:
        """Jobs waiting or running for ``key``."""
        return self._per_key[key]

    def cancel_waiting(self) -> None:
        """Fail every job that has not started (the hasher stops)."""
        waiting, self._waiting = self._waiting, []
        for job in waiting:
            self._forget(job.key)
            job.done.errback(Failure(HasherStopped()))

    def _start_next(self) -> None:
        while self.running < self.concurrency and self._waiting:
            job = heapq.heappop(self._waiting)
            self.running += 1
            d = defer.maybeDeferred(job.run)
            d.addBoth(self._finished, job)

    def _finished(self, result: Any, job: _Job) -> None:
        self.running -= 1
        self._forget(job.key)
        self._start_next()
        if isinstance(result, Failure):
            job.done.errback(result)
        else:
            job.done.callback(result)

    def _forget(self, key: str | None) -> None:
        if key is not None:
            self._per_key[key] -= 1
            if self._per_key[key] <= 0:
                del self._per_key[key]


class PasswordHasher:
    """Runs Argon2id off the reactor thread, with bounded concurrency.

    With ``processes`` > 0 the hashes run in that many worker processes (started by
    :meth:`start`): cryptography's Argon2id holds the GIL while it works, so in a thread it
    would stall the reactor and give no parallelism across cores. The thread pool then only
    waits for the workers (waiting releases the GIL). With ``processes`` = 0 hashes run in
    the threads themselves (tests, tiny deployments). ``threads_max`` bounds how many hashes
    run at once either way; more wait in a :class:`HashQueue` (sign-ins first, at most
    ``jobs_per_address`` per client address).

    Unknown users are verified against a dummy hash of the same cost, so the answer takes
    the same time whether or not the account exists.
    """

    def __init__(self, reactor: Any, params: Argon2Parameters, threads_max: int = 2,
                 processes: int = 0, *, jobs_per_address: int = JOBS_PER_ADDRESS) -> None:
        self._reactor = reactor
        self.params = params
        self._pool = ThreadPool(minthreads=0, maxthreads=threads_max, name="argon2id")
        self.queue = HashQueue(threads_max, jobs_per_address)
        self._processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self._dummy = hash_password(os.urandom(16).hex(), params)

    def start(self) -> None:
        """Start the threads and, with ``processes`` > 0, every worker process now."""
        self._pool.start()
        if self._processes > 0 and self._executor is None:
            self._executor = self._start_workers()

    def _start_workers(self) -> ProcessPoolExecutor:
        # spawn, not fork: the server process has threads (database, this pool).
        executor = ProcessPoolExecutor(
            max_workers=self._processes, mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent, initargs=(os.getpid(),))
        # Ctrl-C in a terminal signals the whole process group; the server stops its workers
        # itself. A worker started with SIGINT ignored keeps ignoring it from its first
        # instruction (the initializer's own SIG_IGN comes only after the imports).
        # Each submit with no idle worker starts one more, so all start here, in this thread.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            for _ in range(self._processes):
                executor.submit(os.getpid)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return executor

    def stop(self) -> None:
        """Fail the waiting jobs, let the running ones end, and join the worker processes
        (so nothing is left behind: no process, no semaphore)."""
        self.queue.cancel_waiting()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._pool.stop()

    def _run(self, fn: Callable[..., _T], *args: Any) -> Deferred[_T]:
        if self._processes <= 0:
            return threads.deferToThreadPool(self._reactor, self._pool, fn, *args)
        executor = self._executor
        if executor is None:
            raise HasherStopped("the hasher is not running")
        return threads.deferToThreadPool(
            self._reactor, self._pool, lambda: executor.submit(fn, *args).result())

    def _queued(self, priority: Priority, key: str | None, fn: Callable[..., _T],
                *args: Any) -> Deferred[_T]:
        return self.queue.submit(priority, key, lambda: self._run(fn, *args))

    def hash(self, password: str, *, key: str | None = None,
             priority: Priority = Priority.REGISTER) -> Deferred[str]:
        """The PHC string of ``password`` with the server's parameters. ``key`` is the client
        address the job counts against (None: no per-address cap)."""
        return self._queued(priority, key, hash_password, password, self.params)

    def verify(self, password: str, phc: str | None, *, key: str | None = None) -> Deferred[bool]:
        """Fires True only if ``phc`` is a hash of ``password``; None means no such user.

        Sign-in priority; ``key`` as for :meth:`hash`.
        """
        if phc is None:
            d = self._queued(Priority.SIGNIN, key, verify_password, password, self._dummy)
            d.addCallback(lambda _: False)
            return d
        return self._queued(Priority.SIGNIN, key, verify_password, password, phc)

    def needs_rehash(self, phc: str) -> bool:
        """Whether a stored hash was made with other parameters than the server's."""
        made_with = phc_parameters(phc)
        return made_with is not None and made_with != self.params
