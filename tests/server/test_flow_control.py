"""Back-pressure, bounded memory and the message rate limit, on StringTransports and a Clock.

The transport double (:class:`BufferedTransport`) behaves as Twisted's TCP transport does
towards its streaming producer: it pauses the producer when more than ``bufferSize`` bytes
wait, and resumes it once the peer has read everything. The store double holds every stored
message until the test commits it (in submission order, as the group commit does), so a test
can count what waits where. Every bound is asserted as a count, never as a time.
"""

from __future__ import annotations

import functools
import gc
import tracemalloc
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from chatproto.server.connection import Connection
from chatproto.server.limits import TokenBucket
from chatproto.server.web import MAX_PENDING_BYTES, StreamOverWebSocket
from chatproto.storage import store as st
from chatproto.wire import handshake
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode
from tests.server.test_connection import ChatHarness, ChatMemoryStore
from tests.server.test_protocol import Conn

#: Twisted's FileDescriptor.bufferSize: the transport's high-water mark.
HIGH_WATER = 65536


class BufferedTransport(StringTransport):
    """A StringTransport that pauses its streaming producer above ``bufferSize`` buffered
    bytes and resumes it when the peer has read everything (as twisted.internet.tcp does);
    ``abortConnection`` drops the buffer."""

    bufferSize = HIGH_WATER

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.producer_paused = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        if self.aborted:
            return
        super().write(data)
        if (self.producer is not None and self.streaming and not self.producer_paused
                and len(self.value()) > self.bufferSize):
            self.producer_paused = True
            self.producer.pauseProducing()

    def read_all(self) -> bytes:
        """The peer reads everything buffered."""
        data = self.value()
        self.clear()
        if self.producer_paused and not self.aborted:
            self.producer_paused = False
            self.producer.resumeProducing()
        return data

    def abortConnection(self) -> None:
        self.aborted = True
        self.clear()
        super().abortConnection()


class BufferedConn(Conn):
    """A Conn whose ``receive`` reads through :meth:`BufferedTransport.read_all`."""

    transport: BufferedTransport

    def receive(self) -> list[Any]:
        data = self.transport.read_all()
        session = self.client.session
        if session is None:
            items: list[Any] = list(self.client.receive_data(data))
        else:
            session.receive_data(data)
            items = []
        if self.client.session is not None:
            while (msg := self.client.session.next_message()) is not None:
                items.append(msg)
        return items

    @property
    def connection(self) -> Connection:
        conn = self.proto.conn
        assert conn is not None
        return conn


class QueueStore(ChatMemoryStore):
    """Stores messages in users' logs; each append waits in a FIFO until :meth:`commit`."""

    def __init__(self) -> None:
        super().__init__()
        self.log = []
        self.logs: dict[str, list[st.LogEntry]] = {}
        self.waiting: list[tuple[st.Draft, Deferred[st.Appended]]] = []
        self.committed: list[str] = []  # the sender of every committed message, in order
        self.hold = True
        self._committing = False

    def append_message(self, draft: st.Draft) -> Deferred[st.Appended]:
        d: Deferred[st.Appended] = Deferred()
        self.waiting.append((draft, d))
        if not self.hold and not self._committing:
            while self.waiting:
                self.commit(len(self.waiting))
        return d

    def commit(self, n: int) -> int:
        """Commit the ``n`` oldest appends (fewer if fewer wait); returns how many. Appends
        made while the answers are handed out wait for the next commit (as in the group
        commit)."""
        batch, self.waiting = self.waiting[:n], self.waiting[n:]
        self._committing = True
        try:
            self._commit(batch)
        finally:
            self._committing = False
        return len(batch)

    def _commit(self, batch: list[tuple[st.Draft, Deferred[st.Appended]]]) -> None:
        for draft, d in batch:
            assert draft.to is not None
            recipients = []
            entry = None
            for name in sorted({draft.sender, draft.to}):
                log = self.logs.setdefault(name, [])
                entry = st.LogEntry(0, draft.sender, draft.to, len(self.committed) + 1,
                                    draft.now_ms, draft.client_msg_id, draft.content_type,
                                    draft.body, None, None, len(draft.body),
                                    len(self.committed) + 1, user_seq=len(log) + 1)
                log.append(entry)
                recipients.append((name, entry.user_seq))
            self.committed.append(draft.sender)
            d.callback(st.Appended(entry.message_id if entry else 0, 0, len(self.committed),
                                   draft.now_ms, False, entry, tuple(recipients)))

    def read_log(self, user: str, after_seq: int, limit: int) -> Deferred[list[st.LogEntry]]:
        self.log_reads += 1
        return defer.succeed(self.logs.get(user, [])[after_seq:after_seq + limit])

    def sync_position(self, user: str, device_id: bytes) -> Deferred[tuple[int, int]]:
        return defer.succeed((0, len(self.logs.get(user, []))))


