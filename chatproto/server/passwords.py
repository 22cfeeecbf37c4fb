"""Password hashing with Argon2id, off the reactor thread, with bounded concurrency."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.python.threadpool import ThreadPool

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


class PasswordHasher:
    """Runs Argon2id in its own thread pool, so the reactor never blocks on it.

    The pool size bounds how many hashes run at once; more requests wait in its queue.
    Unknown users are verified against a dummy hash of the same cost, so the answer takes
    the same time whether or not the account exists.
    """

    def __init__(self, reactor: Any, params: Argon2Parameters, threads_max: int = 2) -> None:
        self._reactor = reactor
        self.params = params
        self._pool = ThreadPool(minthreads=0, maxthreads=threads_max, name="argon2id")
        self._dummy = hash_password(os.urandom(16).hex(), params)

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()

    def hash(self, password: str) -> Deferred[str]:
        return threads.deferToThreadPool(
            self._reactor, self._pool, hash_password, password, self.params
        )

    def verify(self, password: str, phc: str | None) -> Deferred[bool]:
        """Fires True only if ``phc`` is a hash of ``password``; None means no such user."""
        if phc is None:
            d = threads.deferToThreadPool(
                self._reactor, self._pool, verify_password, password, self._dummy
            )
            d.addCallback(lambda _: False)
            return d
        return threads.deferToThreadPool(self._reactor, self._pool, verify_password, password, phc)
