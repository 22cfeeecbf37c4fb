"""The service's start and stop on the real reactor: what it logs when it listens, and stopping
while users are signed in (sessions end before the database closes)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest_twisted
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import endpoints
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from chatproto.server.limits import LimitSettings
from chatproto.server.passwords import PasswordHasher
from chatproto.server.service import GC_GEN0_THRESHOLD, ChatService
from chatproto.storage.database import Database
from chatproto.storage.store import ChatStore
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode
from chatproto.wire.handshake import LoginComplete, Registered
from tests.server.conftest import FAST
from tests.server.wireclient import Closed, connect

PASSWORD = "correct horse battery"


class LogCapture:
    """Every log event while installed, formatted."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def problems(self) -> list[str]:
        return [formatEvent(e) + repr(e.get("log_failure", "")) for e in self.events
                if e.get("log_failure") is not None
                or e.get("log_level") in (LogLevel.error, LogLevel.critical)
                or e.get("isError")]


@pytest_twisted.ensureDeferred
async def test_stopping_with_users_signed_in_ends_sessions_before_the_database(
        tmp_path: Path) -> None:
    """The service logs "listening on 127.0.0.1:PORT" with the bound port. Stopping it while
    two users are signed in (one with a request just sent) tells them the server is shutting
    down, records their last seen, and only then closes the database: nothing is logged as an
    error (before: "Unhandled Error ... record_last_seen -> Database not started"). While it
    serves, the start-up objects are frozen out of the cyclic GC and generation 0 is collected
    rarely; stopping restores the process's GC settings."""
    from twisted.internet import reactor

    uri = f"sqlite:{tmp_path / 'chat.db'}"
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    try:
        service = ChatService(reactor, Database.from_uri(uri), Ed25519PrivateKey.generate(),
                              [endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")],
                              PasswordHasher(reactor, FAST), LimitSettings())
        service.startService()
        threshold = gc.get_threshold()
        await service.ready
        # Start-up objects frozen out of the cyclic collector, young objects collected rarely.
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
        port = service.ports[0].getHost().port
        assert f"listening on 127.0.0.1:{port} (chat)" in capture.lines()
        clients = []
        for name in ("alice", "bob"):
            client = await connect(reactor, port)
            await client.trust()
            assert isinstance(await client.register(name, PASSWORD), Registered)
            assert isinstance(await client.signin(name, PASSWORD), LoginComplete)
            clients.append(client)
        clients[0].send(m.GroupList(1))
        await service.stopService()
        assert gc.get_threshold() == threshold and gc.get_freeze_count() == 0
        for client in clients:
            items = []
            while not isinstance(item := await client.next(), Closed):
                items.append(item)
            errors = [x for x in items if isinstance(x, m.Error)]
            assert [(e.code, e.reason) for e in errors] == [
                (ErrorCode.SERVER_BUSY, "the server is shutting down")]
        assert capture.problems() == []
    finally:
        globalLogPublisher.removeObserver(capture)
    db = Database.from_uri(uri)
    await db.start()
    try:
        for name in ("alice", "bob"):
            user = await ChatStore(db).get_user(name)
            assert user is not None and user.last_seen_ms is not None
    finally:
        db.close()


def test_listening_addresses_are_written_host_colon_port() -> None:
    """The "listening on" line names IPv4 as host:port and IPv6 as [host]:port."""
    from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

    from chatproto.server.service import describe_address

    assert describe_address(IPv4Address("TCP", "0.0.0.0", 7777)) == "0.0.0.0:7777"
    assert describe_address(IPv6Address("TCP", "::1", 7443)) == "[::1]:7443"
    assert "chat.sock" in describe_address(UNIXAddress(b"/run/chat.sock"))