class FlowHarness(ChatHarness):
    """The chat harness over a :class:`QueueStore`, connections on BufferedTransports."""

    store: QueueStore  # type: ignore[assignment]

    def __init__(self, **limits: Any) -> None:
        super(ChatHarness, self).__init__(store=QueueStore(), **limits)

    def connect(self, ip: str = "10.0.0.1") -> BufferedConn:
        addr = IPv4Address("TCP", ip, 40000)
        proto = self.factory.buildProtocol(addr)
        transport = BufferedTransport(peerAddress=addr)
        proto.makeConnection(transport)
        return BufferedConn(proto, transport)

    def signed_in(self, name: str, ip: str = "10.0.0.1") -> BufferedConn:
        if name not in self.store.users:
            self.add_user(name)
        conn = self.connect(ip)
        conn.login(name)
        conn.receive()
        return conn


class ChannelProducer:
    """The HTTP channel, registered as the connection's producer before the upgrade."""

    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def stopProducing(self) -> None: ...


class BufferedWebSocket:
    """The WebSocket of a web connection over a :class:`BufferedTransport` (the TCP connection
    underneath); messages are written unframed, so the peer reads the chat stream as on TCP."""

    def __init__(self, transport: BufferedTransport) -> None:
        self.transport = transport
        self.closed: list[int] = []

    def sendBytesMessage(self, data: bytes) -> None:
        self.transport.write(data)

    def loseConnection(self, code: int = 1000) -> None:
        self.closed.append(code)
        self.transport.loseConnection()

    def attachProducer(self, producer: Any) -> None:
        self.transport.registerProducer(producer, True)

    def detachProducer(self) -> None:
        self.transport.unregisterProducer()


class WebConn(BufferedConn):
    """A signed-in connection of the web listener: the chat adapter over the WebSocket."""

    def __init__(self, web: StreamOverWebSocket, websocket: BufferedWebSocket) -> None:
        super().__init__(web.stream, websocket.transport)
        self.web = web
        self.websocket = websocket


def web_signed_in(h: FlowHarness, name: str, ip: str = "10.0.0.4") -> WebConn:
    if name not in h.store.users:
        h.add_user(name)
    addr = IPv4Address("TCP", ip, 40000)
    transport = BufferedTransport(peerAddress=addr)
    transport.registerProducer(ChannelProducer(), True)
    websocket = BufferedWebSocket(transport)
    web = StreamOverWebSocket(h.factory.buildProtocol(addr), addr, addr)
    web.negotiationStarted(websocket)  # type: ignore[arg-type]
    web.negotiationFinished()
    conn = WebConn(web, websocket)
    conn.login(name)
    conn.receive()
    conn.deliver(frames(conn, [m.Sync(1, None)]))
    assert any(isinstance(x, m.SyncDone) for x in conn.receive())
    return conn


def chat(req: int, to: str, body: bytes = b"hello") -> m.Chat:
    return m.Chat(req, req.to_bytes(16, "big"), 0, to, None, m.ContentType.TEXT, body, None)


