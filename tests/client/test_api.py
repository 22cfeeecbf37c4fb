"""connect() and ChatClient over real loopback TCP against a tiny in-test server."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet import task
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol

from chatproto.client import (
    ChatClient,
    LoginComplete,
    ServerTrust,
    Timeouts,
    connect,
    encode_text,
)
from chatproto.client.options import client_options
from chatproto.wire import messages as m
from chatproto.wire.handshake import (
    CredentialsReceived,
    LoginVerified,
    ServerEvent,
    ServerHandshake,
)
from chatproto.wire.keys import fingerprint
from chatproto.wire.session import Session

IDENTITY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
FP = fingerprint(IDENTITY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


class TinyServer(Protocol):
    """Accepts any password, answers Chat with SendAck and Quit with AckQuit (then closes)."""

    transport: Any

    def connectionMade(self) -> None:
        self.handshake = ServerHandshake(IDENTITY)
        self.session: Session | None = None
        self.received: list[m.Message] = []
        self.images: dict[int, tuple[m.Chat, bytearray]] = {}

    def dataReceived(self, data: bytes) -> None:
        if self.session is None:
            self._handle(self.handshake.receive_data(data))
            self.transport.write(self.handshake.data_to_send())
        else:
            self.session.receive_data(data)
        if self.session is None:
            return
        while (msg := self.session.next_message()) is not None:
            self.received.append(msg)
            if isinstance(msg, m.Chat) and msg.image is not None:
                self.images[msg.req] = (msg, bytearray(msg.body))
                self._image_progress(msg.req)
            elif isinstance(msg, m.ImageChunk):
                self.images[msg.ref][1].extend(msg.data)
                self._image_progress(msg.ref)
            elif isinstance(msg, m.Chat):
                self._send_ack(msg)
            elif isinstance(msg, m.Quit):
                self.transport.write(self.session.send(m.AckQuit(msg.req)))
                self.transport.loseConnection()

    def _image_progress(self, req: int) -> None:
        chat, data = self.images[req]
        assert chat.image is not None
        if len(data) == chat.image.total_size:
            self._send_ack(chat)

    def _send_ack(self, chat: m.Chat) -> None:
        assert self.session is not None
        self.transport.write(self.session.send(
            m.SendAck(chat.req, chat.client_msg_id, chat.group_id, 1, 1_700_000_000_000)))

    def _handle(self, events: list[ServerEvent]) -> None:
        for event in events:
            if isinstance(event, CredentialsReceived):
                self._handle(self.handshake.accept_signin())
            elif isinstance(event, LoginVerified):
                self.session = self.handshake.complete(b"S" * 16, 1_700_000_000_000)


@pytest_twisted.inlineCallbacks
def test_signin_send_text_and_quit_over_tcp() -> Any:
    """connect() over loopback TCP with the right fingerprint fires with a ChatClient; signin
    fires with LoginComplete, send_text and send_image (streamed by the transport's pull
    producer) with the server's SendAck, and quit completes with the
    connection closed."""
    from twisted.internet import reactor

    servers: list[TinyServer] = []

    def build() -> TinyServer:
        servers.append(TinyServer())
        return servers[-1]

    port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        Factory.forProtocol(build))
    try:
        client = yield connect(reactor, f"tcp:127.0.0.1:{port.getHost().port}",
                               server_fingerprint=FP)
        assert isinstance(client, ChatClient) and client.state == "connected"
        assert client.fingerprint == FP
        login = yield client.signin("alice", "any password")
        assert isinstance(login, LoginComplete) and login.name == "alice"
        ack = yield client.send_text("bob", "hello", client_msg_id=b"M" * 16)
        assert isinstance(ack, m.SendAck)
        assert (ack.req, ack.client_msg_id, ack.conv_seq) == (1, b"M" * 16, 1)
        image = bytes(range(256)) * 4096 + b"end"  # 1 MiB and a bit: 5 frames
        image_ack = yield client.send_image(7, image)
        assert image_ack.req == 2 and image_ack.group_id == 7
        yield client.quit()
        assert client.state == "offline"
        [server] = servers
        chat = server.received[0]
        assert isinstance(chat, m.Chat) and (chat.to, chat.body) == ("bob", b"hello")
        assert bytes(server.images[2][1]) == image
        assert m.Quit(3) in server.received
    finally:
        yield port.stopListening()


# --- options, text check, acknowledgements (no network) -------------------------------------


class RecordingProtocol:
    """Stands in for the connection's protocol: records what the client sends."""

    closed = False

    def __init__(self) -> None:
        self.sent: list[m.Message] = []

    def send(self, msg: m.Message) -> None:
        self.sent.append(msg)


