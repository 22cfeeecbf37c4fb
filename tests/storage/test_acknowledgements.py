"""Set-based acknowledgements: a whole batch of DeliveryAcks in a fixed number of statements,
with the same cursors and receipts as one transaction per acknowledgement."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from chatproto.storage import acknowledgements
from chatproto.storage.database import Transaction
from chatproto.storage.store import ChatStore, DeliveredReceipt, Draft, UnknownUsers
from tests.storage.test_group_commit import _CountingTxn


async def _chat(store: ChatStore) -> int:
    """alice, bob, carol; a group of the three; 3 direct messages alice -> bob, 2 carol ->
    bob, 2 group messages (alice, then bob): bob's log holds 7 entries (and the group event)."""
    for name in ("alice", "bob", "carol"):
        await store.create_user(name, "h", 0)
    gid = (await store.create_group("alice", ["bob", "carol"], "g", 1)).group_id
    sends = [("alice", 0, "bob")] * 3 + [("carol", 0, "bob")] * 2 + [
        ("alice", gid, None), ("bob", gid, None)]
    for i, (sender, group, to) in enumerate(sends):
        await store.append_message(Draft(sender, group, to, i.to_bytes(16, "big"), 1, b"x",
                                         None, None, 10 + i))
    return gid


@pytest_twisted.ensureDeferred
async def test_acks_of_one_batch_fold_in_order(store: ChatStore) -> None:
    """Acks submitted together share one transaction and answer as if applied one by one:
    a later ack of the same device starts where the earlier ended, an ack behind the cursor
    yields nothing, another device of the same user has its own cursor, an unknown user is
    refused alone, and an ack past the end of the log stops at the end."""
    gid = await _chat(store)
    end = (await store.sync_position("bob", b"p" * 16)).end_seq
    ds = [
        store.acknowledge("bob", b"p" * 16, 3, 0),  # event + 2 from alice
        store.acknowledge("bob", b"p" * 16, 2, 0),  # behind: nothing
        store.acknowledge("nobody", b"x" * 16, 5, 0),
        store.acknowledge("bob", b"p" * 16, 10_000, 0),  # the rest
        store.acknowledge("bob", b"l" * 16, 4, 0),  # another device, from the start
    ]
    results = await defer.DeferredList(ds, consumeErrors=True)
    first, behind, unknown, rest, laptop = results
    assert first == (True, [DeliveredReceipt("alice", 0, 2)])
    assert behind == (True, [])
    assert not unknown[0] and unknown[1].check(UnknownUsers)
    assert rest[0] and set(rest[1]) == {
        DeliveredReceipt("alice", 0, 3), DeliveredReceipt("carol", 0, 2),
        DeliveredReceipt("alice", gid, 2)}
    assert laptop == (True, [DeliveredReceipt("alice", 0, 3)])
    again = await store.sync_position("bob", b"p" * 16)
    assert again.acked_seq == end
    assert (await store.sync_position("bob", b"l" * 16)).acked_seq == 4
    assert await store.acknowledge("bob", b"p" * 16, end + 5, 0) == []


@pytest_twisted.ensureDeferred
async def test_a_batch_of_acks_costs_the_same_statements_whatever_its_size(
        store: ChatStore) -> None:
    """No savepoint and no statement per ack: 2 acks and 60 acks (many devices, an unknown
    user) take the same number of statements: 4 on SQLite, 2 on PostgreSQL (one reads the
    users and cursors, one moves the cursors and reads the receipts: two round trips)."""
    await _chat(store)

    def acks(n: int) -> list[tuple[str, bytes, int, int]]:
        out = [("bob", i.to_bytes(16, "big"), 1 + i % 7, 0) for i in range(n)]
        return [*out, ("nobody", b"x" * 16, 1, 0)]

    def statements(txn: Transaction, batch: list[tuple[str, bytes, int, int]]) -> int:
        counting = _CountingTxn(txn)
        results = acknowledgements.acknowledge_many(counting, batch)  # type: ignore[arg-type]
        assert [ok for ok, _ in results] == [True] * (len(batch) - 1) + [False]
        return counting.statements

    small = await store.db.run_interaction("small", statements, acks(2))
    large = await store.db.run_interaction("large", statements, acks(60))
    assert small == large == (2 if store.db.engine.arrays else 4)