def frames(conn: Conn, msgs: list[m.Message]) -> bytes:
    session = conn.client.session
    assert session is not None
    return b"".join(session.send(msg) for msg in msgs)


def send_all(conn: Conn, msgs: list[m.Message]) -> None:
    """Deliver the messages' frames in reads of at most 64 KiB (as a socket would)."""
    data = frames(conn, msgs)
    for start in range(0, len(data), HIGH_WATER):
        assert conn.proto.transport.producerState == "producing"
        conn.deliver(data[start:start + HIGH_WATER])


def answers(items: list[Any]) -> list[Any]:
    return [x for x in items if isinstance(x, m.SendAck | m.Error)]


# --- reading: a flood is read only as fast as it is stored ------------------------------------


def test_flood_is_read_no_faster_than_it_is_stored() -> None:
    """One client sends 20,000 Chats as fast as its socket takes them (a 64 KiB read whenever
    the server reads). The server stops reading it with max_requests_in_flight requests
    waiting for the database and reads again as they are answered: its requests decoded but
    unanswered never exceed the bound, the rest stays as bytes in the kernel (here: unsent)
    and in the session's buffer (at most one read). Another client's message, sent in the
    middle of the flood, waits behind at most that many of the flooder's requests, and is
    answered while thousands of the flood are still queued."""
    bound = 32
    h = FlowHarness(max_requests_in_flight=bound, message_rate=0)
    h.add_user("dave")
    alice = h.signed_in("alice", "10.0.0.1")
    bob = h.signed_in("bob", "10.0.0.2")
    total = 20_000
    data = frames(alice, [chat(i + 1, "dave") for i in range(total)])
    proto = alice.proto
    conn = alice.connection
    session = proto.session
    assert session is not None
    sent = acked = 0
    most_in_flight = most_buffered = 0
    bob_ahead: int | None = None
    bob_answered_with_flood_left: int | None = None
    while acked < total:
        if proto.transport.producerState == "producing" and sent < len(data):
            chunk = data[sent:sent + HIGH_WATER]
            sent += len(chunk)
            alice.deliver(chunk)
        else:
            h.store.commit(256)  # one group commit
        most_in_flight = max(most_in_flight, len(conn.in_flight))
        most_buffered = max(most_buffered, session._decoder.buffered)
        acked += sum(isinstance(x, m.SendAck) for x in alice.receive())
        if bob_ahead is None and acked >= total // 2:
            bob.deliver(frames(bob, [chat(1, "dave", b"me too")]))
            bob_ahead = sum(d.sender == "alice" for d, _ in h.store.waiting)
        if bob_ahead is not None and bob_answered_with_flood_left is None:
            if any(isinstance(x, m.SendAck) for x in bob.receive()):
                bob_answered_with_flood_left = total - acked
    assert most_in_flight == bound
    assert most_buffered <= HIGH_WATER
    assert bob_ahead is not None and bob_ahead <= bound
    assert bob_answered_with_flood_left is not None and bob_answered_with_flood_left > 5000
    assert h.store.committed.count("alice") == total  # nothing lost, nothing refused


def test_reading_resumes_with_the_frames_already_received() -> None:
    """Frames that arrived in the read that filled the requests are decoded when answers free
    room, before the transport is read again, and in order."""
    h = FlowHarness(max_requests_in_flight=2, message_rate=0)
    h.add_user("dave")
    alice = h.signed_in("alice")
    alice.deliver(frames(alice, [chat(i, "dave") for i in range(1, 6)]))
    assert len(h.store.waiting) == 2
    assert alice.transport.producerState == "paused"
    h.store.commit(1)  # one answer frees room for one more request
    assert [d.client_msg_id for d, _ in h.store.waiting] == [(i).to_bytes(16, "big")
                                                           for i in (2, 3)]
    assert alice.transport.producerState == "paused"
    h.store.hold = False
    while h.store.waiting:
        h.store.commit(len(h.store.waiting))
    assert [x.req for x in answers(alice.receive())] == [1, 2, 3, 4, 5]
    assert alice.transport.producerState == "producing"


