"""Group commit: batching, per-operation isolation, ack after commit, idempotent appends."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from chatproto.storage import append_batch
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
    sizes: list[int] = []
    committer.on_batch = sizes.append
    results = await defer.gatherResults(
        [committer.submit(_insert, f"u{i:03}") for i in range(100)])
    assert results == [f"u{i:03}" for i in range(100)]
    assert sum(sizes) == 100
    assert len(sizes) < 10 and max(sizes) <= 64
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


@pytest_twisted.ensureDeferred
async def test_mixed_batch_refuses_alone_and_keeps_logs_gapless(store: ChatStore) -> None:
    """One batch mixing valid direct and group sends with an unknown recipient, an unknown
    group and a non-member: each refusal fails alone, everything else is stored, and every
    user's log and every conversation's sequence is contiguous and in submission order."""
    from chatproto.storage.store import NotAMember, UnknownGroup

    for name in ("alice", "bob", "carol", "mallory"):
        await store.create_user(name, "h", 0)
    group = await store.create_group("alice", ["bob", "carol"], "g", 1)
    gid = group.group_id

    def draft(sender: str, to: str | None, gid_: int, n: int) -> Draft:
        return Draft(sender, gid_, to, n.to_bytes(16, "big"), 1, f"m{n}".encode(), None, None, n)

    ds = [
        store.append_message(draft("alice", "bob", 0, 1)),
        store.append_message(draft("alice", "nobody", 0, 2)),
        store.append_message(draft("bob", None, gid, 3)),
        store.append_message(draft("mallory", None, gid, 4)),
        store.append_message(draft("carol", None, gid + 99, 5)),
        store.append_message(draft("bob", "alice", 0, 6)),
        store.append_message(draft("carol", None, gid, 7)),
    ]
    results = []
    for d in ds:
        try:
            results.append(await d)
        except Exception as e:  # noqa: BLE001 - the test inspects which one failed
            results.append(e)
    assert isinstance(results[1], UnknownUsers) and results[1].names == ("nobody",)
    assert isinstance(results[3], NotAMember)
    assert isinstance(results[4], UnknownGroup)
    assert [r.conv_seq for r in (results[0], results[5])] == [1, 2]  # direct alice<->bob
    assert [r.conv_seq for r in (results[2], results[6])] == [2, 3]  # after the CREATED event
    for name, bodies in (("alice", [b"m1", b"m3", b"m6", b"m7"]), ("bob", [b"m1", b"m3", b"m6",
                                                                           b"m7"]),
                         ("carol", [b"m3", b"m7"])):
        log = await store.read_log(name, 0, 100)
        assert [e.user_seq for e in log] == list(range(1, len(log) + 1))
        assert [e.body for e in log if e.content_type == 1] == bodies


class _CountingTxn:
    """A Transaction that counts the statements sent through it."""

    def __init__(self, txn: Transaction) -> None:
        self._txn = txn
        self.engine = txn.engine
        self.statements = 0

    def execute(self, sql: str, params: Any = ()) -> None:
        self.statements += 1
        self._txn.execute(sql, params)

    def execute_many(self, sql: str, rows: Any) -> None:
        self.statements += 1
        self._txn.execute_many(sql, rows)

    def insert_rows(self, *args: Any) -> None:
        self.statements += 1
        self._txn.insert_rows(*args)

    def update_rows(self, *args: Any) -> None:
        self.statements += 1
        self._txn.update_rows(*args)

    def fetchone(self) -> Any:
        return self._txn.fetchone()

    def fetchall(self) -> Any:
        return self._txn.fetchall()


@pytest_twisted.ensureDeferred
async def test_a_batch_of_appends_costs_the_same_statements_whatever_its_size(
        store: ChatStore) -> None:
    """The batched append is set-based: 4 messages and 160 messages (direct chats, a group,
    resends, a refusal) take the same number of statements, so no message costs a query of
    its own."""
    for name in ("alice", "bob", "carol"):
        await store.create_user(name, "h", 0)
    gid = (await store.create_group("alice", ["bob", "carol"], "g", 1)).group_id
    for peer in ("bob", "carol"):
        await store.create_direct("alice", peer, 1)

    def drafts(n: int, start: int) -> list[tuple[Draft]]:
        out = []
        for i in range(start, start + n):
            kind = i % 4
            cmid = (i if kind != 3 else start).to_bytes(16, "big")  # kind 3: resends
            out.append((Draft("alice", gid if kind == 1 else 0,
                              None if kind == 1 else ("bob", "carol")[i % 2], cmid, 1,
                              b"x", None, None, i),))
        out.append((Draft("alice", 0, "nobody", None, 1, b"x", None, None, 0),))
        return out

    def statements(txn: Transaction, batch: list[tuple[Draft]]) -> int:
        counting = _CountingTxn(txn)
        results = append_batch.append_messages(counting, batch)  # type: ignore[arg-type]
        assert [ok for ok, _ in results] == [True] * (len(batch) - 1) + [False]
        return counting.statements

    small = await store.db.run_interaction("small", statements, drafts(4, 1000))
    large = await store.db.run_interaction("large", statements, drafts(160, 2000))
    assert small == large
    log = await store.read_log("bob", 0, 1000)
    assert [e.user_seq for e in log] == list(range(1, len(log) + 1))


@pytest_twisted.ensureDeferred
async def test_operations_marked_runs_first_do_not_split_a_run(database: Database) -> None:
    """An operation marked ``runs_first`` (an acknowledgement) submitted between two appends
    runs ahead of them, so the appends stay one set-based call; every result still comes
    back to its own submitter, in submission order."""
    calls: list[Any] = []

    def append(txn: Transaction, name: str) -> str:
        raise AssertionError("called through .batch only")

    def append_many(txn: Transaction, batch: list[tuple[str]]) -> list[tuple[bool, str]]:
        calls.append([name for (name,) in batch])
        return [(True, name.upper()) for (name,) in batch]

    def ack(txn: Transaction, n: int) -> int:
        calls.append(n)
        return n * 10

    append.batch = append_many  # type: ignore[attr-defined]
    ack.runs_first = True  # type: ignore[attr-defined]
    committer = GroupCommitter(database)
    first = committer.submit(append, "x")  # written alone; the rest queue behind it
    rest = [committer.submit(append, "a"), committer.submit(ack, 1),
            committer.submit(append, "b"), committer.submit(ack, 2)]
    fired: list[Any] = []
    for d in rest:
        d.addCallback(fired.append)
    assert await first == "X"
    await defer.gatherResults(rest)
    assert calls == [["x"], 1, 2, ["a", "b"]]
    assert fired == ["A", 10, "B", 20]