def _deliver(seq: int, image_size: int = 0) -> m.Deliver:
    if image_size:
        info = m.ImageInfo(image_size, bytes(32), None)
        return m.Deliver(seq, 0, "bob", "alice", seq, 0, bytes(16), m.ContentType.IMAGE,
                         b"\x89PNG", info)
    return m.Deliver(seq, 0, "bob", "alice", seq, 0, bytes(16), m.ContentType.TEXT, b"hi",
                     None)


def _client(**kw: Any) -> tuple[ChatClient, RecordingProtocol, task.Clock]:
    clock = task.Clock()
    client = ChatClient(clock, "chat.example:7000", **kw)
    protocol = RecordingProtocol()
    client._protocol = protocol  # type: ignore[assignment]
    return client, protocol, clock


def test_deliveries_are_acknowledged_at_the_end_of_the_turn_by_default() -> None:
    """auto_ack (the default): one cumulative DeliveryAck after a turn's deliveries."""
    client, protocol, clock = _client()
    for seq in (1, 2, 3):
        client.message_received(protocol, _deliver(seq))  # type: ignore[arg-type]
    clock.advance(0)
    assert protocol.sent == [m.DeliveryAck(3)]


def test_manual_acknowledgement_sends_only_what_the_application_handled() -> None:
    """auto_ack=False: nothing is acknowledged by itself; acknowledge(n) sends DeliveryAck(n)
    once (never backwards), and never past an image still arriving."""
    client, protocol, clock = _client(auto_ack=False)
    for seq in (1, 2, 3):
        client.message_received(protocol, _deliver(seq))  # type: ignore[arg-type]
    clock.advance(10)
    assert protocol.sent == []
    client.acknowledge(1)
    client.acknowledge(1)
    assert protocol.sent == [m.DeliveryAck(1)]
    client.message_received(protocol, _deliver(4, image_size=100))  # type: ignore[arg-type]
    client.message_received(protocol, _deliver(5))  # type: ignore[arg-type]
    client.acknowledge(5)
    assert protocol.sent == [m.DeliveryAck(1), m.DeliveryAck(3)]


def test_options_are_two_objects_and_their_fields_as_keywords() -> None:
    """ServerTrust and Timeouts carry the options; their fields given as keywords override
    them; an unknown keyword is a TypeError."""
    pins = ServerTrust(server_fingerprint=FP)
    trust, timeouts = client_options(pins, None, {"ping_timeout": 3.0})
    assert trust == pins and timeouts == Timeouts(ping_timeout=3.0)
    client = ChatClient(task.Clock(), "h:1", trust=pins, handshake_timeout=2)
    assert client.trust.server_fingerprint == FP and client.timeouts.handshake_timeout == 2
    with pytest.raises(TypeError, match="ping_timout"):
        client_options(None, None, {"ping_timout": 1})


def test_encode_text_is_the_one_text_check() -> None:
    """Empty and over-long texts are refused before anything is sent."""
    assert encode_text("héllo") == "héllo".encode()
    with pytest.raises(ValueError, match="empty"):
        encode_text("")
    with pytest.raises(ValueError, match="longer"):
        encode_text("x" * (m.MAX_TEXT_BYTES + 1))