def test_pong_behind_held_reading_is_not_a_ping_timeout() -> None:
    """A flooding client's Pong waits unread behind its own requests while the server holds
    its reading (flow control): the pong deadline starts again instead of closing a peer that
    is evidently sending. Once reading resumes, a missing Pong is a ping timeout again."""
    h = FlowHarness(max_requests_in_flight=2, message_rate=0, ping_interval=30.0,
                    ping_timeout=10.0)
    h.add_user("dave")
    alice = h.signed_in("alice")
    alice.deliver(frames(alice, [chat(i, "dave") for i in range(1, 6)]))
    assert alice.transport.producerState == "paused"
    h.clock.advance(30.0)  # Ping sent; the Pong would arrive behind the unread Chats
    assert any(isinstance(x, m.Ping) for x in alice.receive())
    h.clock.advance(25.0)  # more than ping_timeout, reading still held
    assert not alice.transport.disconnecting
    assert h.server.stats.errors["PING_TIMEOUT"] == 0
    h.store.hold = False
    while h.store.waiting:
        h.store.commit(len(h.store.waiting))
    assert alice.transport.producerState == "producing"
    h.clock.advance(10.0)  # reading again, and still no Pong
    assert alice.transport.disconnecting
    assert h.server.stats.errors["PING_TIMEOUT"] == 1


# --- writing: a client that does not read --------------------------------------------------


def sync_bob(h: FlowHarness, name: str = "bob", ip: str = "10.0.0.2") -> BufferedConn:
    bob = h.signed_in(name, ip)
    bob.deliver(frames(bob, [m.Sync(1, None)]))
    items = bob.receive()
    assert any(isinstance(x, m.SyncDone) for x in items), items
    return bob


def flood_unread(h: FlowHarness, bob: Any) -> None:
    """alice sends bob 2,000 messages of 1 KiB; bob reads nothing. What the server has
    written to bob's transport stays under the high-water mark plus two messages."""
    alice = h.signed_in("alice")
    body = b"x" * 1024
    for start in range(0, 2000, 100):
        send_all(alice, [chat(i, "bob", body) for i in range(start + 1, start + 101)])
        alice.receive()
        assert len(bob.transport.value()) <= HIGH_WATER + 2 * len(body)


def test_reader_that_never_reads_holds_a_bounded_buffer_then_is_aborted() -> None:
    """Others send 2,000 messages of 1 KiB to a signed-in client that reads nothing. The
    server stops pushing them once the transport's buffer passes its high-water mark: the
    buffer stays under the mark plus one message, the rest stays in the log. After
    write_stall_timeout the connection is aborted and its buffer released."""
    h = FlowHarness(write_stall_timeout=60.0, message_rate=0)
    h.store.hold = False
    bob = sync_bob(h)
    flood_unread(h, bob)
    stream = bob.connection.stream
    assert bob.proto.write_paused
    assert stream.sent_seq < 100  # the other 1,900 wait in the log, not in memory
    assert len(h.store.logs["bob"]) == 2000
    h.clock.advance(59.0)
    assert not bob.transport.aborted
    h.clock.advance(1.0)
    assert bob.transport.aborted and bob.transport.value() == b""
    bob.drop()
    assert bob.connection.closed and bob.connection not in h.server.open
    assert h.server.stats.errors["WRITE_STALLED"] == 1


def test_stream_catches_up_from_the_log_once_the_buffer_drains() -> None:
    """A slow reader gets every message exactly once and in order: live deliveries stop at
    the mark and the stream reads the log from its cursor each time the buffer drains; a
    reader that drains within the deadline is not closed."""
    h = FlowHarness(write_stall_timeout=60.0, message_rate=0)
    h.store.hold = False
    bob = sync_bob(h)
    alice = h.signed_in("alice")
    body = b"y" * 2048
    send_all(alice, [chat(i, "bob", body) for i in range(1, 1001)])
    alice.receive()
    reads_before = h.store.log_reads
    seqs: list[int] = []
    for _ in range(1000):
        h.clock.advance(30.0)  # slower than the deadline in total, never stalled that long
        got = [x.user_seq for x in bob.receive() if isinstance(x, m.Deliver)]
        if not got:
            break
        seqs += got
    assert seqs == list(range(1, 1001))
    assert h.store.log_reads > reads_before  # read back from the log, not from memory
    assert not bob.transport.aborted


