"""The login limits' counters in the database, so a restart keeps them and server processes
sharing one database share them.

A counter is a row (scope, key) with a fixed window: it counts attempts until
``window_end_ms``; after that it counts as absent (the next attempt starts a new window) and
:meth:`LoginFailureStore.purge` may delete it. Every change is one conditional statement
(an upsert or an update), so concurrent processes never lose a count and never let a full
counter through.

The one other write a sign-in makes, replacing a password hash by a rehash with the server's
current parameters, is here too: it is a compare-and-set the accounts store does not offer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from chatproto.storage.database import Database, Transaction

#: The limit of a counter that counts but never refuses (a column of type INTEGER holds it).
UNLIMITED = 2**31 - 1

# Count one attempt: start a new window when the row is absent or its window has ended,
# else add one, but only while the count is below the limit. When the counter is full the
# conditional update does nothing and RETURNING gives no row.
_RESERVE = (
    "INSERT INTO login_failures (scope, key, window_end_ms, count) VALUES (?, ?, ?, 1)"
    " ON CONFLICT (scope, key) DO UPDATE SET"
    " count = CASE WHEN login_failures.window_end_ms <= ? THEN 1"
    " ELSE login_failures.count + 1 END,"
    " window_end_ms = CASE WHEN login_failures.window_end_ms <= ?"
    " THEN excluded.window_end_ms ELSE login_failures.window_end_ms END"
    " WHERE login_failures.window_end_ms <= ? OR login_failures.count < ?"
    " RETURNING count"
)


@dataclass(frozen=True, slots=True)
class Counter:
    """One counter an attempt counts on: at most ``limit`` attempts per ``window_ms``."""

    scope: str
    key: str
    limit: int
    window_ms: int


class _Full(Exception):
    """Raised inside a reservation to roll back the counts it already made."""

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(retry_after_ms)
        self.retry_after_ms = retry_after_ms


class LoginFailureStore:
    """Attempt counters with fixed windows (table ``login_failures``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def reserve(self, now_ms: int, counters: Sequence[Counter]) -> Deferred[int]:
        """Count one attempt on every counter, or on none of them.

        Fires 0 when counted; else the milliseconds until the latest-ending full counter's
        window ends (at least 1), and nothing was counted.
        """
        d = self.db.run_interaction("reserve_login_attempt", _reserve, now_ms, counters)

        def full(f: Failure) -> int:
            f.trap(_Full)
            assert isinstance(f.value, _Full)
            return f.value.retry_after_ms

        d.addErrback(full)
        return d

    def release(self, now_ms: int, counters: Sequence[tuple[str, str]],
                forget: Sequence[tuple[str, str]] = ()) -> Deferred[None]:
        """Take back one counted attempt of each (scope, key) in ``counters`` whose window
        still runs, and forget the counters in ``forget`` (their window and every attempt
        in it), in one transaction."""

        def txn_fn(txn: Transaction) -> None:
            for scope, key in sorted(counters):
                txn.execute(
                    "UPDATE login_failures SET count = count - 1"
                    " WHERE scope = ? AND key = ? AND window_end_ms > ? AND count > 0",
                    (scope, key, now_ms))
            for scope, key in sorted(forget):
                txn.execute("DELETE FROM login_failures WHERE scope = ? AND key = ?",
                            (scope, key))

        return self.db.run_interaction("release_login_attempt", txn_fn)

    def count(self, now_ms: int, scope: str, key: str) -> Deferred[int]:
        """The attempts counted in the counter's running window (0 if none runs)."""

        def txn_fn(txn: Transaction) -> int:
            txn.execute("SELECT count FROM login_failures"
                        " WHERE scope = ? AND key = ? AND window_end_ms > ?",
                        (scope, key, now_ms))
            row = txn.fetchone()
            return 0 if row is None else int(row[0])

        return self.db.run_interaction("count_login_attempts", txn_fn)

    def purge(self, now_ms: int) -> Deferred[int]:
        """Delete the counters whose window has ended; fires how many were deleted."""

        def txn_fn(txn: Transaction) -> int:
            txn.execute("DELETE FROM login_failures WHERE window_end_ms <= ?", (now_ms,))
            return txn.rowcount

        return self.db.run_interaction("purge_login_counters", txn_fn)

    def replace_password_hash(self, name: str, old_phc: str, new_phc: str) -> Deferred[bool]:
        """Store a rehash of the same password: only if the hash is still ``old_phc`` (a
        password changed meanwhile is kept). Fires whether it was replaced."""

        def txn_fn(txn: Transaction) -> bool:
            txn.execute("UPDATE users SET password_hash = ? WHERE name = ? AND password_hash = ?",
                        (new_phc, name, old_phc))
            return txn.rowcount > 0

        return self.db.run_interaction("replace_password_hash", txn_fn)


def _reserve(txn: Transaction, now_ms: int, counters: Sequence[Counter]) -> int:
    # One order for every process (rows are locked in it), so two reservations never deadlock.
    waits = []
    for c in sorted(counters, key=lambda c: (c.scope, c.key)):
        txn.execute(_RESERVE, (c.scope, c.key, now_ms + c.window_ms, now_ms, now_ms, now_ms,
                               c.limit))
        if txn.fetchone() is None:
            txn.execute("SELECT window_end_ms FROM login_failures WHERE scope = ? AND key = ?",
                        (c.scope, c.key))
            row = txn.fetchone()
            assert row is not None
            waits.append(max(1, int(row[0]) - now_ms))
    if waits:
        raise _Full(max(waits))
    return 0
