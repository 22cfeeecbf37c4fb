"""Durable means on disk: what a commit waits for, by default and with --durability relaxed;
and the tap's options of the resource bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.python import usage

from chatproto.server.limits import LimitSettings
from chatproto.server.tap import Options
from chatproto.storage.database import Database, Transaction
from tests.services import BACKENDS, empty_database_uri


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def _setting(txn: Transaction) -> Any:
    if txn.engine.name == "sqlite":
        txn.execute("PRAGMA synchronous")
    else:
        txn.execute("SHOW synchronous_commit")
    row = txn.fetchone()
    assert row is not None
    return row[0]


#: (SQLite PRAGMA synchronous, PostgreSQL synchronous_commit) by durability.
EXPECTED = {True: {"sqlite": 2, "postgres": "on"}, False: {"sqlite": 1, "postgres": "off"}}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("durable", [True, False])
@pytest_twisted.ensureDeferred
async def test_commits_wait_for_the_disk_unless_relaxed(backend: str, durable: bool,
                                                        tmp_path: Path) -> None:
    """By default every pooled connection syncs its commits (SQLite synchronous=FULL, so the
    WAL is synced before the SendAck; PostgreSQL synchronous_commit=on, whatever the server's
    own default); durable=False sets NORMAL / off."""
    with empty_database_uri(backend, tmp_path) as uri:
        db = Database.from_uri(uri) if durable else Database.from_uri(uri, durable=False)
        await db.start()
        try:
            for _ in range(3):  # any connection of the pool
                assert await db.run_interaction("setting", _setting) == \
                    EXPECTED[durable][backend]
        finally:
            db.close()


def test_durability_option(tmp_path: Path) -> None:
    """--durability is full by default; relaxed reaches the engine; other values are
    usage errors."""
    db = f"sqlite:{tmp_path / 'chat.db'}"
    key = str(tmp_path / "server.key")
    full = parse("--database", db, "--identity", key)
    assert full["durability"] == "full"
    assert full.database.engine.synchronous == "FULL"  # type: ignore[attr-defined]
    relaxed = parse("--database", db, "--identity", key, "--durability", "relaxed")
    assert relaxed.database.engine.synchronous == "NORMAL"  # type: ignore[attr-defined]
    with pytest.raises(usage.UsageError):
        parse("--database", db, "--identity", key, "--durability", "fast")


def test_flow_control_options(tmp_path: Path) -> None:
    """The bounds are options; --message-rate 0 turns the rate limit off; a write backlog
    smaller than an image plus 1 MiB is refused (an image being delivered is written
    whole)."""
    key = str(tmp_path / "server.key")
    options = parse("--identity", key, "--max-requests-in-flight", "8",
                    "--max-write-backlog", str(20 * 2**20), "--write-stall-timeout", "5",
                    "--message-rate", "0", "--message-burst", "50")
    assert options.limit_settings() == LimitSettings(
        max_requests_in_flight=8, max_write_backlog=20 * 2**20, write_stall_timeout=5.0,
        message_rate=0.0, message_burst=50)
    for bad in (["--max-requests-in-flight", "0"], ["--message-rate", "-1"],
                ["--max-write-backlog", str(10 * 2**20)]):
        with pytest.raises(usage.UsageError):
            parse("--identity", key, *bad)
