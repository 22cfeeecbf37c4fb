"""Archive retention: old messages go once every recipient device has acknowledged them."""

from __future__ import annotations

import pytest_twisted

from chatproto.storage.store import ChatStore, Draft


def _draft(sender: str, to: str, n: int, now_ms: int) -> Draft:
    return Draft(sender, 0, to, n.to_bytes(16, "big"), 1, f"m{n}".encode(), None, None, now_ms)


@pytest_twisted.ensureDeferred
async def test_prune_deletes_old_delivered_messages_only(store: ChatStore) -> None:
    """Before the cutoff and acknowledged by every device of every recipient: deleted with
    their log rows. Unacknowledged by some device, or newer than the cutoff: kept."""
    for name in ("alice", "bob"):
        await store.create_user(name, "h", 0)
    for n in range(1, 5):
        await store.append_message(_draft("alice", "bob", n, 1000 * n))
    # alice's log holds 1..4 (own copies), bob's too. bob's phone acked 1..3, his laptop 1..2;
    # alice's only device acked everything.
    await store.acknowledge("bob", b"p" * 16, 3, 10)
    await store.acknowledge("bob", b"l" * 16, 2, 10)
    await store.acknowledge("alice", b"a" * 16, 4, 10)
    deleted = await store.prune_archive(cutoff_ms=3500, chunk=1)
    assert deleted == 2  # m1 and m2: m3 is past the laptop's cursor, m4 is too new
    assert [e.body for e in await store.read_log("bob", 0, 10)] == [b"m3", b"m4"]
    page, more = await store.history("alice", 0, "bob", 0, 10)
    assert [e.body for e in page] == [b"m4", b"m3"] and not more
    assert await store.prune_archive(cutoff_ms=3500) == 0


@pytest_twisted.ensureDeferred
async def test_prune_keeps_messages_no_device_acknowledged(store: ChatStore) -> None:
    """A user who never acknowledged anything (offline messages) keeps all of them."""
    for name in ("alice", "bob"):
        await store.create_user(name, "h", 0)
    await store.append_message(_draft("alice", "bob", 1, 1))
    await store.acknowledge("alice", b"a" * 16, 1, 10)
    assert await store.prune_archive(cutoff_ms=10**12) == 0
    assert [e.body for e in await store.read_log("bob", 0, 10)] == [b"m1"]
