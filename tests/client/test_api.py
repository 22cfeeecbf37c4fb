"""connect() and ChatClient over real loopback TCP against a tiny in-test server."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol

from chatproto.client import ChatClient, LoginComplete, connect
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
