"""The client Protocol and ChatClient driven over a StringTransport against an in-test server.

The server side is the real :class:`ServerHandshake` with a fixed identity, answering
credentials from a dict (no database), and a :class:`Session` for the session messages.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from chatproto.client import (
    ChatClient,
    ChatListener,
    ConnectionLost,
    HandshakeError,
    HandshakeTimeout,
    InvalidState,
    KnownServers,
    RegisterError,
    ServerError,
    ServerKeyChanged,
    SigninError,
    UnknownUser,
    UntrustedServer,
)
from chatproto.client.api import IMAGE_CHUNK_BYTES
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode
from chatproto.wire.handshake import (
    ClientState,
    CredentialsReceived,
    LoginComplete,
    LoginVerified,
    ServerEvent,
    ServerHandshake,
)
from chatproto.wire.keys import fingerprint
from chatproto.wire.session import Session

IDENTITY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_IDENTITY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
HOST = "chat.example:7000"


def _fp(key: Ed25519PrivateKey) -> str:
    return fingerprint(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


FP = _fp(IDENTITY)
OTHER_FP = _fp(OTHER_IDENTITY)
PASSWORD = "correct horse"


class FakeServer:
    """The server's side of one connection, without I/O: bytes in, bytes out."""

    def __init__(self, identity: Ed25519PrivateKey = IDENTITY, max_attempts: int = 5) -> None:
        self.handshake = ServerHandshake(identity, max_attempts=max_attempts)
        self.passwords = {"alice": PASSWORD}
        self.session: Session | None = None
        self.credentials: list[CredentialsReceived] = []
        self.received: list[Any] = []

    def receive(self, data: bytes) -> bytes:
        if self.session is None:
            self._handle(self.handshake.receive_data(data))
            out = self.handshake.data_to_send()
        else:
            self.session.receive_data(data)
            out = b""
        if self.session is not None:
            while (msg := self.session.next_message()) is not None:
                self.received.append(msg)
        return out

    def _handle(self, events: list[ServerEvent]) -> None:
        for event in events:
            if isinstance(event, CredentialsReceived):
                self.credentials.append(event)
                self._handle(self._decide(event))
            elif isinstance(event, LoginVerified):
                self.session = self.handshake.complete(b"S" * 16, 1_700_000_000_000)

    def _decide(self, creds: CredentialsReceived) -> list[ServerEvent]:
        hs = self.handshake
        if creds.register:
            if creds.name in self.passwords:
                return hs.reject_register(ErrorCode.NAME_TAKEN, "name taken")
            self.passwords[creds.name] = creds.password
            return hs.accept_register()
        if self.passwords.get(creds.name) == creds.password:
            return hs.accept_signin()
        return hs.reject_signin(ErrorCode.AUTH_FAILED, "wrong name or password", 250)

    def send(self, *msgs: m.Message) -> bytes:
        assert self.session is not None
        return self.session.send_many(msgs)

    def of_type(self, cls: type[Any]) -> list[Any]:
        return [msg for msg in self.received if isinstance(msg, cls)]


