"""Database access: migrations, transactions, group commit (the engines: :mod:`engines`).

Modelled (much smaller) on synapse's ``storage/database.py`` + ``storage/engines``.

Every piece of SQL in the project uses ``?`` placeholders; the engine converts
them for drivers that need another paramstyle.  All database work goes
through :meth:`Database.run_interaction`, which runs a function in a pool
thread inside one transaction, committing on success, rolling back on error,
and retrying the whole function on transient errors (serialization failures,
deadlocks).
"""

from __future__ import annotations

import importlib.resources
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.storage.engines import SQLITE_MIN_VERSION as SQLITE_MIN_VERSION
from chatproto.storage.engines import Engine as Engine
from chatproto.storage.engines import PostgresEngine as PostgresEngine
from chatproto.storage.engines import SqliteEngine as SqliteEngine
from chatproto.storage.engines import engine_from_uri as engine_from_uri
from chatproto.storage.sql_text import split_sql_script

P = ParamSpec("P")
R = TypeVar("R")

log = Logger()

#: How many times an interaction is attempted when it fails with a
#: retryable error (serialization failure, deadlock, locked database).
MAX_ATTEMPTS = 5

_MIGRATION_RE = re.compile(r"^(\d+)_([A-Za-z0-9_]+)\.sql(?:\.(sqlite|postgres))?$")

def _replace_connection(conn: adbapi.Connection, *, dropped: bool) -> None:
    """Give this pool thread a new database connection.

    When adbapi's own rollback failed it has already closed the connection and removed it
    from the pool; disconnecting it again would raise, so only connect.
    """
    if dropped:
        conn._connection = None  # adbapi's attribute: forget the closed one, then reconnect
    conn.reconnect()


class StorageUnavailable(Exception):
    """The database cannot be reached (or a commit's outcome is unknown); try again later."""


class _PooledConnection(adbapi.Connection):
    """adbapi's pooled connection, but a failure to connect is :class:`StorageUnavailable`
    (it happens before any interaction runs, e.g. a pool thread's first use while the
    database is down), not the driver's own error."""

    def reconnect(self) -> None:
        try:
            super().reconnect()
        except Exception as exc:
            raise StorageUnavailable(
                f"cannot connect to the database ({type(exc).__name__})") from exc


class Transaction:
    """A cursor wrapper handed to interaction functions.

    SQL always uses ``?`` placeholders; new rows' ids come back with ``RETURNING``.
    """

    __slots__ = ("_cursor", "engine", "desc", "_begin")

    def __init__(self, cursor: Any, engine: Engine, desc: str) -> None:
        self._cursor = cursor
        self.engine = engine
        self.desc = desc
        #: The engine's BEGIN, until it goes out with the first statement.
        self._begin = engine.deferred_begin

    @property
    def started(self) -> bool:
        """Whether the transaction has begun on the server (it has, unless BEGIN is
        deferred and no statement was sent yet)."""
        return not self._begin

    def _take_begin(self) -> str:
        begin, self._begin = self._begin, ""
        return begin

    def _begin_alone(self) -> None:
        if self._begin:  # for driver helpers that send statements of their own
            self._cursor.execute(self._take_begin().rstrip("; "))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(self._take_begin() + self.engine.convert_sql(sql), tuple(params))

    def execute_prepared(self, name: str, sql: str, params: Sequence[Any]) -> None:
        """:meth:`execute` for a statement a batch runs every time: PostgreSQL plans it once
        per connection (``PREPARE name``), then only executes it. ``name`` is one
        identifier per distinct ``sql``."""
        self.engine.execute_prepared(self._cursor, name, sql, tuple(params), self._take_begin())

    def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            self._begin_alone()
            self.engine.execute_many(self._cursor, self.engine.convert_sql(sql), rows)

    def insert_rows(self, table: str, columns: Sequence[tuple[str, str]],
                    rows: Iterable[Sequence[Any]], suffix: str = "") -> None:
        """Insert many rows set-based (PostgreSQL: one statement over arrays, ``unnest``);
        ``columns`` are (name, SQL type) pairs, ``suffix`` e.g. an ``ON CONFLICT`` clause."""
        rows = [tuple(r) for r in rows]
        if rows:
            self._begin_alone()
            self.engine.insert_rows(self._cursor, table, columns, rows, suffix)

    def update_rows(self, table: str, column: str, key: str,
                    rows: Iterable[tuple[int, int]]) -> None:
        """Set ``column`` to the value for each (value, key) pair, set-based."""
        pairs = [(int(v), int(k)) for v, k in rows]
        if pairs:
            self._begin_alone()
            self.engine.update_rows(self._cursor, table, column, key, pairs)

    def fetchone(self) -> tuple[Any, ...] | None:
        row = self._cursor.fetchone()
        return None if row is None else tuple(row)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._cursor.fetchall()]

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


