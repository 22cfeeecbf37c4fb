"""Tests for chatproto.storage.database: engines, migrations, interactions."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest
import pytest_twisted

from chatproto.storage import database as dbmod
from chatproto.storage.database import (
    Database,
    MigrationError,
    PostgresEngine,
    SqliteEngine,
    StorageUnavailable,
    Transaction,
    find_migrations,
    split_sql_script,
)
from chatproto.storage.lookups import one
from chatproto.storage.sql_text import qmark_to_dollar, qmark_to_format

SCHEMA_DIR = Path(dbmod.__file__).parent / "schema"
TABLES = [
    "users",
    "conversations",
    "members",
    "messages",
    "deliveries",
    "devices",
    "login_failures",
]


def _versions(txn: Transaction) -> list[int]:
    txn.execute("SELECT version FROM schema_version ORDER BY version")
    return [int(r[0]) for r in txn.fetchall()]


def _count(txn: Transaction, table: str) -> int:
    txn.execute(f"SELECT COUNT(*) FROM {table}")
    row = txn.fetchone()
    assert row is not None
    return int(row[0])


def _retryable_error(db: Database) -> Exception:
    if isinstance(db.engine, PostgresEngine):
        import psycopg2.errors

        return psycopg2.errors.SerializationFailure("could not serialize access")
    return sqlite3.OperationalError("database is locked")


# -- pure helpers ---------------------------------------------------------------


def test_qmark_to_format() -> None:
    assert qmark_to_format("SELECT ? , ?") == "SELECT %s , %s"
    assert qmark_to_format("SELECT '?', ? WHERE x LIKE 'a%'") == "SELECT '?', %s WHERE x LIKE 'a%%'"
    assert qmark_to_format("SELECT 'it''s ?', 5 % 2, ?") == "SELECT 'it''s ?', 5 %% 2, %s"
    # cached: same object back for the same string
    assert qmark_to_format("SELECT ?") is qmark_to_format("SELECT ?")


def test_qmark_to_dollar() -> None:
    """Placeholders numbered for PREPARE, each with the cast that follows it (for EXECUTE's
    arguments); a ``?`` in a literal is text, and a cast stops at the type's name."""
    assert qmark_to_dollar("SELECT ?::bigint[], '?', ? AND x = ANY(?::text[]) OR ?::int AND y") == (
        "SELECT $1::bigint[], '?', $2 AND x = ANY($3::text[]) OR $4::int AND y",
        ["::bigint[]", "", "::text[]", "::int"])


@pytest_twisted.ensureDeferred
async def test_prepared_statements_survive_a_rollback(database: Database) -> None:
    """``execute_prepared`` gives the same rows as ``execute``; on PostgreSQL the statement is
    prepared once per connection and stays usable after a transaction that used it rolled
    back (PREPARE is not transactional), so the next batch does not fail or re-prepare."""
    pg = isinstance(database.engine, PostgresEngine)
    sql = "SELECT ?::text, ?::bigint * 2" if pg else "SELECT ?, ? * 2"

    def run(txn: Transaction, value: int, fail: bool) -> tuple[str, int]:
        txn.execute_prepared("t_probe", sql, ("a?", value))
        text, double = one(txn)
        if pg:  # prepared on this connection, once
            txn.execute("SELECT name FROM pg_prepared_statements")
            assert [n for (n,) in txn.fetchall()] == ["t_probe"]
        if fail:
            raise LookupError("roll back")
        return str(text), int(double)

    assert await database.run_interaction("p", run, 2, False) == ("a?", 4)
    with pytest.raises(LookupError):
        await database.run_interaction("p", run, 3, True)
    for i in range(4):
        assert await database.run_interaction("p", run, i, False) == ("a?", 2 * i)


