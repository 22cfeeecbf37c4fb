"""Schema migrations applied to databases that hold data: rows survive, on both engines."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest_twisted

from chatproto.storage import database as dbmod
from chatproto.storage.database import Database, Transaction
from chatproto.storage.store import ChatStore

SCHEMA_DIR = Path(dbmod.__file__).parent / "schema"


def _schema_up_to(tmp_path: Path, last: int) -> Path:
    """A schema directory with the real migrations numbered up to ``last``."""
    schema = tmp_path / f"schema_{last}"
    schema.mkdir()
    for f in SCHEMA_DIR.iterdir():
        if f.name[:3].isdigit() and int(f.name[:3]) <= last:
            shutil.copy(f, schema / f.name)
    return schema


def _fill_002(txn: Transaction) -> None:
    """Data as a server on schema 002 wrote it: a creator on each conversation, a last-seen
    time on each device."""
    txn.execute_many("INSERT INTO users (name, password_hash, created_ms, next_seq)"
                     " VALUES (?, 'h', 1, 2)", [("alice",), ("bob",)])
    txn.execute("SELECT id FROM users ORDER BY name")
    alice, bob = (int(r[0]) for r in txn.fetchall())
    txn.execute("INSERT INTO conversations (kind, title, creator_id, created_ms, next_seq)"
                " VALUES ('group', 'old group', ?, 1, 2) RETURNING id", (alice,))
    (group,) = txn.fetchone() or (None,)
    txn.execute("INSERT INTO conversations (kind, creator_id, created_ms, next_seq, direct_key)"
                " VALUES ('direct', ?, 1, 0, ?)", (bob, "alice\nbob"))
    txn.execute_many("INSERT INTO members (conversation_id, user_id, role, joined_ms)"
                     " VALUES (?, ?, ?, 1)", [(group, alice, "owner"), (group, bob, "member")])
    for seq, body in ((1, b"first"), (2, b"second")):
        txn.execute("INSERT INTO messages (conversation_id, conv_seq, sender_id, sender_name,"
                    " created_ms, content_type, body) VALUES (?, ?, ?, 'alice', 1, 1, ?)"
                    " RETURNING id", (group, seq, alice, body))
        (mid,) = txn.fetchone() or (None,)
        txn.execute_many("INSERT INTO deliveries (user_id, user_seq, message_id)"
                         " VALUES (?, ?, ?)", [(alice, seq, mid), (bob, seq, mid)])
    txn.execute("INSERT INTO devices (user_id, device_id, acked_seq, last_seen_ms)"
                " VALUES (?, ?, 1, 12345)", (bob, b"phone"))


def _columns(txn: Transaction, table: str) -> set[str]:
    if txn.engine.name == "sqlite":
        txn.execute("SELECT name FROM pragma_table_info(?)", (table,))
    else:
        txn.execute("SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = ?", (table,))
    return {str(r[0]) for r in txn.fetchall()}


def _rows(txn: Transaction) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for table, cols in (("users", "name, next_seq"), ("conversations", "kind, title, next_seq"),
                        ("members", "role"), ("messages", "conv_seq, body"),
                        ("deliveries", "user_seq"), ("devices", "device_id, acked_seq")):
        txn.execute(f"SELECT {cols} FROM {table} ORDER BY {cols}")  # noqa: S608
        out[table] = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                      for r in txn.fetchall()]
    return out


def _indexes(txn: Transaction) -> set[str]:
    if txn.engine.name == "sqlite":
        txn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    else:
        txn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    return {str(r[0]) for r in txn.fetchall()}


@pytest_twisted.ensureDeferred
async def test_003_drops_unread_columns_and_keeps_every_row(database_uri: str,
                                                           tmp_path: Path) -> None:
    """A database made by 001+002, with data in it, takes migration 003: creator_id (and its
    index) and devices.last_seen_ms are gone, every row is still there, and the store works
    on it (a device's cursor moves on, the log reads, a new group is created)."""
    old = Database.from_uri(database_uri, schema_dir=_schema_up_to(tmp_path, 2))
    await old.start()
    try:
        await old.run_interaction("fill", _fill_002)
        before = await old.run_interaction("rows", _rows)
        assert "conversations_creator_idx" in await old.run_interaction("idx", _indexes)
    finally:
        old.close()

    db = Database.from_uri(database_uri)
    await db.start()
    try:
        assert await db.run_interaction("rows", _rows) == before
        assert "creator_id" not in await db.run_interaction("c", _columns, "conversations")
        assert "last_seen_ms" not in await db.run_interaction("c", _columns, "devices")
        assert "last_seen_ms" in await db.run_interaction("c", _columns, "users")
        assert "conversations_creator_idx" not in await db.run_interaction("idx", _indexes)
        store = ChatStore(db)
        assert await store.acknowledge("bob", b"phone", 2, 99) != []
        assert (await store.sync_position("bob", b"phone")).acked_seq == 2
        assert [e.body for e in await store.read_log("bob", 0, 10)] == [b"first", b"second"]
        created = await store.create_group("bob", ["alice"], "new group", 100)
        assert created.conv_seq == 1
    finally:
        db.close()