def test_replay_stops_at_the_mark() -> None:
    """A Sync over a long log sends entries only until the buffer passes the mark; the
    SyncDone comes after the last entry, once the reader has read the rest."""
    h = FlowHarness(message_rate=0)
    h.store.hold = False
    h.add_user("bob")
    alice = h.signed_in("alice")
    send_all(alice, [chat(i, "bob", b"z" * 4096) for i in range(1, 501)])
    bob = h.signed_in("bob", "10.0.0.2")
    bob.deliver(frames(bob, [m.Sync(1, None)]))
    assert len(bob.transport.value()) <= HIGH_WATER + 2 * 4096
    items: list[Any] = []
    while not any(isinstance(x, m.SyncDone) for x in items):
        more = bob.receive()
        assert more
        items += more
    assert [x.user_seq for x in items if isinstance(x, m.Deliver)] == list(range(1, 501))


def test_write_backlog_beyond_the_bound_aborts_at_once() -> None:
    """While the buffer is above the mark, what is still written (here typing events pushed
    to the reader) counts against max_write_backlog; beyond it the connection is aborted
    without waiting for the deadline."""
    backlog = 11 * 1024 * 1024
    h = FlowHarness(max_write_backlog=backlog, message_rate=0)
    h.store.hold = False
    bob = sync_bob(h)
    alice = h.signed_in("alice")
    alice.deliver(frames(alice, [chat(i, "bob", b"w" * 60_000) for i in range(1, 3)]))
    assert bob.proto.write_paused
    event = m.encode_message(m.TypingEvent(0, "alice", True))
    pushed = 0
    while not bob.transport.aborted:
        h.server.router.push(["bob"], event)
        pushed += 1
        assert pushed * len(event) <= backlog + 10_000
    assert bob.proto.write_backlog > backlog


def test_keepalive_waits_while_the_buffer_is_full() -> None:
    """No Ping is queued behind a full buffer and no pong deadline runs then (the write-stall
    deadline applies instead); pings resume once the buffer drained."""
    h = FlowHarness(ping_interval=30.0, ping_timeout=10.0, write_stall_timeout=120.0,
                    message_rate=0)
    h.store.hold = False
    bob = sync_bob(h)
    alice = h.signed_in("alice")
    alice.deliver(frames(alice, [chat(i, "bob", b"v" * 30_000) for i in range(1, 4)]))
    assert bob.proto.write_paused
    h.clock.advance(31.0)
    h.clock.advance(11.0)
    assert not bob.transport.disconnecting and not bob.transport.aborted
    bob.receive()  # drains: live again
    h.clock.advance(30.0)
    assert any(isinstance(x, m.Ping) for x in bob.receive())


def test_close_while_the_buffer_is_full_aborts() -> None:
    """A connection closed (e.g. the server stopping) while its buffer is above the mark is
    aborted: loseConnection would hold the buffer until the peer reads."""
    h = FlowHarness(message_rate=0)
    h.store.hold = False
    bob = sync_bob(h)
    alice = h.signed_in("alice")
    alice.deliver(frames(alice, [chat(i, "bob", b"u" * 60_000) for i in range(1, 3)]))
    assert bob.proto.write_paused
    bob.proto.fail(ErrorCode.SERVER_BUSY, "the server is shutting down")
    assert bob.transport.aborted and bob.transport.value() == b""