class MigrationError(Exception):
    """The database schema cannot be brought up to date."""


def _default_schema_dir() -> Traversable:
    return importlib.resources.files("chatproto.storage").joinpath("schema")


def find_migrations(schema_dir: Traversable | Path, engine_name: str) -> list[tuple[int, str]]:
    """Return ``[(version, sql_text)]`` in order, picking the engine variant.

    For each number, ``NNN_name.sql.<engine>`` wins over ``NNN_name.sql``.
    """
    chosen: dict[int, tuple[int, str, Traversable | Path]] = {}
    for entry in schema_dir.iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m is None:
            continue
        variant = m.group(3)
        if variant is not None and variant != engine_name:
            continue
        version = int(m.group(1))
        rank = 1 if variant else 0
        prev = chosen.get(version)
        if prev is not None:
            if prev[0] == rank:
                raise MigrationError(f"two migrations numbered {version}: {prev[1]}, {entry.name}")
            if prev[0] > rank:
                continue
        chosen[version] = (rank, entry.name, entry)
    return [(v, chosen[v][2].read_text(encoding="utf-8")) for v in sorted(chosen)]


class Database:
    """A connection pool plus migrations; the one way to talk to the database."""

    def __init__(self, engine: Engine, schema_dir: Traversable | Path | None = None) -> None:
        self.engine = engine
        self._schema_dir = schema_dir if schema_dir is not None else _default_schema_dir()
        self._pool: adbapi.ConnectionPool | None = None
        #: Called from the pool thread after every transaction with (desc, seconds).
        self.on_transaction: Callable[[str, float], None] | None = None
        #: Retryable errors met so far (deadlocks, serialization failures, a locked SQLite
        #: file), by exception class name; each cost one re-run of its transaction.
        self.retried: Counter[str] = Counter()
        self._retried_lock = threading.Lock()

    @classmethod
    def from_uri(
        cls, uri: str, *, schema_dir: Traversable | Path | None = None, **kw: Any
    ) -> Database:
        """Build from ``sqlite:PATH`` or ``postgresql://...``; ``kw`` go to the engine."""
        return cls(engine_from_uri(uri, **kw), schema_dir=schema_dir)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Open the pool (if needed) and apply pending migrations."""
        if self._pool is None:
            self._pool = self.engine.make_pool()
            self._pool.connectionFactory = _PooledConnection
        return Deferred.fromCoroutine(self._migrate())

    def close(self) -> None:
        """Close the pool (waits for the pool threads to finish)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # -- interactions --------------------------------------------------------

    def run_interaction(
        self,
        desc: str,
        fn: Callable[Concatenate[Transaction, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[R]:
        """Run ``fn(txn, *args, **kwargs)`` in a pool thread, in one transaction.

        Commits if ``fn`` returns, rolls back if it raises; the whole function
        is re-run (up to :data:`MAX_ATTEMPTS` times) on retryable errors, so
        it must not have side effects outside the database.
        """
        if self._pool is None:
            raise RuntimeError("Database not started")
        d: Deferred[R] = self._pool.runWithConnection(self._new_transaction, desc, fn, args, kwargs)
        return d

    def _new_transaction(
        self,
        conn: adbapi.Connection,
        desc: str,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        engine = self.engine
        attempt = 0
        while True:
            attempt += 1
            start = time.monotonic()
            committing = False
            try:
                cursor = conn.cursor()
            except Exception as exc:
                # The pooled connection died since its last use: take a new one.
                _replace_connection(conn, dropped=False)
                if attempt < MAX_ATTEMPTS:
                    continue
                raise StorageUnavailable(f"[{desc}] no database connection") from exc
            txn = Transaction(cursor, engine, desc)
            try:
                engine.begin(cursor)
                result = fn(txn, *args, **kwargs)
                committing = True
                engine.commit(conn, cursor, txn.started)
                return result
            except BaseException as exc:
                lost = isinstance(exc, StorageUnavailable) or engine.is_disconnect(exc)
                dropped = False
                try:
                    engine.rollback(conn, cursor, txn.started)
                except Exception:
                    lost = dropped = True  # adbapi dropped the connection from its pool
                if lost:
                    try:
                        _replace_connection(conn, dropped=dropped)
                    except Exception as again:
                        raise StorageUnavailable(f"[{desc}] cannot reconnect: {again}") from exc
                    # Before COMMIT nothing happened, so running it again on the new connection
                    # is safe; a lost COMMIT may or may not have committed: say so instead.
                    if not committing and attempt < MAX_ATTEMPTS:
                        log.info("[{desc}] database connection lost; retrying on a new one",
                                 desc=desc)
                        continue
                    raise StorageUnavailable(
                        f"[{desc}] database connection lost"
                        + (" during commit" if committing else "")) from exc
                if engine.is_retryable(exc):
                    with self._retried_lock:
                        self.retried[type(exc).__name__] += 1
                if attempt < MAX_ATTEMPTS and engine.is_retryable(exc):
                    log.info(
                        "[{desc}] transient {error} (attempt {attempt}); retrying",
                        desc=desc,
                        error=type(exc).__name__,
                        attempt=attempt,
                    )
                    continue
                raise
            finally:
                try:
                    cursor.close()
                except Exception:  # noqa: S110 - connection may already be gone
                    pass
                elapsed = time.monotonic() - start
                if self.on_transaction is not None:
                    self.on_transaction(desc, elapsed)
                if elapsed > 1.0:
                    log.warn("[{desc}] took {elapsed:.3f}s", desc=desc, elapsed=elapsed)

    # -- migrations ----------------------------------------------------------

    async def _migrate(self) -> None:
        engine = self.engine
        migrations = find_migrations(self._schema_dir, engine.name)
        applied = await self.run_interaction("prepare_schema_version", _prepare_schema_version)
        known = {v for v, _ in migrations}
        unknown = sorted(set(applied) - known)
        if unknown:
            raise MigrationError(
                f"database has schema versions {unknown} unknown to this code (downgrade?)"
            )
        for version, sql in migrations:
            if version in applied:
                continue
            done = await self.run_interaction(
                f"migrate_{version}", _apply_migration, version, split_sql_script(sql)
            )
            if done:
                log.info(
                    "Applied schema migration {version} to {db}",
                    version=version,
                    db=engine.describe(),
                )


def _prepare_schema_version(txn: Transaction) -> set[int]:
    txn.engine.lock_migrations(txn)
    txn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY NOT NULL,"
        " applied_ms BIGINT NOT NULL)"
    )
    txn.execute("SELECT version FROM schema_version")
    return {int(r[0]) for r in txn.fetchall()}


def _apply_migration(txn: Transaction, version: int, statements: list[str]) -> bool:
    txn.engine.lock_migrations(txn)
    txn.execute("SELECT 1 FROM schema_version WHERE version = ?", (version,))
    if txn.fetchone() is not None:
        return False  # applied concurrently by another process
    for stmt in statements:
        txn.execute(stmt)
    txn.execute(
        "INSERT INTO schema_version (version, applied_ms) VALUES (?, ?)",
        (version, int(time.time() * 1000)),
    )
    return True


#: The segment kind of operations that are neither batch functions nor ``runs_first``.
_PLAIN = object()


class GroupCommitter:
    """Group commit: many small writes from many senders share one transaction.

    ``submit`` queues an operation ``fn(txn, *args)``. When no batch is being written, the
    queue is written at once; while one is, new operations wait and go together in the next
    transaction, at most ``max_batch`` of them. So an idle server commits each write alone
    (no added delay) and a busy one amortises the commit over many: the wait is bounded by
    one transaction, and the batch by ``max_batch``. On an engine with several connections
    the next transaction starts as soon as one commits, before that one's waiters run, so
    the database and the reactor overlap.

    A function with a ``batch`` attribute is called once for a run of consecutive operations
    of that function, as ``fn.batch(txn, [args, ...])``, returning ``(ok, value)`` per
    operation; it must refuse an operation only before writing anything for it. A function
    whose ``runs_first`` attribute is true runs before the rest of its batch (its results
    still come back in submission order): it must not depend on the batch's other writes.
    A transaction holds one run of one batch function, or plain operations, never both
    (:meth:`_take`): a later kind waits for the next transaction.
    Any other operation runs inside its own SAVEPOINT: one that raises one of ``isolated``
    (refusals such as an unknown user) or a unique violation is rolled back alone and fails
    alone; anything else fails the whole batch. Every Deferred fires only
    after the transaction commits, in submission order (acknowledge after commit).
    """

    def __init__(self, db: Database, *, max_batch: int = 256,
                 isolated: tuple[type[BaseException], ...] = ()) -> None:
        self.db = db
        self.max_batch = max_batch
        self.isolated = isolated
        self._queue: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []
        self._writing = False
        #: Called with each batch's size as it is written (metrics).
        self.on_batch: Callable[[int], None] | None = None

    def submit(self, fn: Callable[Concatenate[Transaction, P], R], *args: P.args,
               **kwargs: P.kwargs) -> Deferred[R]:
        if kwargs:
            raise TypeError("GroupCommitter.submit takes positional arguments only")
        d: Deferred[R] = Deferred()
        self._queue.append((fn, args, d))
        if not self._writing:
            self._write()
        return d

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _take(self) -> list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]]:
        """The next transaction's operations, from the head of the queue: the ``runs_first``
        ones plus one segment, either one kind of batch function (its operations become one
        run: ``[append, ack, append]`` is acks, then two appends) or plain operations. The
        next kind waits for the next transaction, so each transaction locks the rows of its
        run in one pass, in id order, and two nodes' transactions cannot deadlock over them.
        """
        kind: object = None
        n = 0
        for fn, _, _ in self._queue:
            if n == self.max_batch:
                break
            if not getattr(fn, "runs_first", False):
                this = fn if getattr(fn, "batch", None) is not None else _PLAIN
                if kind is None:
                    kind = this
                elif this is not kind:
                    break
            n += 1
        batch = self._queue[:n]
        del self._queue[:n]
        return batch

    def _write(self) -> None:
        batch = self._take()
        self._writing = True
        ops = [(fn, args) for fn, args, _ in batch]
        try:
            if self.on_batch is not None:
                self.on_batch(len(batch))
            d = self.db.run_interaction("group commit", self._run_batch, ops)
        except Exception:  # e.g. the database is closed: the batch fails, nothing is lost
            d = defer.fail()

        def finished(outcome: list[tuple[bool, Any]] | Failure) -> None:
            # With several connections, operations already queued start the next transaction
            # before this one's waiters run: the database works on it while the reactor
            # answers and fans out this one (what the waiters submit goes in the transaction
            # after it). With one connection (SQLite) it starts after them, or the reads they
            # start (a replay's next page) would queue behind it.
            early = bool(self._queue) and not self.db.engine.one_connection
            if early:
                self._writing = False
                self._write()
            try:
                if not isinstance(outcome, Failure) and len(outcome) != len(batch):
                    outcome = Failure(RuntimeError(
                        f"a batch of {len(batch)} operations gave {len(outcome)} results"))
                if isinstance(outcome, Failure):
                    for _, _, waiter in batch:
                        waiter.errback(outcome)
                else:
                    for (_, _, waiter), (ok, value) in zip(batch, outcome, strict=True):
                        if ok:
                            waiter.callback(value)
                        else:
                            waiter.errback(value)
            finally:
                if not early:
                    self._writing = False
                    if self._queue:
                        self._write()

        # adbapi answers in a later reactor turn, so each batch's waiters fire after the
        # previous batch's: submission order holds across batches.
        d.addBoth(finished)

    def _run_batch(self, txn: Transaction,
                   ops: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[tuple[bool, Any]]:
        # Operations marked ``runs_first`` (acknowledgements: they only read what earlier
        # commits logged) go ahead of the others, so they never split a run of appends.
        first = [i for i, (fn, _) in enumerate(ops) if getattr(fn, "runs_first", False)]
        if first and len(first) < len(ops):
            chosen = set(first)
            order = first + [i for i in range(len(ops)) if i not in chosen]
            shuffled = self._run_ops(txn, [ops[i] for i in order])
            results: list[tuple[bool, Any]] = [(False, None)] * len(ops)
            for i, result in zip(order, shuffled, strict=True):
                results[i] = result
            return results
        return self._run_ops(txn, ops)

    def _run_ops(self, txn: Transaction,
                 ops: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any]] = []
        i = 0
        while i < len(ops):
            fn, args = ops[i]
            batch_fn = getattr(fn, "batch", None)
            if batch_fn is not None:
                # Consecutive operations of one kind run as one set-based call.
                j = i
                while j < len(ops) and ops[j][0] is fn:
                    j += 1
                results.extend(batch_fn(txn, [a for _, a in ops[i:j]]))
                i = j
                continue
            i += 1
            txn.execute("SAVEPOINT op")
            try:
                value = fn(txn, *args)
            except BaseException as e:
                if not (isinstance(e, self.isolated) or txn.engine.is_unique_violation(e)):
                    raise
                txn.execute("ROLLBACK TO SAVEPOINT op")
                txn.execute("RELEASE SAVEPOINT op")
                results.append((False, e))
                continue
            txn.execute("RELEASE SAVEPOINT op")
            results.append((True, value))
        return results