@pytest_twisted.ensureDeferred
async def test_begin_travels_with_the_first_statement(database: Database) -> None:
    """On PostgreSQL the driver is in autocommit mode (it sends no BEGIN of its own) and the
    transaction's BEGIN goes out with its first statement: the statements of one interaction
    still share one transaction, and a transaction that sends nothing sends no COMMIT."""
    pg = isinstance(database.engine, PostgresEngine)

    def xids(txn: Transaction) -> tuple[bool, bool, int, int]:
        before = txn.started
        sql = "SELECT txid_current()" if pg else "SELECT COUNT(*) FROM users"
        txn.execute(sql)
        first = int(one(txn)[0])
        txn.execute(sql)
        return before, txn.started, first, int(one(txn)[0])

    before, after, first, second = await database.run_interaction("xids", xids)
    assert (before, after) == (not pg, True) and first == second
    if pg:
        again = await database.run_interaction("xids", xids)
        assert again[2] != first  # a new transaction
        assert await database.run_interaction(
            "autocommit", lambda txn: txn._cursor.connection.autocommit) is True
        assert await database.run_interaction("nothing", lambda txn: txn.started) is False


def test_engine_convert_sql() -> None:
    assert SqliteEngine("x.db").convert_sql("SELECT ?") == "SELECT ?"
    assert PostgresEngine("postgresql://h/db").convert_sql("SELECT ?") == "SELECT %s"


def test_split_sql_script() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (x TEXT DEFAULT ';''--');  -- trailing
    CREATE INDEX a_x ON a (x);

    """
    assert split_sql_script(script) == [
        "CREATE TABLE a (x TEXT DEFAULT ';''--')",
        "CREATE INDEX a_x ON a (x)",
    ]


def test_from_uri() -> None:
    db = Database.from_uri("sqlite:/tmp/x.db")
    assert isinstance(db.engine, SqliteEngine) and db.engine.path == "/tmp/x.db"
    db = Database.from_uri("sqlite:///tmp/y.db")
    assert isinstance(db.engine, SqliteEngine) and db.engine.path == "/tmp/y.db"
    db = Database.from_uri("sqlite:rel.db", busy_timeout_ms=10)
    assert isinstance(db.engine, SqliteEngine) and db.engine.busy_timeout_ms == 10
    for uri in ("postgresql://u:secret@h/db", "postgres://h/db"):
        db = Database.from_uri(uri, cp_max=3)
        assert isinstance(db.engine, PostgresEngine) and db.engine.cp_max == 3
    assert "secret" not in Database.from_uri("postgresql://u:secret@h/db").engine.describe()
    with pytest.raises(ValueError):
        Database.from_uri("mysql://h/db")
    with pytest.raises(ValueError):
        Database.from_uri("sqlite:")


def test_find_migrations_variants(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("plain1")
    (tmp_path / "002_b.sql").write_text("plain2")
    (tmp_path / "002_b.sql.postgres").write_text("pg2")
    (tmp_path / "003_c.sql.sqlite").write_text("lite3")
    (tmp_path / "README").write_text("ignored")
    assert find_migrations(tmp_path, "sqlite") == [(1, "plain1"), (2, "plain2"), (3, "lite3")]
    assert find_migrations(tmp_path, "postgres") == [(1, "plain1"), (2, "pg2")]
    (tmp_path / "001_dup.sql").write_text("dup")
    with pytest.raises(MigrationError):
        find_migrations(tmp_path, "sqlite")


def test_real_schema_has_both_variants() -> None:
    for engine in ("sqlite", "postgres"):
        versions = [v for v, _ in find_migrations(SCHEMA_DIR, engine)]
        assert versions[0] == 1 and versions == sorted(set(versions))


def test_sqlite_older_than_3_35_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The queries use RETURNING and migration 003 DROP COLUMN (both SQLite 3.35): an older
    SQLite is refused when the pool opens, with the version needed."""
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    with pytest.raises(RuntimeError, match=r"SQLite 3\.35\.0 or newer"):
        SqliteEngine("unused.db").make_pool()


def test_run_interaction_requires_start() -> None:
    db = Database.from_uri("sqlite:unused.db")
    with pytest.raises(RuntimeError):
        db.run_interaction("x", _versions)


