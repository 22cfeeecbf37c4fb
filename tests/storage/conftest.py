"""Fixtures: a started Database (and ChatStore) on SQLite and on PostgreSQL."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Make ``chatproto`` and ``tests.services`` importable without an install.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from chatproto.storage.database import Database  # noqa: E402
from chatproto.storage.store import ChatStore  # noqa: E402


@pytest.fixture
def store(database: Database) -> ChatStore:
    return ChatStore(database)
