"""Group commit: batching, per-operation isolation, ack after commit, idempotent appends."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer

from chatproto.storage.database import Database, GroupCommitter, Transaction
from chatproto.storage.store import ChatStore, Draft, StoreError, UnknownUsers


def _insert(txn: Transaction, name: str) -> str:
    txn.execute("INSERT INTO users (name, password_hash, created_ms) VALUES (?, 'h', 0)",
                (name,))
    return name


def _refuse(txn: Transaction, name: str) -> str:
    _insert(txn, name)  # written, then rolled back with its savepoint
    raise StoreError(f"no {name}")


def _boom(txn: Transaction, name: str) -> str:
    raise RuntimeError("a bug, not a refusal")


def _names(txn: Transaction) -> list[str]:
    txn.execute("SELECT name FROM users ORDER BY name")
    return [r[0] for r in txn.fetchall()]


@pytest_twisted.ensureDeferred
async def test_concurrent_writes_share_transactions(database: Database) -> None:
    """Writes submitted while a batch is being written go together in the next transaction:
    100 writes take far fewer than 100 transactions, and each gets its own result in order."""
    committer = GroupCommitter(database, max_batch=64)
    results = await defer.gatherResults(
        [committer.submit(_insert, f"u{i:03}") for i in range(100)])
    assert results == [f"u{i:03}" for i in range(100)]
    assert sum(committer.batch_sizes) == 100
    assert len(committer.batch_sizes) < 10 and max(committer.batch_sizes) <= 64
    assert await database.run_interaction("names", _names) == [f"u{i:03}" for i in range(100)]


@pytest_twisted.ensureDeferred
async def test_a_refusal_fails_alone(database: Database) -> None:
    """An operation raising an isolated error (a refusal) is rolled back alone; the others in
    its batch commit."""
    committer = GroupCommitter(database, isolated=(StoreError,))
    first = committer.submit(_insert, "a")
    ds = [committer.submit(_insert, "b"), committer.submit(_refuse, "c"),
          committer.submit(_insert, "d")]
    await first
    assert await ds[0] == "b" and await ds[2] == "d"
    with pytest.raises(StoreError):
        await ds[1]
    assert await database.run_interaction("names", _names) == ["a", "b", "d"]


@pytest_twisted.ensureDeferred
async def test_an_unexpected_error_fails_the_whole_batch(database: Database) -> None:
    """Any other exception rolls back its whole batch: nothing of it is committed and every
    operation in it fails, so no sender is acknowledged for a write that did not happen."""
    committer = GroupCommitter(database, isolated=(StoreError,))
    first = committer.submit(_insert, "a")
    batch = [committer.submit(_insert, "b"), committer.submit(_boom, "c")]
    await first
    for d in batch:
        with pytest.raises(RuntimeError):
            await d
    assert await database.run_interaction("names", _names) == ["a"]
    assert await committer.submit(_insert, "e") == "e"  # the committer keeps working


@pytest_twisted.ensureDeferred
async def test_results_fire_after_commit(database: Database) -> None:
    """When a write's Deferred fires, another connection already sees the row."""
    committer = GroupCommitter(database)
    seen = []

    def check(_: object) -> defer.Deferred[None]:
        d = database.run_interaction("names", _names)
        d.addCallback(seen.append)
        return d

    await committer.submit(_insert, "x").addCallback(check)
    assert seen == [["x"]]


@pytest_twisted.ensureDeferred
async def test_resend_in_the_same_batch_is_stored_once(store: ChatStore) -> None:
    """Two appends with the same (sender, client_msg_id) in one batch store one message: the
    second reports the first's sequence number as a duplicate and logs nothing."""
    for name in ("alice", "bob"):
        await store.create_user(name, "h", 0)
    draft = Draft("alice", 0, "bob", b"m" * 16, 1, b"hi", None, None, 5)
    warm = store.append_message(Draft("alice", 0, "bob", b"w" * 16, 1, b"w", None, None, 1))
    first, second = store.append_message(draft), store.append_message(draft)
    await warm
    a, b = await first, await second
    assert (a.duplicate, b.duplicate) == (False, True)
    assert a.conv_seq == b.conv_seq == 2 and b.recipients == ()
    assert [e.body for e in await store.read_log("bob", 0, 10)] == [b"w", b"hi"]
    with pytest.raises(UnknownUsers):
        await store.append_message(Draft("alice", 0, "nobody", None, 1, b"x", None, None, 6))
