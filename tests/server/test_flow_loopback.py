"""Back-pressure over real loopback TCP and the real store (both databases): a flooding
sender and a client that never reads. The server's timers run on a task.Clock; the bounds
are asserted as counts (requests in flight, bytes buffered), never as times."""

from __future__ import annotations

import socket
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


#: The kernel's buffers for the sleeper's connection, set on both ends so that what the
#: kernel can take is small and known whatever the host's TCP autotuning allows.
KERNEL_BUFFER = 64 * 1024


@pytest_twisted.ensureDeferred
async def test_client_that_never_reads_is_bounded_then_aborted(
        flow_loopback: Loopback, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bob syncs, then reads nothing while Alice sends him 60 messages of 60 KB (3.6 MB). At
    every write the server's unsent bytes for him stay under the high-water mark plus one
    message; once the kernel's buffers are full live deliveries stop (the rest stays in the
    log), and after write_stall_timeout he is aborted.

    The transport pauses its producer whenever one reactor turn writes more than the mark, and
    resumes it when the kernel took it all: until the kernel is full, pauses are followed by
    resumes and the stream reads the log again. The checks are made in a paused state (the
    next pause, if Alice's last answer came while the stream was reading), never in between:
    measuring whatever state the last answer happened to find made the earlier version of
    this test fail once on a loaded machine (write_paused was False, the stream was reading)."""
    lb = flow_loopback
    pauses: list[Deferred[None]] = []
    original = Connection.writes_paused

    def noticed(self: Connection) -> None:
        original(self)
        if self.name == "bob":
            waiting, pauses[:] = pauses[:], []
            for d in waiting:
                d.callback(None)

    monkeypatch.setattr(Connection, "writes_paused", noticed)
    bob = await signed_in(lb, "bob")
    bob.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER)
    bob.send(m.Sync(1, None))
    assert isinstance(await answer(bob, (m.SyncDone,)), m.SyncDone)
    bob.transport.pauseProducing()  # never reads again
    try:
        await _flood_the_sleeper(lb, pauses)
    finally:
        bob.transport.abortConnection()  # the client is not reading: it would not notice


async def _flood_the_sleeper(lb: Loopback, pauses: list[Deferred[None]]) -> None:
    conn = server_side(lb, "bob")
    proto: Any = conn.link
    transport = proto.transport
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_BUFFER)
    unsent: list[int] = []
    write = transport.write

    def counted(data: bytes) -> None:
        write(data)
        unsent.append(len(transport.dataBuffer) - transport.offset + transport._tempDataLen)

    transport.write = counted
    alice = await signed_in(lb, "alice")
    body = b"s" * 60_000
    total = 60
    session = alice.hs.session
    assert session is not None
    alice.transport.write(b"".join(session.send(chat(i, "bob", body))
                                   for i in range(1, total + 1)))
    for _ in range(total):
        assert isinstance(await answer(alice), m.SendAck)
    while not proto.write_paused:
        pause: Deferred[None] = Deferred()
        pauses.append(pause)
        await pause
    frame = len(body) + 2048  # a Deliver's frame: the body, its fields, the AEAD overhead
    assert unsent and max(unsent) <= transport.bufferSize + frame
    assert proto.write_backlog == 0  # nothing was written after the pause
    assert conn.stream.sent_seq < total // 2  # the rest waits in the log
    lost = conn.when_lost()
    lb.clock.advance(59.0)
    assert not lost.called
    lb.clock.advance(1.0)
    await lost  # aborted: the server's buffers for him are gone
    assert conn.closed and proto.transport.disconnected
