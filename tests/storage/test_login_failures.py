"""The login limits' counters in the database (SQLite and PostgreSQL): fixed windows, all or
nothing, atomic under concurrency and shared by every Database on the same data."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from chatproto.storage.database import Database, Transaction
from chatproto.storage.login_failures import UNLIMITED, Counter, LoginFailureStore
from chatproto.storage.store import ChatStore

T0 = 1_700_000_000_000


def account(limit: int = 3, window_ms: int = 60_000, key: str = "alice") -> Counter:
    return Counter("account", key, limit, window_ms)


def address(limit: int = 3, window_ms: int = 60_000, key: str = "192.0.2.1") -> Counter:
    return Counter("ip", key, limit, window_ms)


@pytest_twisted.ensureDeferred
async def test_counts_up_to_the_limit_then_refuses_until_the_window_ends(
        database: Database) -> None:
    """``limit`` reservations succeed (0); the next is refused with the milliseconds left in
    the window, and counts nothing; when the window has ended a new one starts."""
    s = LoginFailureStore(database)
    for i in range(3):
        assert await s.reserve(T0 + i, [account()]) == 0
    assert await s.reserve(T0 + 10_000, [account()]) == 50_000
    assert await s.count(T0 + 10_000, "account", "alice") == 3
    assert await s.reserve(T0 + 60_000, [account()]) == 0
    assert await s.count(T0 + 60_000, "account", "alice") == 1
    assert await s.count(T0, "account", "bob") == 0


@pytest_twisted.ensureDeferred
async def test_all_or_nothing(database: Database) -> None:
    """When one counter of a reservation is full, the others are not counted either; the wait
    is the latest end among the full counters."""
    s = LoginFailureStore(database)
    assert await s.reserve(T0, [address(limit=1, window_ms=90_000)]) == 0
    assert await s.reserve(T0, [account(limit=1, window_ms=30_000)]) == 0
    assert await s.reserve(T0 + 1, [account(limit=5), address(limit=1, window_ms=90_000)]) \
        == 89_999
    assert await s.count(T0 + 1, "account", "alice") == 1
    both_full = [account(limit=1, window_ms=30_000), address(limit=1, window_ms=90_000)]
    assert await s.reserve(T0 + 2, both_full) == 89_998


@pytest_twisted.ensureDeferred
async def test_unlimited_counts_but_never_refuses(database: Database) -> None:
    """A counter with the UNLIMITED limit counts past any limit (the trusted address's
    attempts still count for everyone else)."""
    s = LoginFailureStore(database)
    for _ in range(5):
        assert await s.reserve(T0, [account(limit=UNLIMITED)]) == 0
    assert await s.count(T0, "account", "alice") == 5
    assert await s.reserve(T0, [account(limit=5)]) > 0


@pytest_twisted.ensureDeferred
async def test_release_and_forget(database: Database) -> None:
    """release takes one attempt back (never below 0, never in an ended window) and forgets
    the counters it is told to."""
    s = LoginFailureStore(database)
    await s.reserve(T0, [account(), address()])
    await s.reserve(T0, [account(), address()])
    await s.release(T0, [("account", "alice"), ("ip", "192.0.2.1")])
    assert await s.count(T0, "account", "alice") == 1
    assert await s.count(T0, "ip", "192.0.2.1") == 1
    await s.release(T0, [("ip", "192.0.2.1")])
    await s.release(T0, [("ip", "192.0.2.1")])
    assert await s.count(T0, "ip", "192.0.2.1") == 0
    await s.release(T0, [("ip", "192.0.2.1")], forget=[("account", "alice")])
    assert await s.count(T0, "account", "alice") == 0
    assert await s.reserve(T0 + 70_000, [address()]) == 0
    await s.release(T0 + 130_000, [("ip", "192.0.2.1")])  # its window has ended: untouched
    assert await s.count(T0 + 129_999, "ip", "192.0.2.1") == 1


async def _spray(db: Database, end_ms: int, n: int) -> None:
    def txn_fn(txn: Transaction) -> None:
        txn.execute_many(
            "INSERT INTO login_failures (scope, key, window_end_ms, count) VALUES (?, ?, ?, ?)",
            [("account", f"name{i}", end_ms, 1) for i in range(n)])

    await db.run_interaction("spray", txn_fn)


@pytest_twisted.ensureDeferred
async def test_purge_deletes_only_ended_windows(database: Database) -> None:
    """A locked account stays locked however many other names were tried: 100,000 sprayed
    names (windows still running) are all kept, nothing is evicted; purge deletes exactly
    the windows that have ended."""
    s = LoginFailureStore(database)
    for _ in range(3):
        await s.reserve(T0, [account(window_ms=900_000)])
    await _spray(database, T0 + 600_000, 100_000)
    assert await s.purge(T0 + 1000) == 0
    assert await s.reserve(T0 + 1000, [account(window_ms=900_000)]) == 899_000
    assert await s.purge(T0 + 600_000) == 100_000
    assert await s.reserve(T0 + 600_000, [account(window_ms=900_000)]) == 300_000
    assert await s.purge(T0 + 900_000) == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_reservations_never_pass_the_limit(database_uri: str) -> None:
    """60 reservations at once, from two Database pools on the same data (two server
    processes): exactly ``limit`` succeed, the count is exactly the limit."""
    dbs = [Database.from_uri(database_uri) for _ in range(2)]
    for db in dbs:
        await db.start()
    try:
        stores = [LoginFailureStore(db) for db in dbs]
        results = await defer.gatherResults(
            [stores[i % 2].reserve(T0, [account(limit=10), address(limit=UNLIMITED)])
             for i in range(60)])
        assert sorted(results).count(0) == 10
        assert all(r == 60_000 for r in results if r)
        assert await stores[1].count(T0, "account", "alice") == 10
        assert await stores[0].count(T0, "ip", "192.0.2.1") == 10
    finally:
        for db in dbs:
            db.close()


@pytest_twisted.ensureDeferred
async def test_replace_password_hash_only_if_unchanged(store: ChatStore,
                                                       database: Database) -> None:
    """A rehash replaces the hash it was computed from, and not a password set meanwhile."""
    s = LoginFailureStore(database)
    await store.create_user("alice", "old", 1)
    assert await s.replace_password_hash("alice", "old", "rehashed") is True
    assert await store.get_password_hash("alice") == "rehashed"
    await store.set_password_hash("alice", "set by the admin")
    assert await s.replace_password_hash("alice", "rehashed", "stale") is False
    assert await store.get_password_hash("alice") == "set by the admin"
    assert await s.replace_password_hash("nobody", "a", "b") is False