class Recorder(ChatListener):
    """Records every listener call as ``(method, args)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattribute__(self, name: str) -> Any:
        if name in ChatListener.__dict__ and not name.startswith("_"):
            return lambda *args: self.calls.append((name, args))
        return super().__getattribute__(name)

    def named(self, method: str) -> list[tuple[Any, ...]]:
        return [args for name, args in self.calls if name == method]


class Harness:
    """A ChatClient on a StringTransport, a FakeServer and a clock, pumped by hand."""

    def __init__(self, server: FakeServer | None = None, **client_args: Any) -> None:
        self.clock = MemoryReactorClock()
        self.listener = Recorder()
        client_args.setdefault("server_fingerprint", FP)
        self.client = ChatClient(self.clock, HOST, listener=self.listener, **client_args)
        self.server = server if server is not None else FakeServer()
        self.protocol = self.client.build_protocol()
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def pump(self) -> None:
        """Move bytes both ways until both sides are quiet."""
        while True:
            while self.transport.producer is not None:
                self.transport.producer.resumeProducing()
            data = self.transport.value()
            self.transport.clear()
            if not data:
                return
            reply = self.server.receive(data)
            if reply:
                self.protocol.dataReceived(reply)

    def push(self, *msgs: m.Message) -> None:
        """The server sends messages; the client's answers are pumped back."""
        self.protocol.dataReceived(self.server.send(*msgs))
        self.pump()

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def result(d: Deferred[Any]) -> Any:
    """The result of a fired Deferred (raising its failure)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def failure_of(d: Deferred[Any], cls: type[BaseException]) -> Any:
    """The exception a fired Deferred failed with, checked to be a ``cls``."""
    with pytest.raises(cls) as info:
        result(d)
    return info.value


def connected(**client_args: Any) -> Harness:
    h = Harness(**client_args)
    h.pump()
    assert result(h.client.ready) is h.client
    return h


def signed_in(**client_args: Any) -> Harness:
    h = connected(**client_args)
    d = h.client.signin("alice", PASSWORD)
    h.pump()
    assert isinstance(result(d), LoginComplete)
    return h


# --- handshake -------------------------------------------------------------------------------


def test_register_then_signin() -> None:
    """register() fires with None on ACK register, then signin() on the same connection fires
    with LoginComplete; the listener sees "connected" then "signed_in"."""
    h = connected()
    assert h.client.state == "connected"
    result_reg = h.client.register("bob", "longpassword")
    h.pump()
    assert result(result_reg) is None
    assert h.server.passwords["bob"] == "longpassword"
    d = h.client.signin("bob", "longpassword")
    h.pump()
    login = result(d)
    assert isinstance(login, LoginComplete) and login.name == "bob"
    assert h.client.state == "signed_in" and h.client.name == "bob"
    assert h.server.credentials[-1].device_id == h.client.device_id
    assert [a[0] for a in h.listener.named("connection_state_changed")] == [
        "connected", "signed_in"]


def test_register_name_taken() -> None:
    """NCK register fails register() with RegisterError carrying the code and reason."""
    h = connected()
    d = h.client.register("alice", "longpassword")
    h.pump()
    err = failure_of(d, RegisterError)
    assert err.code == ErrorCode.NAME_TAKEN and err.reason == "name taken"


def test_wrong_password_then_retry() -> None:
    """A wrong password fails signin() with SigninError (code, reason, retry_after_ms); a
    second signin() on the same connection succeeds."""
    h = connected()
    d = h.client.signin("alice", "wrong password")
    h.pump()
    err = failure_of(d, SigninError)
    assert (err.code, err.retry_after_ms) == (ErrorCode.AUTH_FAILED, 250)
    assert h.client.state == "connected"
    d = h.client.signin("alice", PASSWORD)
    h.pump()
    assert result(d).name == "alice"


def test_too_many_attempts_is_a_handshake_error() -> None:
    """When the server gives up (TOO_MANY_ATTEMPTS), signin() fails with HandshakeError and the
    client closes the connection."""
    h = connected(server=FakeServer(max_attempts=1))
    d = h.client.signin("alice", "wrong password")
    h.pump()
    err = failure_of(d, HandshakeError)
    assert err.code == ErrorCode.TOO_MANY_ATTEMPTS
    assert h.transport.disconnecting


def test_session_request_before_signin_fails() -> None:
    """A session request before signing in fails at once with InvalidState, sending nothing."""
    h = connected()
    failure_of(h.client.send_text("bob", "hi"), InvalidState)
    assert h.transport.value() == b""


def test_changed_key_is_refused() -> None:
    """A pinned host presenting another key fails ready with ServerKeyChanged naming both
    fingerprints; the client closes and never sends Signin."""
    pins_path = KnownServersFile()
    pins_path.pins.add(HOST, OTHER_FP)
    h = Harness(server_fingerprint=None, known_servers=pins_path.pins)
    h.pump()
    err = failure_of(h.client.ready, ServerKeyChanged)
    assert (err.host, err.expected, err.got) == (HOST, OTHER_FP, FP)
    assert OTHER_FP in str(err) and FP in str(err)
    assert h.transport.disconnecting
    assert h.protocol.handshake.state is ClientState.AWAIT_IDENTITY_DECISION
    failure_of(h.client.signin("alice", PASSWORD), ConnectionLost)
    h.pump()
    assert h.server.credentials == []


def test_explicit_fingerprint_mismatch_is_refused() -> None:
    """An explicit server_fingerprint that does not match fails with ServerKeyChanged."""
    h = Harness(server_fingerprint=OTHER_FP)
    h.pump()
    failure_of(h.client.ready, ServerKeyChanged)
    assert h.server.credentials == []


def test_unknown_server_without_callback_is_refused() -> None:
    """With neither a pin nor a trust callback, the server is refused (UntrustedServer)."""
    h = Harness(server_fingerprint=None, known_servers=KnownServersFile().pins)
    h.pump()
    err = failure_of(h.client.ready, UntrustedServer)
    assert err.fingerprint == FP


def test_trust_on_first_use_pins_the_key() -> None:
    """An unknown host is passed to trust_on_first_use; a Deferred answering True pins the key
    and fires ready."""
    pins = KnownServersFile().pins
    asked: list[tuple[str, str]] = []
    decision: Deferred[bool] = Deferred()

    def trust(host: str, fp: str) -> Deferred[bool]:
        asked.append((host, fp))
        return decision

    h = Harness(server_fingerprint=None, known_servers=pins, trust_on_first_use=trust)
    h.pump()
    assert asked == [(HOST, FP)] and not h.client.ready.called
    decision.callback(True)
    assert result(h.client.ready) is h.client
    assert pins.lookup(HOST) == FP


def test_trust_on_first_use_refusal() -> None:
    """trust_on_first_use answering False fails ready with UntrustedServer and pins nothing."""
    pins = KnownServersFile().pins
    h = Harness(server_fingerprint=None, known_servers=pins,
                trust_on_first_use=lambda host, fp: False)
    h.pump()
    failure_of(h.client.ready, UntrustedServer)
    assert pins.lookup(HOST) is None


def test_handshake_timeout() -> None:
    """If the server does not answer Hello within handshake_timeout, the connection is aborted
    and ready fails with HandshakeTimeout."""
    h = Harness(handshake_timeout=5)
    h.clock.advance(4.9)
    assert not h.transport.disconnecting
    h.clock.advance(0.1)
    assert h.transport.disconnected
    h.lose()
    failure_of(h.client.ready, HandshakeTimeout)


# --- requests --------------------------------------------------------------------------------


def test_requests_answered_with_ok_and_error() -> None:
    """Requests get increasing req numbers from 1; Ok fires the group request with None, and
    Error fails the other with a ServerError subclass carrying code, reason and names."""
    h = signed_in()
    rename = h.client.group_rename(9, "new title")
    create = h.client.create_chat("nobody")
    h.pump()
    assert h.server.received == [m.GroupRename(1, 9, "new title"), m.Create(2, "nobody")]
    h.push(m.Error(2, int(ErrorCode.UNKNOWN_USER), "no such user", ("nobody",)), m.Ok(1))
    assert result(rename) is None
    err = failure_of(create, UnknownUser)
    assert isinstance(err, ServerError)
    assert (err.code, err.reason, err.names) == (ErrorCode.UNKNOWN_USER, "no such user",
                                                 ("nobody",))


def test_replies_are_transformed() -> None:
    """send_text targets a user (group 0) or a group (to=None); list_groups and sync return the
    reply's payload."""
    h = signed_in()
    to_user = h.client.send_text("bob", "hi", client_msg_id=b"M" * 16)
    to_group = h.client.send_text(5, "all")
    groups = h.client.list_groups()
    sync = h.client.sync(3)
    h.pump()
    chat1, chat2 = h.server.of_type(m.Chat)
    assert (chat1.group_id, chat1.to, chat1.body, chat1.client_msg_id) == (0, "bob", b"hi",
                                                                           b"M" * 16)
    assert (chat2.group_id, chat2.to, len(chat2.client_msg_id)) == (5, None, 16)
    info = m.GroupInfo(5, "team", "owner", 3)
    h.push(m.SendAck(1, b"M" * 16, 0, 10, 1000), m.SendAck(2, chat2.client_msg_id, 5, 4, 1001),
           m.Groups(3, (info,)), m.SyncDone(4, 42))
    assert result(to_user).conv_seq == 10
    assert result(to_group).group_id == 5
    assert result(groups) == (info,)
    assert result(sync) == 42


