"""The database fixtures shared by the storage and server tests: an empty database of each
backend, and a started :class:`Database` over it. Conftests import them by name."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_twisted

from chatproto.storage.database import Database
from tests.services import BACKENDS, empty_database_uri

__all__ = ["database", "database_uri"]


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
