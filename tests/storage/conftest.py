"""Fixtures: a started Database (and ChatStore) on SQLite and on PostgreSQL."""

from __future__ import annotations

import sys
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
from tests.services import BACKENDS, empty_database_uri  # noqa: E402


@pytest.fixture(params=BACKENDS)
def database_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URI for an empty database of each backend (not started)."""
    with empty_database_uri(request.param, tmp_path) as uri:
        yield uri


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
