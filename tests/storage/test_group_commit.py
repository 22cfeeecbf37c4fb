"""Group commit: batching, per-operation isolation, ack after commit, idempotent appends."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from chatproto.storage import append_batch
from chatproto.storage.database import Database, GroupCommitter, Transaction
from chatproto.storage.store import (
    Appended,
    ChatStore,
    DeliveredReceipt,
    Draft,
    StoreError,
    UnknownUsers,
)
from chatproto.wire.messages import GroupAction
from tests.services import empty_database_uri


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

    def execute_prepared(self, name: str, sql: str, params: Any) -> None:
        self.statements += 1
        self._txn.execute_prepared(name, sql, params)

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
    its own. On PostgreSQL that number is 2 (one reads and locks, one writes: two round
    trips)."""
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
    if store.db.engine.arrays:
        assert small == 2
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


def _noop(txn: Transaction) -> None:
    return None


@pytest_twisted.ensureDeferred
async def test_a_transaction_holds_one_run_of_appends(store: ChatStore) -> None:
    """Acks go ahead of appends, so ``[append, ack, append]`` is one transaction with one run
    of appends; a plain operation (a group change) between appends ends the transaction
    before it and gets one of its own, so no transaction locks its rows in two rounds. Every
    result is still that of submission order."""
    for name in ("alice", "bob", "carol"):
        await store.create_user(name, "h", 0)
    gid = (await store.create_group("alice", ["bob"], "g", 1)).group_id
    sizes: list[int] = []
    store.writes.on_batch = sizes.append

    def draft(n: int, group: int = 0) -> Draft:
        return Draft("alice", group, None if group else "bob", n.to_bytes(16, "big"), 1,
                     f"m{n}".encode(), None, None, n)

    block = store.writes.submit(_noop)
    ds = [store.append_message(draft(1)), store.acknowledge("bob", b"d" * 16, 1, 0),
          store.append_message(draft(2, gid)),
          store.conversations.change_group("alice", gid, GroupAction.ADDED, ["carol"], None, 3),
          store.append_message(draft(4, gid)), store.acknowledge("bob", b"d" * 16, 2, 0),
          store.append_message(draft(5))]
    await block
    first, ack1, group1, added, group2, ack2, second = await defer.gatherResults(ds)
    assert sizes == [1, 3, 1, 3]
    assert (first.conv_seq, second.conv_seq) == (1, 2)
    assert (group1.conv_seq, added.conv_seq, group2.conv_seq) == (2, 3, 4)
    # carol was added before the second group message: she has the event and that message
    assert [r[0] for r in group2.recipients] == ["alice", "bob", "carol"]
    assert [r[0] for r in group1.recipients] == ["alice", "bob"]
    assert ack1 == [] and ack2 == [DeliveredReceipt("alice", 0, 1)]


@pytest.mark.postgres
@pytest_twisted.ensureDeferred
async def test_two_nodes_on_one_postgresql_never_deadlock(tmp_path: Path) -> None:
    """Two nodes (two group committers over two pools) on one PostgreSQL database commit
    batches concurrently that touch the same users and conversations in opposite orders,
    with acks and a group change among the appends: no transaction meets a deadlock (or any
    retryable error), and every log and conversation sequence is complete and gapless."""
    with empty_database_uri("postgres", tmp_path) as uri:
        nodes = [Database.from_uri(uri) for _ in range(2)]
        for db in nodes:
            await db.start()
        try:
            await _two_nodes(nodes)
        finally:
            for db in nodes:
                db.close()


