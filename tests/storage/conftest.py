"""Fixtures: a started Database (and ChatStore) on SQLite and on PostgreSQL."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_twisted

# Make ``chatproto`` and ``tests.services`` importable without an install.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from chatproto.storage.database import Database  # noqa: E402
from chatproto.storage.store import ChatStore  # noqa: E402
from tests.services import require_postgres  # noqa: E402

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class PgSchema:
    """A fresh PostgreSQL schema; ``uri`` connects with it as search_path."""

    def __init__(self, dsn: str) -> None:
        import psycopg2

        self.dsn = dsn
        self.name = "t_" + uuid.uuid4().hex[:16]
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{self.name}"')
        conn.close()
        sep = "&" if "?" in dsn else "?"
        self.uri = f"{dsn}{sep}options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        import psycopg2

        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
        conn.close()


@pytest.fixture(params=BACKENDS)
def database_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URI for an empty database of each backend (not started)."""
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'chat.db'}"
        return
    schema = PgSchema(require_postgres())
    try:
        yield schema.uri
    finally:
        schema.drop()


@pytest_twisted.async_yield_fixture()
async def database(database_uri: str) -> AsyncIterator[Database]:
    """A started Database over each backend."""
    db = Database.from_uri(database_uri)
    await db.start()
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def store(database: Database) -> ChatStore:
    return ChatStore(database)
