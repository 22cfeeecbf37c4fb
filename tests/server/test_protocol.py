"""The connection adapter on a StringTransport and a task.Clock: timeouts, caps, rate limits,
tampered frames.

Everything here is synchronous: an in-memory store double and a hasher double that answer
with already-fired Deferreds, so a test is a plain sequence of steps with no reactor. (The
real store and Argon2 hasher are exercised over TCP in test_login.py.)
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chatproto.server.limits import LimitSettings
from chatproto.server.protocol import ChatServerFactory, ChatServerProtocol
from chatproto.server.service import ChatServer
from chatproto.storage.store import NameTaken, UserRecord
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from chatproto.wire.handshake import (
    ClientHandshake,
    HandshakeFailed,
    LoginComplete,
    Registered,
    RegisterRejected,
    ServerIdentityReceived,
    SigninRejected,
)
from tests.server.memory_limits import MemoryLoginLimits

PASSWORD = "correct horse battery"


class MemoryStore:
    """The few ChatStore methods the handshake and session start/end use, in a dict."""

    def __init__(self) -> None:
        self.users: dict[str, tuple[UserRecord, str]] = {}

    def create_user(self, name: str, phc: str, now_ms: int) -> Deferred[None]:
        if name in self.users:
            return defer.fail(NameTaken(name))
        self.users[name] = (UserRecord(name, now_ms, None, None, None), phc)
        return defer.succeed(None)

    def get_user(self, name: str) -> Deferred[UserRecord | None]:
        entry = self.users.get(name)
        return defer.succeed(None if entry is None else entry[0])

    def get_password_hash(self, name: str) -> Deferred[str | None]:
        entry = self.users.get(name)
        return defer.succeed(None if entry is None else entry[1])

    def get_login(self, name: str) -> Deferred[tuple[str | None, str | None]]:
        entry = self.users.get(name)
        if entry is None:
            return defer.succeed((None, None))
        return defer.succeed((entry[1], entry[0].last_login_ip))

    def record_login(self, name: str, ip: str, now_ms: int) -> Deferred[None]:
        user, phc = self.users[name]
        self.users[name] = (UserRecord(name, user.created_ms, now_ms, ip, now_ms), phc)
        return defer.succeed(None)

    def record_last_seen(self, name: str, now_ms: int) -> Deferred[None]:
        user, phc = self.users[name]
        self.users[name] = (UserRecord(name, user.created_ms, user.last_login_ms,
                                       user.last_login_ip, now_ms), phc)
        return defer.succeed(None)

    def contacts(self, name: str) -> Deferred[list[tuple[str, int | None]]]:
        return defer.succeed([])


class FakeHasher:
    """A synchronous stand-in for PasswordHasher (SHA-256, test only)."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def hash(self, password: str, **queueing: Any) -> Deferred[str]:
        return defer.succeed("fake$" + hashlib.sha256(password.encode()).hexdigest())

    def verify(self, password: str, phc: str | None, **queueing: Any) -> Deferred[bool]:
        return defer.succeed(phc is not None and self.hash(password).result == phc)

    def needs_rehash(self, phc: str) -> bool:
        return False


class Harness:
    """A ChatServer on a Clock with the doubles; opens StringTransport connections."""

    def __init__(self, store: MemoryStore | None = None, **limits: Any) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = store or MemoryStore()
        self.server = ChatServer(
            reactor=self.clock, identity=Ed25519PrivateKey.generate(),
            store=self.store, hasher=FakeHasher(),  # type: ignore[arg-type]
            limits=LimitSettings(**limits),
        )
        self.server.auth.login_limits = MemoryLoginLimits(self.clock, self.server.limits)
        self.factory = ChatServerFactory(self.server)

    def connect(self, ip: str = "10.0.0.1") -> Conn:
        addr = IPv4Address("TCP", ip, 40000)
        proto = self.factory.buildProtocol(addr)
        transport = StringTransport(peerAddress=addr)
        proto.makeConnection(transport)
        return Conn(proto, transport)

    def add_user(self, name: str, password: str = PASSWORD) -> None:
        conn = self.connect("192.0.2.99")
        conn.hello()
        assert conn.register(name, password) == [Registered(name)]
        conn.drop()


