"""Database engines: what differs between SQLite and PostgreSQL (drivers, placeholders,
transactions, locks, retryable errors, set-based statements over arrays).

Modelled (much smaller) on synapse's ``storage/engines``. Re-exported by :mod:`database`.
"""

from __future__ import annotations

import abc
import re
import sqlite3
import weakref
from collections.abc import Sequence
from typing import Any, Protocol

from twisted.enterprise import adbapi

from chatproto.storage.sql_text import qmark_to_dollar, qmark_to_format

#: The oldest SQLite the queries and migrations work with.
SQLITE_MIN_VERSION = (3, 35, 0)


class Executes(Protocol):
    """What an engine's hooks need of a transaction (:class:`database.Transaction`)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...


class Engine(abc.ABC):
    """What differs between database backends."""

    #: Suffix of a SELECT that locks the rows it reads until the transaction ends.
    for_update = ""

    #: Short name; also the schema file variant suffix (``001_x.sql.<name>``).
    name: str = ""
    #: Whether ``?`` placeholders must be converted to ``%s``.
    converts_placeholders: bool = False
    #: Whether the pool has a single connection, which reads and writes share (SQLite).
    one_connection: bool = False
    #: Whether statements take arrays (``= ANY(?)``, ``unnest``, data-modifying ``WITH``): the
    #: batch writers then send a whole phase of a batch as one statement (one round trip).
    arrays: bool = False

    @abc.abstractmethod
    def make_pool(self) -> adbapi.ConnectionPool:
        """The adbapi pool for this backend."""

    def convert_sql(self, sql: str) -> str:
        return qmark_to_format(sql) if self.converts_placeholders else sql

    #: Sent ahead of a transaction's first statement, in the same round trip, when the
    #: engine starts transactions that way (PostgreSQL: ``BEGIN;``); else :meth:`begin`.
    deferred_begin: str = ""

    def begin(self, cursor: Any) -> None:  # noqa: B027 - an optional hook
        """Start a transaction on a fresh cursor (if the driver does not)."""

    def commit(self, conn: Any, cursor: Any, started: bool) -> None:
        """End the transaction (``started``: a statement was sent since it began)."""
        conn.commit()

    def rollback(self, conn: Any, cursor: Any, started: bool) -> None:
        """Roll the transaction back; raises if the connection is gone (adbapi then drops
        it from its pool)."""
        conn.rollback()

    def lock_migrations(self, txn: Executes) -> None:  # noqa: B027 - an optional hook
        """Serialize concurrent migration runs (called inside the transaction)."""

    def is_retryable(self, exc: BaseException) -> bool:
        return False

    def is_disconnect(self, exc: BaseException) -> bool:
        """Whether the error means the connection itself is gone."""
        return False

    def is_unique_violation(self, exc: BaseException) -> bool:
        return False

    def execute_many(self, cursor: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        cursor.executemany(sql, rows)

    def execute_prepared(self, cursor: Any, name: str, sql: str, params: Sequence[Any],
                         begin: str = "") -> None:
        """Run ``sql`` (after ``begin``, :attr:`deferred_begin` or nothing), planned once per
        connection where the engine can (PostgreSQL)."""
        cursor.execute(begin + self.convert_sql(sql), params)

    def insert_rows(self, cursor: Any, table: str, columns: Sequence[tuple[str, str]],
                    rows: Sequence[Sequence[Any]], suffix: str = "") -> None:
        """``INSERT INTO table`` many rows; ``columns`` are (name, SQL type) pairs and
        ``suffix`` follows the rows (e.g. ``ON CONFLICT ...``). An executemany here."""
        marks = ", ".join("?" * len(columns))
        names = ", ".join(c for c, _ in columns)
        sql = f"INSERT INTO {table} ({names}) VALUES ({marks}){suffix}"  # noqa: S608 - our names
        self.execute_many(cursor, self.convert_sql(sql), rows)

    def update_rows(self, cursor: Any, table: str, column: str, key: str,
                    rows: Sequence[tuple[int, int]]) -> None:
        """``UPDATE table SET column = value WHERE key = k`` for many (value, k) integer
        pairs. An executemany here."""
        sql = f"UPDATE {table} SET {column} = ? WHERE {key} = ?"  # noqa: S608 - our names
        self.execute_many(cursor, self.convert_sql(sql), rows)

    def describe(self) -> str:
        return self.name


class SqliteEngine(Engine):
    name = "sqlite"
    one_connection = True
    converts_placeholders = False
    #: BEGIN IMMEDIATE already holds the database's write lock.
    for_update = ""

    # Extended result codes (sqlite3 module exposes them since 3.11).
    _UNIQUE_CODES = frozenset({1555, 2067})  # SQLITE_CONSTRAINT_PRIMARYKEY, _UNIQUE

    def __init__(self, path: str, busy_timeout_ms: int = 5000, durable: bool = True) -> None:
        if not path:
            raise ValueError("empty SQLite database path")
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        #: FULL syncs the WAL at every commit (an acknowledged message survives a power cut);
        #: NORMAL syncs only at checkpoints (it survives a crash of the process, not of the OS).
        self.synchronous = "FULL" if durable else "NORMAL"

    def _open(self, conn: sqlite3.Connection) -> None:
        # We manage transactions ourselves (BEGIN IMMEDIATE in begin()), so
        # that DDL in migrations is transactional too.
        conn.isolation_level = None
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")

    def make_pool(self) -> adbapi.ConnectionPool:
        if sqlite3.sqlite_version_info < SQLITE_MIN_VERSION:
            raise RuntimeError(
                "SQLite {} or newer is needed (for RETURNING and ALTER TABLE DROP COLUMN);"
                " this Python has {}".format(".".join(map(str, SQLITE_MIN_VERSION)),
                                             sqlite3.sqlite_version))
        return adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            cp_min=1,
            cp_max=1,
            check_same_thread=False,
            cp_openfun=self._open,
        )

    def begin(self, cursor: Any) -> None:  # noqa: B027 - an optional hook
        # IMMEDIATE takes the write lock up front: no lock-upgrade failures
        # when another process (e.g. the admin tool) shares the file.
        cursor.execute("BEGIN IMMEDIATE")

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

    def is_unique_violation(self, exc: BaseException) -> bool:
        if not isinstance(exc, sqlite3.IntegrityError):
            return False
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code in self._UNIQUE_CODES
        return str(exc).startswith("UNIQUE constraint failed")

    def describe(self) -> str:
        return f"sqlite:{self.path}"


class PostgresEngine(Engine):
    name = "postgres"
    converts_placeholders = True
    arrays = True
    #: Row locks for counters read and then written back in one transaction. NO KEY UPDATE:
    #: no key changes, so other transactions' foreign-key checks (KEY SHARE, e.g. an ack's
    #: new device row of a user) go through instead of queueing into a deadlock.
    for_update = " FOR NO KEY UPDATE"

    #: Arbitrary key for the migration advisory lock.
    _MIGRATION_LOCK_KEY = 0x63686174  # "chat"

    def __init__(self, dsn: str, cp_min: int = 1, cp_max: int = 5,
                 durable: bool = True) -> None:
        import psycopg2
        import psycopg2.errors
        import psycopg2.extensions
        import psycopg2.extras

        self._psycopg2 = psycopg2
        self._retryable: tuple[type[BaseException], ...] = (
            psycopg2.errors.SerializationFailure,
            psycopg2.errors.DeadlockDetected,
        )
        self._unique: type[BaseException] = psycopg2.errors.UniqueViolation
        self._execute_batch = psycopg2.extras.execute_batch
        # READ COMMITTED: sequence counters are taken with `UPDATE ... SET next_seq = next_seq + 1
        # RETURNING`, which waits for the row lock and then sees the committed value. Under
        # REPEATABLE READ every concurrent sender to one user would fail and retry.
        self._isolation = psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED
        self.dsn = dsn
        self.cp_min = cp_min
        self.cp_max = cp_max
        #: on: COMMIT returns once the WAL is flushed to disk, whatever the server's default;
        #: off: up to 3 x wal_writer_delay of commits may be lost if PostgreSQL's host crashes.
        self.synchronous_commit = "on" if durable else "off"
        #: Per driver connection: its prepared statements' names -> their arguments' casts.
        self._prepared: weakref.WeakKeyDictionary[Any, dict[str, list[str]]] = (
            weakref.WeakKeyDictionary())

    #: psycopg2 would send its own BEGIN as a round trip before the first statement; in
    #: autocommit mode we send it with that statement and end the transaction ourselves.
    deferred_begin = "BEGIN; "

    def _open(self, conn: Any) -> None:
        conn.set_session(isolation_level=self._isolation, autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"SET SESSION synchronous_commit = {self.synchronous_commit}")

    def commit(self, conn: Any, cursor: Any, started: bool) -> None:
        if started:
            cursor.execute("COMMIT")

    def rollback(self, conn: Any, cursor: Any, started: bool) -> None:
        if started:
            try:
                cursor.execute("ROLLBACK")
            except Exception:  # noqa: S110 - a dead connection: adbapi's rollback below finds it
                pass
        # psycopg2's own rollback does nothing in autocommit mode; adbapi's then checks the
        # connection with ``SELECT 1`` and drops it from the pool (raising) if it is gone.
        conn.rollback()

    def make_pool(self) -> adbapi.ConnectionPool:
        return adbapi.ConnectionPool(
            "psycopg2",
            self.dsn,
            cp_min=self.cp_min,
            cp_max=self.cp_max,
            cp_reconnect=True,
            cp_openfun=self._open,
        )

    def lock_migrations(self, txn: Executes) -> None:  # noqa: B027 - an optional hook
        txn.execute("SELECT pg_advisory_xact_lock(?)", (self._MIGRATION_LOCK_KEY,))

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, self._retryable)

    def is_disconnect(self, exc: BaseException) -> bool:
        # InterfaceError: "connection already closed"; a bare OperationalError (not one of
        # its subclasses such as SerializationFailure) is how a dropped backend shows up.
        return isinstance(exc, self._psycopg2.InterfaceError) or (
            type(exc) is self._psycopg2.OperationalError)

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, self._unique)

    def execute_many(self, cursor: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._execute_batch(cursor, sql, rows)

    def execute_prepared(self, cursor: Any, name: str, sql: str, params: Sequence[Any],
                         begin: str = "") -> None:
        # A server-side prepared statement: parsed and planned once per connection, then
        # EXECUTEd (the per-batch statements spent more time being planned than run). PREPARE
        # is its own round trip, once, so a failed PREPARE is never taken for a done one; a
        # prepared statement outlives a rollback (it is not transactional).
        conn = cursor.connection
        prepared = self._prepared.setdefault(conn, {})
        casts = prepared.get(name)
        if casts is None:
            text, casts = qmark_to_dollar(sql)
            cursor.execute(f"PREPARE {name} AS {text}".replace("%", "%%"))
            prepared[name] = casts
        cursor.execute(f"{begin}EXECUTE {name} ({', '.join(f'%s{c}' for c in casts)})", params)

    def insert_rows(self, cursor: Any, table: str, columns: Sequence[tuple[str, str]],
                    rows: Sequence[Sequence[Any]], suffix: str = "") -> None:
        # One statement, one plan, one round trip: the rows travel as one array per column.
        arrays = ", ".join(f"%s::{t}[]" for _, t in columns)
        names = ", ".join(c for c, _ in columns)
        cursor.execute(f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}){suffix}",  # noqa: S608
                       [list(col) for col in zip(*rows, strict=True)])

    def update_rows(self, cursor: Any, table: str, column: str, key: str,
                    rows: Sequence[tuple[int, int]]) -> None:
        cursor.execute(f"UPDATE {table} SET {column} = v.value FROM unnest(%s::bigint[],"  # noqa: S608
                       f" %s::bigint[]) AS v (value, k) WHERE {table}.{key} = v.k",
                       [[v for v, _ in rows], [k for _, k in rows]])

    def describe(self) -> str:
        # Never show a password that might be in the DSN.
        return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", self.dsn)


def engine_from_uri(uri: str, **kw: Any) -> Engine:
    """``sqlite:PATH`` (also ``sqlite:///abs/path``) or ``postgresql://...``."""
    if uri.startswith("sqlite:"):
        path = uri[len("sqlite:") :]
        if path.startswith("///"):
            path = path[2:]
        return SqliteEngine(path, **kw)
    if uri.startswith(("postgresql://", "postgres://")):
        return PostgresEngine(uri, **kw)
    raise ValueError(f"unsupported database URI scheme: {uri.split(':', 1)[0]!r}")