def test_unsolicited_error_goes_to_listener() -> None:
    """An Error with req 0 is reported to listener.error_received."""
    h = signed_in()
    h.push(m.Error(0, int(ErrorCode.INTERNAL_ERROR), "oops", ()))
    assert h.listener.named("error_received") == [(ErrorCode.INTERNAL_ERROR, "oops")]


def test_pending_requests_fail_on_connection_lost() -> None:
    """When the connection is lost, every pending Deferred fails with ConnectionLost and the
    listener hears "offline" and connection_lost."""
    h = signed_in()
    d1 = h.client.send_text("bob", "hi")
    d2 = h.client.presence()
    h.pump()
    h.lose()
    failure_of(d1, ConnectionLost)
    failure_of(d2, ConnectionLost)
    assert h.client.state == "offline"
    assert h.listener.named("connection_state_changed")[-1] == ("offline",)
    assert len(h.listener.named("connection_lost")) == 1
    failure_of(h.client.send_text("bob", "again"), ConnectionLost)


def test_quit() -> None:
    """quit() sends Quit, and after AckQuit closes and fires once the connection is closed."""
    h = signed_in()
    d = h.client.quit()
    h.pump()
    assert h.server.received == [m.Quit(1)]
    fired: list[object] = []
    d.addBoth(fired.append)
    h.push(m.AckQuit(1))
    assert h.transport.disconnecting and fired == []
    h.lose()
    assert fired == [None]