class Conn:
    """One connection: the server protocol, its transport, and a sans-IO client."""

    def __init__(self, proto: ChatServerProtocol, transport: StringTransport) -> None:
        self.proto = proto
        self.transport = transport
        self.client = ClientHandshake()

    def deliver(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def receive(self) -> list[Any]:
        """Everything the server wrote since last time, decoded by the client."""
        data = self.transport.value()
        self.transport.clear()
        if self.client.session is None:
            items: list[Any] = list(self.client.receive_data(data))
        else:
            self.client.session.receive_data(data)
            items = []
        if self.client.session is not None:
            while (msg := self.client.session.next_message()) is not None:
                items.append(msg)
        return items

    def flush(self) -> list[Any]:
        """Deliver the client's bytes, and its answers to the server's, until both are quiet."""
        items: list[Any] = []
        out = self.client.data_to_send()
        while out and not self.proto.closed:
            self.deliver(out)
            items += self.receive()
            out = self.client.data_to_send()
        return items

    def hello(self) -> None:
        self.client.start()
        events = self.flush()
        assert len(events) == 1 and isinstance(events[0], ServerIdentityReceived)
        self.client.accept_identity()

    def register(self, name: str, password: str = PASSWORD) -> list[Any]:
        self.client.register(name, password)
        return self.flush()

    def signin(self, name: str, password: str = PASSWORD) -> list[Any]:
        self.client.signin(name, password, b"d" * 16)
        return self.flush()

    def login(self, name: str, password: str = PASSWORD) -> None:
        self.hello()
        events = self.signin(name, password)
        assert events and isinstance(events[0], LoginComplete), events

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def drop(self) -> None:
        """The transport reports the close (StringTransport does not)."""
        if not self.proto.closed or self.transport.disconnecting:
            self.proto.connectionLost(None)


def failed(items: list[Any], code: ErrorCode) -> bool:
    """Whether ``items`` ends with the handshake failing (or a session Error) with ``code``."""
    last = items[-1] if items else None
    if isinstance(last, HandshakeFailed):
        return last.code == code
    return isinstance(last, m.Error) and last.code == code


def test_handshake_deadline() -> None:
    """A handshake that is not done 10 s after connecting is closed with HANDSHAKE_TIMEOUT,
    even if the client keeps sending (so the idle timer never fires)."""
    h = Harness(idle_timeout=60)
    conn = h.connect()
    conn.hello()
    h.clock.advance(9.9)
    assert not conn.closing
    h.clock.advance(0.1)
    assert conn.closing
    assert failed(conn.receive(), ErrorCode.HANDSHAKE_TIMEOUT)
    assert h.server.stats.errors["HANDSHAKE_TIMEOUT"] == 1


def test_idle_timeout_and_its_reset() -> None:
    """During the handshake, 5 s without bytes closes with IDLE_TIMEOUT; bytes reset it."""
    h = Harness()
    conn = h.connect()
    h.clock.advance(4.9)
    conn.hello()  # bytes arrive: the idle timer restarts
    h.clock.advance(4.9)
    assert not conn.closing
    h.clock.advance(0.1)
    assert conn.closing
    assert failed(conn.receive(), ErrorCode.IDLE_TIMEOUT)


def test_too_many_handshakes_is_server_busy() -> None:
    """Beyond max_handshakes handshakes in progress, a new connection gets SERVER_BUSY; when
    one handshake ends, a new connection is accepted again."""
    h = Harness(max_handshakes=2)
    first, _second = h.connect("10.0.0.1"), h.connect("10.0.0.2")
    third = h.connect("10.0.0.3")
    assert third.closing
    assert failed(third.receive(), ErrorCode.SERVER_BUSY)
    third.drop()
    first.drop()
    fourth = h.connect("10.0.0.4")
    assert not fourth.closing


def test_connections_per_ip_cap() -> None:
    """Beyond max_connections_per_ip from one address, SERVER_BUSY; other addresses are fine."""
    h = Harness(max_connections_per_ip=2)
    h.connect("10.0.0.1")
    h.connect("10.0.0.1")
    third = h.connect("10.0.0.1")
    assert third.closing
    assert failed(third.receive(), ErrorCode.SERVER_BUSY)
    assert not h.connect("10.0.0.2").closing


def _session(h: Harness) -> Conn:
    h.add_user("alice")
    conn = h.connect()
    conn.login("alice")
    return conn


def _frames(conn: Conn, *msgs: m.Message) -> list[bytes]:
    assert conn.client.session is not None
    return [conn.client.session.send(msg) for msg in msgs]


def test_a_session_that_may_send_no_more_closes_instead_of_raising() -> None:
    """When the session refuses to send (FRAME_LIMIT: a version-1 key's volume is used up),
    the adapter closes the connection (the client reconnects with new keys and resumes)
    instead of raising into the code that was delivering to it (a fan-out loop)."""
    h = Harness()
    conn = _session(h)
    session = conn.proto.session
    assert session is not None

    def exhausted(*args: Any, **kwargs: Any) -> bytes:
        raise LocalProtocolError(ErrorCode.FRAME_LIMIT, "no frames left under this key")

    session.send = exhausted  # type: ignore[method-assign]
    session.send_encoded = exhausted  # type: ignore[method-assign]
    conn.proto.send(m.Pong(1))
    assert conn.closing
    conn.proto.send_encoded(m.encode_message(m.Pong(2)))  # closed: nothing, no exception


def test_replayed_frame_closes_the_connection() -> None:
    """A session frame sent twice is rejected (BAD_IV): error frame, then close."""
    h = Harness()
    conn = _session(h)
    (ping,) = _frames(conn, m.Ping(1))
    conn.deliver(ping)
    assert conn.receive() == [m.Pong(1)]
    conn.deliver(ping)
    assert conn.closing
    assert failed(conn.receive(), ErrorCode.BAD_IV)


def test_reordered_frames_close_the_connection() -> None:
    """Two session frames delivered in the wrong order are rejected (BAD_IV)."""
    h = Harness()
    conn = _session(h)
    first, second = _frames(conn, m.Ping(1), m.Ping(2))
    conn.deliver(second + first)
    assert conn.closing
    assert failed(conn.receive(), ErrorCode.BAD_IV)


@pytest.mark.parametrize("offset", [3, 4])
def test_header_edited_frame_closes_the_connection(offset: int) -> None:
    """A frame whose header (length or padding byte, authenticated as AAD) was edited is
    rejected with an error frame and the connection closes."""
    h = Harness()
    conn = _session(h)
    (frame,) = _frames(conn, m.Ping(1))
    edited = bytearray(frame)
    edited[offset] ^= 0x01
    # A version-2 frame whose length was edited upward waits for more bytes: give it some.
    conn.deliver(bytes(edited) + bytes(300))
    assert conn.closing
    items = conn.receive()
    assert items and isinstance(items[-1], m.Error)
    assert items[-1].code in (ErrorCode.BAD_TAG, ErrorCode.BAD_PADDING, ErrorCode.MALFORMED_FRAME)


def test_edited_handshake_frame_closes_the_connection() -> None:
    """An encrypted Signin frame with one flipped ciphertext bit closes the connection (the
    error frame comes under the handshake keys)."""
    h = Harness()
    conn = h.connect()
    conn.hello()
    conn.client.signin("alice", PASSWORD, b"d" * 16)
    data = bytearray(conn.client.data_to_send())
    data[20] ^= 0x80
    conn.deliver(bytes(data))
    assert conn.closing
    assert failed(conn.receive(), ErrorCode.BAD_TAG)


def test_garbage_closes_with_an_error_and_others_are_served() -> None:
    """Bytes that are no frame close that connection with an error frame; the server goes on
    serving another connection."""
    h = Harness()
    h.add_user("alice")
    bad = h.connect("10.0.0.7")
    bad.deliver(b"\xff" * 64)
    assert bad.closing
    items = bad.receive()
    assert isinstance(items[-1], HandshakeFailed) and items[-1].code >= 100
    bad.drop()
    good = h.connect("10.0.0.8")
    good.login("alice")
    assert h.server.admission.handshakes_in_progress() == 0


def _fail_signins(h: Harness, name: str, ip: str, n: int) -> Conn:
    conn = h.connect(ip)
    conn.hello()
    for _ in range(n):
        (event,) = conn.signin(name, "wrong password")
        assert isinstance(event, SigninRejected) and event.code == ErrorCode.AUTH_FAILED
    return conn


def test_account_failure_limit_and_its_window() -> None:
    """After 10 failed sign-ins for an account, an 11th attempt (even with the right password)
    gets TRY_LATER with retry_after_ms > 0; after the window it works again."""
    h = Harness(max_attempts=100, idle_timeout=10_000, handshake_timeout=10_000)
    h.add_user("alice")
    conn = _fail_signins(h, "alice", "10.0.0.1", 10)
    (event,) = conn.signin("alice")
    assert isinstance(event, SigninRejected) and event.code == ErrorCode.TRY_LATER
    assert 0 < event.retry_after_ms <= 900_000 + 1
    # from another address too (not the account's last good IP: it never signed in)
    other = h.connect("10.0.0.2")
    other.hello()
    (event,) = other.signin("alice")
    assert isinstance(event, SigninRejected) and event.code == ErrorCode.TRY_LATER
    h.clock.advance(h.server.limits.account_window)
    fresh = h.connect("10.0.0.3")
    fresh.login("alice")


def test_account_limit_spares_the_last_good_ip() -> None:
    """The per-account limit does not apply from the account's last successful address."""
    h = Harness(max_attempts=100)
    h.add_user("alice")
    home = h.connect("10.0.0.1")
    home.login("alice")
    home.drop()
    _fail_signins(h, "alice", "203.0.113.5", 10)
    attacker = h.connect("203.0.113.6")
    attacker.hello()
    (event,) = attacker.signin("alice")
    assert isinstance(event, SigninRejected) and event.code == ErrorCode.TRY_LATER
    h.connect("10.0.0.1").login("alice")


def test_ip_failure_limit() -> None:
    """After ip_failures failed sign-ins from one address (any names), that address gets
    TRY_LATER; another address is unaffected."""
    h = Harness(max_attempts=100, ip_failures=3)
    h.add_user("alice")
    conn = h.connect("10.0.0.1")
    conn.hello()
    for name in ("x1", "x2", "x3"):
        (event,) = conn.signin(name, "wrong password")
        assert isinstance(event, SigninRejected) and event.code == ErrorCode.AUTH_FAILED
    (event,) = conn.signin("alice")
    assert isinstance(event, SigninRejected) and event.code == ErrorCode.TRY_LATER
    assert event.retry_after_ms > 0
    h.connect("10.0.0.2").login("alice")


def test_registration_limit_per_ip() -> None:
    """Beyond registrations_per_ip accounts from one address, NCK register TRY_LATER; another
    address may still register; after the window the first may again."""
    h = Harness(registrations_per_ip=2)
    conn = h.connect("10.0.0.1")
    conn.hello()
    assert conn.register("u1") == [Registered("u1")]
    assert conn.register("u2") == [Registered("u2")]
    (event,) = conn.register("u3")
    assert isinstance(event, RegisterRejected) and event.code == ErrorCode.TRY_LATER
    assert event.retry_after_ms > 0
    other = h.connect("10.0.0.2")
    other.hello()
    assert other.register("u3") == [Registered("u3")]
    h.clock.advance(h.server.limits.registration_window)
    again = h.connect("10.0.0.1")
    again.hello()
    assert again.register("u4") == [Registered("u4")]


def test_rejection_cap_per_connection() -> None:
    """The 5th rejected attempt on one connection is answered TOO_MANY_ATTEMPTS and closes."""
    h = Harness()
    h.add_user("alice")
    conn = _fail_signins(h, "alice", "10.0.0.1", 4)
    assert not conn.closing
    (event,) = conn.signin("alice", "wrong password")
    assert isinstance(event, HandshakeFailed) and event.code == ErrorCode.TOO_MANY_ATTEMPTS
    assert conn.closing


def test_ping_timeout_closes_a_silent_session() -> None:
    """A signed-in client is pinged every ping_interval; one that answers stays, one that
    stays silent for ping_timeout is closed with PING_TIMEOUT."""
    h = Harness()
    conn = _session(h)
    h.clock.advance(h.server.limits.ping_interval)
    (ping,) = conn.receive()
    assert isinstance(ping, m.Ping)
    (pong,) = _frames(conn, m.Pong(ping.nonce))
    conn.deliver(pong)
    h.clock.advance(h.server.limits.ping_timeout)
    assert not conn.closing
    h.clock.advance(h.server.limits.ping_interval - h.server.limits.ping_timeout)
    (ping,) = conn.receive()
    assert isinstance(ping, m.Ping)
    h.clock.advance(h.server.limits.ping_timeout)
    assert conn.closing
    assert failed(conn.receive(), ErrorCode.PING_TIMEOUT)


def test_unsupported_version() -> None:
    """A Hello with another protocol version is refused with UNSUPPORTED_VERSION."""
    h = Harness()
    conn = h.connect()
    body = m.encode_message(m.Hello(99, b"r" * 32, b"k" * 32))
    conn.deliver(len(body).to_bytes(4, "big") + body)
    assert conn.closing
    assert failed(conn.receive(), ErrorCode.UNSUPPORTED_VERSION)


def test_remote_error_type_is_exported() -> None:
    """Client-side tampering checks raise RemoteProtocolError (sanity of the harness)."""
    with pytest.raises(RemoteProtocolError):
        ClientHandshake().receive_data(b"\xff" * 8)