def test_closed_connection_whose_peer_reads_nothing_is_aborted_after_the_deadline() -> None:
    """A ping timeout closes a reader whose buffer is below the mark (nothing paused, no stall
    deadline running): loseConnection would wait for the peer to read the Ping and the error
    frame, for ever. The transport is aborted write_stall_timeout later, its buffer released;
    a transport that does close in time cancels that deadline."""
    h = FlowHarness(ping_interval=30.0, ping_timeout=10.0, write_stall_timeout=60.0,
                    message_rate=0)
    h.store.hold = False
    bob = sync_bob(h)
    carol = sync_bob(h, "carol", "10.0.0.3")
    h.clock.advance(30.0)  # Ping to both
    assert any(isinstance(x, m.Ping) for x in carol.receive())
    carol.deliver(frames(carol, [m.Quit(2)]))
    assert carol.transport.disconnecting
    carol.drop()  # carol's transport closes at once
    h.clock.advance(10.0)  # bob: no Pong
    assert bob.transport.disconnecting and not bob.transport.aborted
    assert not bob.proto.write_paused and bob.transport.value()  # unread, below the mark
    h.clock.advance(59.0)
    assert not bob.transport.aborted
    h.clock.advance(1.0)
    assert bob.transport.aborted and bob.transport.value() == b""
    assert h.server.stats.errors["WRITE_STALLED"] == 1
    bob.drop()
    assert h.clock.getDelayedCalls() == []


def test_web_reader_that_never_reads_holds_a_bounded_buffer_then_is_aborted() -> None:
    """The same over the web listener: the chat adapter replaces the HTTP channel as the
    producer of the connection underneath the WebSocket, live deliveries stop at its
    high-water mark, and the write-stall deadline aborts that connection (not only the
    WebSocket: a Close frame would wait behind the unread buffer)."""
    h = FlowHarness(write_stall_timeout=60.0, message_rate=0)
    h.store.hold = False
    bob = web_signed_in(h, "bob")
    assert bob.transport.producer is bob.proto
    flood_unread(h, bob)
    assert bob.proto.write_paused
    assert bob.connection.stream.sent_seq < 100  # the other 1,900 wait in the log
    h.clock.advance(59.0)
    assert not bob.transport.aborted
    h.clock.advance(1.0)
    assert bob.transport.aborted and bob.transport.value() == b""
    assert bob.transport.producer is None
    assert h.server.stats.errors["WRITE_STALLED"] == 1


def test_web_slow_reader_gets_everything_from_the_log() -> None:
    """A web reader that reads slowly gets every message once and in order."""
    h = FlowHarness(write_stall_timeout=60.0, message_rate=0)
    h.store.hold = False
    bob = web_signed_in(h, "bob")
    alice = h.signed_in("alice")
    send_all(alice, [chat(i, "bob", b"y" * 2048) for i in range(1, 301)])
    alice.receive()
    seqs: list[int] = []
    while got := [x.user_seq for x in bob.receive() if isinstance(x, m.Deliver)]:
        seqs += got
    assert seqs == list(range(1, 301))
    assert not bob.transport.aborted


def test_web_closes_detach_the_producer_first() -> None:
    """A connection underneath closes only once a paused (TCP) or any (TLS) producer is gone:
    the web listener's own closes (1009 here) and a peer's Close frame, which Twisted's
    WebSocket answers by closing the connection itself, detach the chat adapter first."""
    h = FlowHarness(message_rate=0)
    h.store.hold = False
    bob = web_signed_in(h, "bob")
    alice = h.signed_in("alice")
    alice.deliver(frames(alice, [chat(i, "bob", b"u" * 60_000) for i in range(1, 3)]))
    assert bob.proto.write_paused and bob.transport.producer is bob.proto
    receive = bob.web.bound_receiver(lambda data: None)
    receive(b"\x00" * (MAX_PENDING_BYTES + 1))
    assert bob.websocket.closed == [1009] and bob.transport.disconnecting
    assert bob.transport.producer is None

    carol = web_signed_in(h, "carol", "10.0.0.5")
    assert carol.transport.producer is carol.proto
    close_frame = carol.web.bound_receiver(lambda data: carol.transport.loseConnection())
    close_frame(b"\x88\x80")
    assert carol.transport.disconnecting and carol.transport.producer is None
    assert carol.websocket.closed == []  # Twisted's WebSocket answered the Close itself