# --- pushes ----------------------------------------------------------------------------------


def deliver(seq: int, body: bytes = b"hello", image: m.ImageInfo | None = None) -> m.Deliver:
    ctype = m.ContentType.IMAGE if image is not None else m.ContentType.TEXT
    return m.Deliver(seq, 0, "bob", "alice", seq, 1000 + seq, b"C" * 16, ctype, body, image)


def test_deliver_reaches_listener_and_is_acked() -> None:
    """Delivered messages go to listener.message_received; one cumulative DeliveryAck for the
    batch is sent on the next reactor turn."""
    h = signed_in()
    h.push(deliver(1), deliver(2, b"again"))
    assert h.listener.named("message_received") == [(deliver(1), None),
                                                    (deliver(2, b"again"), None)]
    assert h.server.of_type(m.DeliveryAck) == []
    h.clock.advance(0)
    h.pump()
    assert h.server.of_type(m.DeliveryAck) == [m.DeliveryAck(2)]


def test_pushes_reach_listener_and_pings_are_answered() -> None:
    """Receipts, typing and presence events reach the listener; a Ping is answered by Pong."""
    h = signed_in()
    receipt = m.Receipt(m.ReceiptKind.READ, 0, "bob", 3)
    typing = m.TypingEvent(0, "bob", True)
    presence = m.PresenceEvent("bob", False, 123)
    h.push(receipt, typing, presence, m.Ping(77))
    assert h.listener.named("receipt_received") == [(receipt,)]
    assert h.listener.named("typing_received") == [(typing,)]
    assert h.listener.named("presence_changed") == [(presence,)]
    assert h.server.received == [m.Pong(77)]


def test_image_is_reassembled_and_checked() -> None:
    """An image from Deliver + ImageChunks (interleaved with another message) is given to the
    listener whole once its SHA-256 matches; the ack does not pass it until then."""
    h = signed_in()
    data = bytes(range(256)) * 10
    info = m.ImageInfo(len(data), hashlib.sha256(data).digest(), "image/png")
    first = deliver(7, data[:1000], info)
    h.push(first, deliver(8))
    h.clock.advance(0)
    h.pump()
    assert h.listener.named("message_received") == [(deliver(8), None)]
    assert h.server.of_type(m.DeliveryAck) == [m.DeliveryAck(6)]
    h.push(m.ImageChunk(7, 1, data[1000:2000]), m.ImageChunk(7, 2, data[2000:]))
    h.clock.advance(0)
    h.pump()
    assert h.listener.named("message_received")[-1] == (first, data)
    assert h.server.of_type(m.DeliveryAck) == [m.DeliveryAck(6), m.DeliveryAck(8)]