# -- migrations -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_database_that_cannot_be_reached_is_storage_unavailable() -> None:
    """Opening a pool connection fails before any interaction runs (the database is down):
    the caller gets StorageUnavailable (a 5xx the client retries), not the driver's error."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    db = Database.from_uri(f"postgresql://postgres@127.0.0.1:{port}/test")
    try:
        with pytest.raises(StorageUnavailable, match="cannot connect to the database"):
            await db.start()
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_migrations_apply_once(database_uri: str) -> None:
    """Every numbered schema file is applied once and recorded; a second start is a no-op."""
    schema_dir = Path(__file__).resolve().parents[2] / "chatproto" / "storage" / "schema"
    expected = sorted({int(p.name[:3]) for p in schema_dir.glob("[0-9][0-9][0-9]_*.sql*")})
    assert expected[:2] == [1, 2]
    db = Database.from_uri(database_uri)
    await db.start()
    try:
        assert await db.run_interaction("v", _versions) == expected
        for table in TABLES:
            assert await db.run_interaction("count", _count, table) == 0
        await db.start()  # starting again is a no-op
        assert await db.run_interaction("v", _versions) == expected
    finally:
        db.close()
    db2 = Database.from_uri(database_uri)
    await db2.start()
    try:
        assert await db2.run_interaction("v", _versions) == expected
    finally:
        db2.close()


@pytest_twisted.ensureDeferred
async def test_failing_migration_rolls_back(database_uri: str, tmp_path: Path) -> None:
    schema = tmp_path / "schema"
    schema.mkdir()
    for f in SCHEMA_DIR.iterdir():
        if f.name.startswith("001_"):
            (schema / f.name).write_text(f.read_text())
    (schema / "002_broken.sql").write_text(
        "CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);\n"
    )
    db = Database.from_uri(database_uri, schema_dir=schema)
    try:
        with pytest.raises(Exception, match="no_such_table"):
            await db.start()
        assert await db.run_interaction("v", _versions) == [1]
        with pytest.raises(Exception, match="half_done"):
            await db.run_interaction("count", _count, "half_done")
    finally:
        db.close()

    # Fix the migration: it applies now and is recorded.
    (schema / "002_broken.sql").write_text("CREATE TABLE half_done (x INTEGER);\n")
    db = Database.from_uri(database_uri, schema_dir=schema)
    try:
        await db.start()
        assert await db.run_interaction("v", _versions) == [1, 2]
        assert await db.run_interaction("count", _count, "half_done") == 0
    finally:
        db.close()


@pytest_twisted.ensureDeferred
async def test_unknown_schema_version_refused(database_uri: str) -> None:
    db = Database.from_uri(database_uri)
    await db.start()

    def bump(txn: Transaction) -> None:
        txn.execute("INSERT INTO schema_version (version, applied_ms) VALUES (?, ?)", (999, 0))

    try:
        await db.run_interaction("bump", bump)
    finally:
        db.close()
    db = Database.from_uri(database_uri)
    try:
        with pytest.raises(MigrationError):
            await db.start()
    finally:
        db.close()


# -- interactions -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_placeholders(database: Database) -> None:
    def q(txn: Transaction) -> tuple[object, ...] | None:
        txn.execute("SELECT ? + ?, '100%', '?', ?", (2, 3, "x%?"))
        return txn.fetchone()

    assert await database.run_interaction("q", q) == (5, "100%", "?", "x%?")


@pytest_twisted.ensureDeferred
async def test_execute_many_and_returning(database: Database) -> None:
    def fill(txn: Transaction) -> list[tuple[object, ...]]:
        txn.execute_many(
            "INSERT INTO users (name, password_hash, created_ms) VALUES (?, ?, ?)",
            [(f"u{i}", "h", i) for i in range(5)],
        )
        txn.execute_many("INSERT INTO users (name, password_hash, created_ms) VALUES (?, ?, ?)", [])
        txn.execute(
            "INSERT INTO conversations (kind, created_ms) VALUES (?, ?) RETURNING id", ("group", 1)
        )
        row = txn.fetchone()
        assert row is not None and int(row[0]) >= 1
        txn.execute("SELECT name, created_ms FROM users ORDER BY created_ms")
        return txn.fetchall()

    rows = await database.run_interaction("fill", fill)
    assert rows == [(f"u{i}", i) for i in range(5)]


@pytest_twisted.ensureDeferred
async def test_failing_interaction_rolls_back(database: Database) -> None:
    class Boom(Exception):
        pass

    def write_then_fail(txn: Transaction) -> None:
        txn.execute(
            "INSERT INTO users (name, password_hash, created_ms) VALUES (?, ?, ?)", ("a", "h", 1)
        )
        assert _count(txn, "users") == 1
        raise Boom()

    with pytest.raises(Boom):
        await database.run_interaction("fail", write_then_fail)
    assert await database.run_interaction("count", _count, "users") == 0

    def bad_sql(txn: Transaction) -> None:
        txn.execute(
            "INSERT INTO users (name, password_hash, created_ms) VALUES (?, ?, ?)", ("b", "h", 1)
        )
        txn.execute("SELECT * FROM no_such_table")

    with pytest.raises(Exception, match="no_such_table"):
        await database.run_interaction("bad", bad_sql)
    # the connection is still usable afterwards and nothing was written
    assert await database.run_interaction("count", _count, "users") == 0


@pytest_twisted.ensureDeferred
async def test_retryable_errors_retry_whole_interaction(database: Database) -> None:
    attempts: list[int] = []
    err = _retryable_error(database)

    def flaky(txn: Transaction) -> str:
        attempts.append(1)
        txn.execute(
            "INSERT INTO users (name, password_hash, created_ms) VALUES (?, ?, ?)",
            ("flaky", "h", len(attempts)),
        )
        if len(attempts) < 3:
            raise err
        return "ok"

    assert await database.run_interaction("flaky", flaky) == "ok"
    assert len(attempts) == 3

    def created(txn: Transaction) -> list[tuple[object, ...]]:
        txn.execute("SELECT created_ms FROM users")
        return txn.fetchall()

    assert await database.run_interaction("c", created) == [(3,)]

    attempts.clear()

    def always(txn: Transaction) -> None:
        attempts.append(1)
        raise err

    with pytest.raises(type(err)):
        await database.run_interaction("always", always)
    assert len(attempts) == dbmod.MAX_ATTEMPTS


@pytest_twisted.ensureDeferred
async def test_other_errors_not_retried(database: Database) -> None:
    attempts: list[int] = []

    def fail(txn: Transaction) -> None:
        attempts.append(1)
        raise ValueError("nope")

    with pytest.raises(ValueError):
        await database.run_interaction("fail", fail)
    assert attempts == [1]


@pytest_twisted.ensureDeferred
async def test_foreign_keys_and_cascades(database: Database) -> None:
    def setup(txn: Transaction) -> None:
        txn.execute_many(
            "INSERT INTO users (name, password_hash, created_ms) VALUES (?, ?, ?)",
            [("alice", "h", 1), ("bob", "h", 1)],
        )
        txn.execute("SELECT id FROM users WHERE name = ?", ("alice",))
        (alice,) = txn.fetchone() or (None,)
        txn.execute("SELECT id FROM users WHERE name = ?", ("bob",))
        (bob,) = txn.fetchone() or (None,)
        txn.execute(
            "INSERT INTO conversations (kind, title, created_ms) VALUES ('group', 't', 1)"
            " RETURNING id"
        )
        (conv,) = txn.fetchone() or (None,)
        txn.execute_many(
            "INSERT INTO members (conversation_id, user_id, role, joined_ms) VALUES (?, ?, ?, 1)",
            [(conv, alice, "owner"), (conv, bob, "member")],
        )
        txn.execute(
            "INSERT INTO messages (conversation_id, conv_seq, sender_id, sender_name,"
            " client_msg_id, created_ms, content_type, body)"
            " VALUES (?, 1, ?, 'alice', ?, 1, 1, ?) RETURNING id",
            (conv, alice, b"\x00cid", b"\x00\xffbody"),
        )
        (msg,) = txn.fetchone() or (None,)
        txn.execute_many(
            "INSERT INTO deliveries (user_id, user_seq, message_id) VALUES (?, 1, ?)",
            [(alice, msg), (bob, msg)],
        )
        txn.execute(
            "INSERT INTO devices (user_id, device_id, acked_seq) VALUES (?, ?, 0)",
            (alice, b"\x01dev"),
        )

    await database.run_interaction("setup", setup)

    def bad_member(txn: Transaction) -> None:
        txn.execute(
            "INSERT INTO members (conversation_id, user_id, joined_ms) VALUES (?, ?, 1)",
            (12345, 67890),
        )

    with pytest.raises(Exception, match="(?i)foreign key"):
        await database.run_interaction("bad_member", bad_member)

    def delete_alice(txn: Transaction) -> None:
        txn.execute("DELETE FROM users WHERE name = ?", ("alice",))

    await database.run_interaction("delete", delete_alice)

    def state(txn: Transaction) -> dict[str, object]:
        txn.execute("SELECT role FROM members")
        members = txn.fetchall()
        txn.execute("SELECT title FROM conversations")
        titles = txn.fetchall()
        txn.execute("SELECT sender_id, sender_name, client_msg_id, body FROM messages")
        messages = [(r[0], r[1], bytes(r[2]), bytes(r[3])) for r in txn.fetchall()]
        return {
            "members": members,
            "titles": titles,
            "messages": messages,
            "deliveries": _count(txn, "deliveries"),
            "devices": _count(txn, "devices"),
        }

    assert await database.run_interaction("state", state) == {
        "members": [("member",)],
        "titles": [("t",)],
        "messages": [(None, "alice", b"\x00cid", b"\x00\xffbody")],
        "deliveries": 1,
        "devices": 0,
    }

    def delete_conv(txn: Transaction) -> None:
        txn.execute("DELETE FROM conversations")

    await database.run_interaction("delete_conv", delete_conv)
    for table in ("members", "messages", "deliveries"):
        assert await database.run_interaction("count", _count, table) == 0


@pytest_twisted.ensureDeferred
async def test_check_constraints(database: Database) -> None:
    def bad_kind(txn: Transaction) -> None:
        txn.execute("INSERT INTO conversations (kind, created_ms) VALUES ('party', 1)")

    with pytest.raises(Exception, match="(?i)check"):
        await database.run_interaction("bad_kind", bad_kind)

    def dup_direct(txn: Transaction) -> None:
        for _ in range(2):
            txn.execute(
                "INSERT INTO conversations (kind, created_ms, direct_key) VALUES ('direct', 1, ?)",
                ("a\nb",),
            )

    with pytest.raises(Exception) as info:
        await database.run_interaction("dup_direct", dup_direct)
    assert database.engine.is_unique_violation(info.value)


@pytest.mark.postgres
@pytest_twisted.ensureDeferred
async def test_dead_pooled_connection_is_replaced(tmp_path: Path) -> None:
    """When PostgreSQL drops the pool's connection (backend terminated), the next interaction
    runs on a new connection instead of failing; nothing is retried after a COMMIT was sent."""
    import uuid

    import psycopg2

    from tests.services import PgSchema, require_postgres

    dsn = require_postgres()
    schema = PgSchema(dsn)
    tag = f"chatproto_dbtest_{uuid.uuid4().hex[:10]}"
    db = Database.from_uri(f"{schema.uri}&application_name={tag}", cp_max=1)
    try:
        await db.start()
        assert await db.run_interaction("v", _versions)
        admin = psycopg2.connect(dsn)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = %s", (tag,))
            assert cur.rowcount == 1
        admin.close()
        assert await db.run_interaction("v", _versions)  # on a fresh connection
    finally:
        db.close()
        schema.drop()