# --- what an idle connection holds -------------------------------------------------------------


def test_idle_signed_in_connection_holds_little(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bytes Python allocated for one idle, signed-in and synced connection (over 200, on
    StringTransports, the test's own client dropped; log events left out): no handshake
    timers kept after the login, no rate-limit bucket before the first Chat, no set of
    requests in flight while none waits. Measured: 4,640 bytes before, 3,340 after (of which
    about 600 are the test's transport and store doubles)."""
    # The test client checks the one server key once, not per connection (pure-Python curve
    # arithmetic, the slow part of a test handshake).
    monkeypatch.setattr(handshake, "identity_key_problem",
                        functools.cache(handshake.identity_key_problem))
    count = 200
    h = FlowHarness(registrations_per_ip=10**6, max_connections_per_ip=10**6,
                    max_handshakes=10**6, message_rate=0)
    h.store.hold = False
    names = [f"idle{i}" for i in range(count + 10)]
    for name in names:
        h.add_user(name)

    def idle(name: str) -> tuple[Any, BufferedTransport]:
        conn = h.signed_in(name)
        conn.deliver(frames(conn, [m.Sync(1, None)]))
        assert any(isinstance(x, m.SyncDone) for x in conn.receive())
        return conn.proto, conn.transport

    kept = [idle(name) for name in names[count:]]  # the server's sets and dicts grown first
    gc.collect()
    tracemalloc.start(8)
    try:
        before = tracemalloc.take_snapshot()
        kept += [idle(name) for name in names[:count]]
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    not_logging = [tracemalloc.Filter(False, "*/twisted/logger/*", all_frames=True)]
    grown = sum(stat.size_diff for stat in after.filter_traces(not_logging).compare_to(
        before.filter_traces(not_logging), "filename"))
    per_connection = grown / count
    assert all(proto.conn.in_flight == frozenset() for proto, _ in kept)
    assert per_connection < 3900, per_connection


# --- the message rate limit --------------------------------------------------------------------


def test_message_rate_limit_refuses_with_the_retry_time() -> None:
    """With 10 messages/s and a burst of 3, the 4th and 5th Chat of one write are refused with
    308 RATE_LIMITED and the wait in milliseconds; after that wait one more is accepted.
    Other requests are not counted."""
    h = FlowHarness(message_rate=10.0, message_burst=3)
    h.store.hold = False
    h.add_user("dave")
    alice = h.signed_in("alice")
    alice.deliver(frames(alice, [chat(i, "dave") for i in range(1, 6)]))
    items = answers(alice.receive())
    assert [x.req for x in items if isinstance(x, m.SendAck)] == [1, 2, 3]
    refused = [x for x in items if isinstance(x, m.Error)]
    assert [(x.req, x.code) for x in refused] == [(4, 308), (5, 308)]
    assert refused[0].reason == "too many messages: retry after 100 ms"
    h.clock.advance(0.1)
    alice.deliver(frames(alice, [chat(6, "dave"), chat(7, "dave")]))
    assert [(type(x).__name__, x.req) for x in answers(alice.receive())] == [
        ("SendAck", 6), ("Error", 7)]
    assert h.store.committed.count("alice") == 4


def test_token_bucket() -> None:
    """The bucket starts full, refills at ``rate`` up to ``burst``, and says how long to wait;
    rate 0 never refuses."""
    now = [0.0]
    bucket = TokenBucket(2.0, 2, lambda: now[0])
    assert [bucket.take(), bucket.take()] == [0.0, 0.0]
    assert bucket.take() == 0.5
    now[0] = 0.25
    assert bucket.take() == 0.25
    now[0] = 100.0
    assert [bucket.take(), bucket.take(), bucket.take()] == [0.0, 0.0, 0.5]
    free = TokenBucket(0, 1, lambda: now[0])
    assert all(free.take() == 0.0 for _ in range(1000))