async def _two_nodes(nodes: list[Database]) -> None:
    stores = [ChatStore(db, max_batch=24) for db in nodes]
    users = [f"u{i}" for i in range(8)]
    for name in users:
        await stores[0].create_user(name, "h", 0)
    for i, a in enumerate(users):
        await stores[0].create_direct(a, users[(i + 1) % len(users)], 0)
    gid = (await stores[0].create_group(users[0], users[1:], "g", 0)).group_id
    ds: list[defer.Deferred[Any]] = []
    sent = 0
    for node, store in enumerate(stores):
        order = users if node == 0 else users[::-1]
        for r in range(12):
            for i, a in enumerate(order):
                sent += 1
                b = order[(i + 1) % len(order)]  # node 0 sends "up" the ring, node 1 "down"
                ds.append(store.append_message(Draft(
                    a, 0, b, sent.to_bytes(16, "big"), 1, b"x", None, None, sent)))
                ds.append(store.acknowledge(b, bytes([node]) * 16, r * 3, 0))
            sent += 1
            ds.append(store.append_message(Draft(
                order[r % len(order)], gid, None, sent.to_bytes(16, "big"), 1, b"g", None,
                None, sent)))
            if r % 4 == 1:
                ds.append(store.conversations.change_group(
                    users[0], gid, GroupAction.RENAMED, [], f"t{node}{r}", 0))
    results = await defer.gatherResults(ds)
    assert [db.retried for db in nodes] == [Counter(), Counter()]
    appended = [a for a in results if isinstance(a, Appended)]
    assert len(appended) == sent + 6 and not any(a.duplicate for a in appended)  # + renames

    def sequences(txn: Transaction) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        txn.execute("SELECT user_id, COUNT(*), MAX(user_seq) FROM deliveries GROUP BY user_id")
        logs = txn.fetchall()
        txn.execute("SELECT conversation_id, COUNT(*), MAX(conv_seq) FROM messages"
                    " GROUP BY conversation_id")
        return logs, txn.fetchall()

    logs, convs = await nodes[0].run_interaction("sequences", sequences)
    assert all(count == top for _, count, top in logs) and len(logs) == len(users)
    assert all(count == top for _, count, top in convs) and len(convs) == len(users) + 1
    assert sum(count for _, count, _ in convs) == sent + 1 + 6  # + CREATED and the renames


class _HeldDatabase:
    """A database whose transactions end when the test says: records what starts when."""

    def __init__(self, one_connection: bool) -> None:
        self.engine = type("FakeEngine", (), {"one_connection": one_connection})()
        self.events: list[str] = []
        self.running: list[defer.Deferred[list[tuple[bool, Any]]]] = []

    closed = False
    short = False  # answer one result too few (a batch function's bug)

    def run_interaction(self, desc: str, fn: Any,
                        ops: list[Any]) -> defer.Deferred[list[tuple[bool, Any]]]:
        if self.closed:
            raise RuntimeError("Database not started")
        self.events.append(f"begin {[args[0] for _, args in ops]}")
        d: defer.Deferred[list[tuple[bool, Any]]] = defer.Deferred()
        d.addCallback(lambda _: [(True, args[0]) for _, args in ops][self.short:])
        self.running.append(d)
        return d


@pytest.mark.parametrize("one_connection", [False, True])
def test_when_the_next_transaction_starts(one_connection: bool) -> None:
    """With several connections the queued operations start their transaction before the
    committed batch's waiters run (database and reactor overlap); with one connection
    (SQLite) after them, so a read a waiter starts does not queue behind a write. Either
    way, what the waiters submit waits for the transaction after."""
    db = _HeldDatabase(one_connection)
    committer = GroupCommitter(db)  # type: ignore[arg-type]

    def answered(value: str) -> None:
        db.events.append(f"answer {value}")
        if value == "a":
            committer.submit(_insert, "from-a")

    committer.submit(_insert, "a").addCallback(answered)
    committer.submit(_insert, "b").addCallback(answered)  # queued behind the first batch
    db.running.pop(0).callback(None)
    expected = (["begin ['a']", "begin ['b']", "answer a"] if not one_connection
                else ["begin ['a']", "answer a", "begin ['b', 'from-a']"])
    assert db.events == expected
    while db.running:
        db.running.pop(0).callback(None)
    assert [e for e in db.events if e.startswith("answer")] == ["answer a", "answer b"]
    begun = [e for e in db.events if e.startswith("begin")]
    assert begun == expected[:1] + (["begin ['b']", "begin ['from-a']"] if not one_connection
                                    else ["begin ['b', 'from-a']"])


@pytest.mark.parametrize("one_connection", [False, True])
def test_a_batch_that_cannot_run_fails_its_waiters_and_the_next_one_runs(
        one_connection: bool) -> None:
    """A transaction that cannot start (the database is closed) or answers the wrong number
    of results fails its own waiters; the committer does not stay stuck writing."""
    db = _HeldDatabase(one_connection)
    committer = GroupCommitter(db)  # type: ignore[arg-type]
    failures: list[str] = []
    db.closed = True
    committer.submit(_insert, "a").addErrback(lambda f: failures.append("a"))
    assert failures == ["a"] and db.events == []
    db.closed = False
    db.short = True
    committer.submit(_insert, "b").addErrback(lambda f: failures.append("b"))
    db.running.pop(0).callback(None)
    assert failures == ["a", "b"]
    db.short = False
    done: list[str] = []
    committer.submit(_insert, "c").addCallback(done.append)
    db.running.pop(0).callback(None)
    assert done == ["c"] and db.events == ["begin ['b']", "begin ['c']"]
