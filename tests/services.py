"""Detect the external services (PostgreSQL, Redis) tests may use.

``require_*`` skip the test when the service is absent, except under CI
(environment variable ``CI`` set), where a missing service is a failure.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_ADDR = ("127.0.0.1", 6379)


@functools.cache
def postgres_dsn() -> str | None:
    """The test DSN if PostgreSQL answers within 2 s, else None (cached)."""
    try:
        import psycopg2
    except ImportError:
        return None
    try:
        conn = psycopg2.connect(POSTGRES_DSN, connect_timeout=2)
    except Exception:
        return None
    conn.close()
    return POSTGRES_DSN


@functools.cache
def redis_available() -> bool:
    """Whether Redis answers a raw ``PING`` on 127.0.0.1:6379 (cached)."""
    try:
        with socket.create_connection(REDIS_ADDR, timeout=2) as sock:
            sock.settimeout(2)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _missing(what: str) -> None:
    msg = f"{what} is not available"
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (required because CI is set)")
    pytest.skip(msg)


def require_postgres() -> str:
    dsn = postgres_dsn()
    if dsn is None:
        _missing(f"PostgreSQL at {POSTGRES_DSN}")
        raise AssertionError("unreachable")
    return dsn


def require_redis() -> None:
    if not redis_available():
        _missing("Redis at {}:{}".format(*REDIS_ADDR))


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


#: pytest params for fixtures that run a test on each database backend.
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.contextmanager
def empty_database_uri(backend: str, tmp_path: Path) -> Iterator[str]:
    """A URI of an empty database: a SQLite file in ``tmp_path``, or a fresh PostgreSQL
    schema (dropped afterwards; skipped if PostgreSQL is absent, unless CI is set)."""
    if backend == "sqlite":
        yield f"sqlite:{tmp_path / 'chat.db'}"
        return
    schema = PgSchema(require_postgres())
    try:
        yield schema.uri
    finally:
        schema.drop()
