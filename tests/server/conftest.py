"""Fixtures for the server tests: fast Argon2 parameters, databases, a loopback server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import endpoints, task
from twisted.internet.defer import Deferred, DeferredList

from chatproto.server.limits import LimitSettings
from chatproto.server.passwords import Argon2Parameters, PasswordHasher
from chatproto.server.protocol import ChatServerFactory, ChatServerProtocol
from chatproto.server.service import ChatServer
from chatproto.storage.database import Database
from chatproto.storage.store import ChatStore

#: Insecure, fast Argon2id cost for tests (production uses the OWASP minimum or more).
FAST = Argon2Parameters(memory_kib=64, iterations=1, lanes=1)
#: The server clock's start (2023-11-14), so times in the database look real.
EPOCH = 1_700_000_000.0


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:{tmp_path / 'chat.db'}"


class TrackingFactory(ChatServerFactory):
    """Remembers its open connections, so a test can close them all and wait."""

    def __init__(self, server: ChatServer) -> None:
        super().__init__(server)
        self.open: dict[ChatServerProtocol, Deferred[None]] = {}

    def buildProtocol(self, addr: Any) -> ChatServerProtocol:
        proto = super().buildProtocol(addr)
        self.open[proto] = lost = Deferred()
        original = proto.connectionLost

        def connectionLost(reason: Any = None) -> None:
            original(reason)
            self.open.pop(proto, None)
            lost.callback(None)

        proto.connectionLost = connectionLost  # type: ignore[method-assign]
        return proto

    async def close_all(self) -> None:
        waiting = list(self.open.items())
        for proto, _ in waiting:
            proto.transport.loseConnection()
        for _, lost in waiting:
            await lost


@dataclass
class Loopback:
    """A ChatServer listening on 127.0.0.1:port, with the real store and hasher.

    Its timers and timestamps run on ``clock`` (a task.Clock), so tests move time by hand;
    network, database and hashing threads use the real reactor.
    """

    server: ChatServer
    store: ChatStore
    clock: task.Clock
    port: int
    reactor: Any


def track_interactions(db: Database) -> set[Deferred[Any]]:
    """Record the database's pending interactions (so a test can wait for all of them)."""
    pending: set[Deferred[Any]] = set()
    original = db.run_interaction

    def run_interaction(*args: Any, **kw: Any) -> Deferred[Any]:
        d = original(*args, **kw)
        pending.add(d)

        def done(result: Any) -> Any:
            pending.discard(d)
            return result

        d.addBoth(done)
        return d

    db.run_interaction = run_interaction  # type: ignore[method-assign]
    return pending


async def start_loopback(uri: str, params: Argon2Parameters = FAST,
                         limits: LimitSettings | None = None,
                         listen: str = "tcp:0:interface=127.0.0.1") -> tuple[Loopback, Any]:
    """Start a server; returns it and ``stop()``, which closes every connection, waits for
    the database work they caused, then closes the database."""
    from twisted.internet import reactor

    db = Database.from_uri(uri)
    await db.start()
    pending = track_interactions(db)
    hasher = PasswordHasher(reactor, params)
    hasher.start()
    clock = task.Clock()
    clock.advance(EPOCH)
    store = ChatStore(db)
    server = ChatServer(reactor=clock, identity=Ed25519PrivateKey.generate(), store=store,
                        hasher=hasher, limits=limits)
    ep = endpoints.serverFromString(reactor, listen)
    factory = TrackingFactory(server)
    listening = await ep.listen(factory)

    async def stop() -> None:
        await listening.stopListening()
        await factory.close_all()
        while pending:  # last_seen updates and presence look-ups of the closed sessions
            await DeferredList(list(pending), consumeErrors=True)
        hasher.stop()
        db.close()

    return Loopback(server, store, clock, listening.getHost().port, reactor), stop


@pytest_twisted.async_yield_fixture()
async def loopback(database_uri: str) -> AsyncIterator[Loopback]:
    """A loopback server over each database backend, with fast Argon2 parameters."""
    lb, stop = await start_loopback(database_uri)
    try:
        yield lb
    finally:
        await stop()


@pytest_twisted.async_yield_fixture()
async def sqlite_loopback(sqlite_uri: str) -> AsyncIterator[Loopback]:
    """A loopback server over SQLite only (for tests the backend does not matter to)."""
    lb, stop = await start_loopback(sqlite_uri)
    try:
        yield lb
    finally:
        await stop()