def test_image_hash_mismatch_is_reported() -> None:
    """A reassembled image whose SHA-256 does not match goes to error_received, not to
    message_received."""
    h = signed_in()
    data = b"x" * 3000
    info = m.ImageInfo(len(data), hashlib.sha256(b"something else").digest(), None)
    h.push(deliver(1, data[:2000], info), m.ImageChunk(1, 1, data[2000:]))
    assert h.listener.named("message_received") == []
    [(code, reason)] = h.listener.named("error_received")
    assert code == ErrorCode.BAD_IMAGE and "SHA-256" in reason


def test_send_image_in_chunks() -> None:
    """send_image sends Chat with the first 256 KiB and ImageInfo, then ImageChunk(ref=req)
    frames for the rest, one frame per producer turn; SendAck fires the Deferred."""
    h = signed_in()
    data = bytes(range(256)) * (3 * IMAGE_CHUNK_BYTES // 256) + b"tail"
    d = h.client.send_image("bob", data)
    assert h.transport.producer is not None  # nothing written before the transport asks
    h.pump()
    chat, *chunks = h.server.received
    assert isinstance(chat, m.Chat) and chat.content_type == m.ContentType.IMAGE
    assert chat.image == m.ImageInfo(len(data), hashlib.sha256(data).digest(), None)
    assert len(chat.body) == IMAGE_CHUNK_BYTES
    assert [(c.ref, c.index) for c in chunks] == [(chat.req, 1), (chat.req, 2), (chat.req, 3)]
    assert chat.body + b"".join(c.data for c in chunks) == data
    h.push(m.SendAck(chat.req, chat.client_msg_id, 0, 1, 1000))
    assert result(d).conv_seq == 1


def test_send_image_from_path(tmp_path: Any) -> None:
    """send_image accepts a file path."""
    h = signed_in()
    path = tmp_path / "pic.png"
    path.write_bytes(b"PNG" * 10)
    h.client.send_image(5, path)
    h.pump()
    [chat] = h.server.received
    assert chat.body == b"PNG" * 10 and chat.group_id == 5 and chat.to is None


# --- ping ------------------------------------------------------------------------------------


def test_ping_answered_keeps_the_connection() -> None:
    """Signed in, the client pings every ping_interval; a Pong within ping_timeout keeps the
    connection and schedules the next ping."""
    h = signed_in(ping_interval=30, ping_timeout=10)
    h.clock.advance(30)
    h.pump()
    [ping] = h.server.of_type(m.Ping)
    h.push(m.Pong(ping.nonce))
    h.clock.advance(10)
    assert not h.transport.disconnecting
    h.clock.advance(20)
    h.pump()
    assert len(h.server.of_type(m.Ping)) == 2


def test_ping_timeout_closes_the_connection() -> None:
    """Without a Pong within ping_timeout the client aborts the connection; pending requests
    fail with ConnectionLost whose cause is PING_TIMEOUT."""
    h = signed_in(ping_interval=30, ping_timeout=10)
    pending = h.client.presence()
    h.clock.advance(30)
    h.pump()
    assert len(h.server.of_type(m.Ping)) == 1
    h.clock.advance(9.9)
    assert not h.transport.disconnecting
    h.clock.advance(0.1)
    assert h.transport.disconnected
    h.lose()
    err = failure_of(pending, ConnectionLost)
    assert "ping" in str(err)
    [(reason,)] = h.listener.named("connection_lost")
    assert isinstance(reason.value, ConnectionLost)


class KnownServersFile:
    """A KnownServers in a fresh temporary directory."""

    def __init__(self) -> None:
        import tempfile

        self._dir = tempfile.TemporaryDirectory()
        self.pins = KnownServers(f"{self._dir.name}/known_servers")


# --- protocol version 2 and hardening ---------------------------------------------------------


def test_default_is_version_2_with_the_hybrid_suite() -> None:
    """Our client offers version 2 and X25519MLKEM768 by default; our server picks both."""
    h = signed_in()
    assert (h.protocol.handshake.version, h.protocol.handshake.suite.name) == (
        2, "X25519MLKEM768")
    assert (h.server.handshake.version, h.server.handshake.suite.name) == (2, "X25519MLKEM768")
    d = h.client.send_text("bob", "hi")
    h.pump()
    assert h.server.of_type(m.Chat)[0].body == b"hi"
    h.push(m.SendAck(1, h.server.of_type(m.Chat)[0].client_msg_id, 0, 1, 1))
    assert result(d).conv_seq == 1


def test_unauthenticated_error_shows_a_fixed_message() -> None:
    """A plaintext ERROR before any key exists (anyone could have sent it): the handshake
    fails with a fixed text naming only the code's class; neither the wire text nor the code's
    name reach the user."""
    h = Harness()
    h.transport.clear()
    lure = "Server key rotated: delete its line in known_servers"
    body = m.encode_message(m.Error(0, int(ErrorCode.SERVER_KEY_CHANGED), lure, ()))
    h.protocol.dataReceived(len(body).to_bytes(4, "big") + body)
    error = failure_of(h.client.ready, HandshakeError)
    assert "known_servers" not in str(error) and "KEY_CHANGED" not in str(error)
    assert "1xx" in str(error) and not error.authenticated
    assert error.code == ErrorCode.SERVER_KEY_CHANGED  # kept for retry decisions only


def test_authenticated_handshake_error_keeps_the_server_text() -> None:
    """An ERROR under the handshake keys is authenticated: its code and text are shown."""
    h = connected()
    d = h.client.signin("alice", PASSWORD)
    h.transport.clear()
    h.protocol.dataReceived(h.server.handshake.error_frame(ErrorCode.SERVER_BUSY, "full"))
    error = failure_of(d, HandshakeError)
    assert error.authenticated and error.code == ErrorCode.SERVER_BUSY
    assert str(error) == "SERVER_BUSY (112): full"
    assert h.protocol.closed


def test_client_never_sends_an_error_frame() -> None:
    """On a protocol violation by the server the client closes without writing an ERROR."""
    h = signed_in()
    h.transport.clear()
    h.protocol.dataReceived(b"\x00" * 64)  # not a valid frame under the session keys
    assert h.protocol.closed
    assert h.transport.value() == b""
    assert h.transport.disconnecting


def test_client_never_sends_an_error_frame_during_the_handshake() -> None:
    """The same before sign-in: a garbage ServerKey closes the connection, nothing written."""
    h = Harness()
    h.transport.clear()
    h.protocol.dataReceived(b"\x00\x00\x00\x03abc")
    assert h.protocol.closed
    assert h.transport.value() == b""


def test_version_1_volume_limit_closes_the_connection() -> None:
    """A version-1 session whose keys reached their volume limit refuses to send and closes
    the connection (the owner reconnects with fresh keys)."""
    from chatproto.client.protocol import ChatClientProtocol
    from chatproto.wire.errors import LocalProtocolError
    from chatproto.wire.frame import FrameDecoder, FrameEncoder
    from chatproto.wire.handshake import ClientHandshake

    lost: list[Failure] = []

    class Delegate:
        def handshake_event(self, protocol: Any, event: Any) -> None:
            pass

        def message_received(self, protocol: Any, msg: Any) -> None:
            pass

        def connection_lost(self, protocol: Any, reason: Failure) -> None:
            lost.append(reason)

    protocol = ChatClientProtocol(Delegate(), MemoryReactorClock(),
                                  handshake=ClientHandshake(version=1))
    transport = StringTransport()
    protocol.makeConnection(transport)
    key, iv = bytes(32), bytes(12)
    protocol.session = Session(FrameEncoder(key, iv), FrameDecoder(key, iv), volume_limit=400)
    with pytest.raises(LocalProtocolError) as info:
        for i in range(20):
            protocol.send(m.Ping(i))
    assert info.value.code is ErrorCode.FRAME_LIMIT
    assert protocol.closed and transport.disconnecting
