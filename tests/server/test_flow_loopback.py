"""Back-pressure over real loopback TCP and the real store (both databases): a flooding
sender and a client that never reads. The server's timers run on a task.Clock; the bounds
are asserted as counts (requests in flight, bytes buffered), never as times."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from chatproto.server.connection import Connection
from chatproto.server.limits import LimitSettings
from chatproto.wire import messages as m
from chatproto.wire.handshake import LoginComplete, Registered
from tests.server.conftest import Loopback, start_loopback
from tests.server.wireclient import Closed, WireClient, connect

PASSWORD = "correct horse battery"
BOUND = 16


@pytest_twisted.async_yield_fixture()
async def flow_loopback(database_uri: str) -> AsyncIterator[Loopback]:
    limits = LimitSettings(max_requests_in_flight=BOUND, message_rate=0,
                           write_stall_timeout=60.0)
    lb, stop = await start_loopback(database_uri, limits=limits)
    try:
        yield lb
    finally:
        await stop()


async def signed_in(lb: Loopback, name: str) -> WireClient:
    client = await connect(lb.reactor, lb.port)
    await client.trust()
    assert isinstance(await client.register(name, PASSWORD), Registered)
    assert isinstance(await client.signin(name, PASSWORD), LoginComplete)
    return client


def server_side(lb: Loopback, name: str) -> Connection:
    (conn,) = [c for c in lb.server.open if c.name == name]
    return conn


def chat(req: int, to: str, body: bytes) -> m.Chat:
    return m.Chat(req, req.to_bytes(16, "big"), 0, to, None, m.ContentType.TEXT, body, None)


async def answer(client: WireClient, kinds: tuple[type, ...] = (m.SendAck, m.Error)) -> Any:
    while True:
        item = await client.next()
        if isinstance(item, kinds) or isinstance(item, Closed):
            return item


@pytest_twisted.ensureDeferred
async def test_flood_is_bounded_and_others_are_served(flow_loopback: Loopback,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """One client writes 3,000 Chats at once; the server never holds more than
    max_requests_in_flight of them decoded and unanswered, and another client's message,
    sent once the flood is under way, is answered while most of the flood is still
    queued (in the sockets, not in the server)."""
    lb = flow_loopback
    in_flight: list[int] = []
    original = Connection.message_received

    def observed(self: Connection, msg: m.Message) -> None:
        original(self, msg)
        if self.name == "alice":
            in_flight.append(len(self.in_flight))

    monkeypatch.setattr(Connection, "message_received", observed)
    alice = await signed_in(lb, "alice")
    bob = await signed_in(lb, "bob")
    await signed_in(lb, "dave")
    total = 3000
    session = alice.hs.session
    assert session is not None
    alice.transport.write(b"".join(session.send(chat(i, "dave", b"f" * 100))
                                   for i in range(1, total + 1)))
    assert isinstance(await answer(alice), m.SendAck)
    bob.send(chat(1, "dave", b"me too"))
    assert isinstance(await answer(bob), m.SendAck)
    flood_answered = 1 + sum(isinstance(x, m.SendAck) for x in alice.items.pending)
    assert flood_answered < total // 2
    for _ in range(total - flood_answered):
        assert isinstance(await answer(alice), m.SendAck)
    assert max(in_flight) == BOUND
    assert len(in_flight) == total


@pytest.mark.skipif(
    not os.environ.get("CHATPROTO_SOCKET_BOUND_TEST"),
    reason="opt-in (CHATPROTO_SOCKET_BOUND_TEST=1): failed once in a fresh-clone CI run and was "
           "not reproduced since; tests/server/test_flow_control.py covers the same bound "
           "deterministically")
@pytest_twisted.ensureDeferred
async def test_client_that_never_reads_is_bounded_then_aborted(
        flow_loopback: Loopback, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bob syncs, then reads nothing while Alice sends him 300 messages of 60 KB (18 MB):
    once the kernel's buffers are full the server's buffer for him passes the mark, live
    deliveries stop (the rest stays in the log), the server's send buffer stays under the
    mark plus one message, and after write_stall_timeout he is aborted."""
    lb = flow_loopback
    paused: Deferred[None] = Deferred()
    original = Connection.writes_paused

    def noticed(self: Connection) -> None:
        original(self)
        if self.name == "bob" and not paused.called:
            paused.callback(None)

    monkeypatch.setattr(Connection, "writes_paused", noticed)
    bob = await signed_in(lb, "bob")
    bob.send(m.Sync(1, None))
    assert isinstance(await answer(bob, (m.SyncDone,)), m.SyncDone)
    bob.transport.pauseProducing()  # never reads again
    try:
        await _flood_the_sleeper(lb, paused)
    finally:
        bob.transport.abortConnection()  # the client is not reading: it would not notice


async def _flood_the_sleeper(lb: Loopback, paused: Deferred[None]) -> None:
    alice = await signed_in(lb, "alice")
    body = b"s" * 60_000
    total = 300
    session = alice.hs.session
    assert session is not None
    alice.transport.write(b"".join(session.send(chat(i, "bob", body))
                                   for i in range(1, total + 1)))
    for _ in range(total):
        assert isinstance(await answer(alice), m.SendAck)
    await paused
    conn = server_side(lb, "bob")
    proto: Any = conn.link
    transport = proto.transport
    buffered = len(transport.dataBuffer) + transport._tempDataLen
    assert buffered <= 65536 + 2 * len(body)
    assert proto.write_paused and proto.write_backlog < 2 * len(body)
    assert conn.stream.sent_seq < total  # the rest waits in the log
    lost = conn.when_lost()
    lb.clock.advance(59.0)
    assert not lost.called
    lb.clock.advance(1.0)
    await lost  # aborted: the server's buffers for him are gone
    assert conn.closed and proto.transport.disconnected
