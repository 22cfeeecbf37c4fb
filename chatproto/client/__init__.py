"""The chatproto client library: :func:`connect` returns a :class:`ChatClient` (one
connection); :func:`open_session` returns a :class:`ChatSession` (reconnects by itself, with
an outbox and a cursor)."""

from chatproto.client.api import (
    IMAGE_CHUNK_BYTES,
    MAX_IMAGE_BYTES,
    ChatClient,
    ChatListener,
    ServerTrust,
    Timeouts,
    TrustCallback,
    check_server_identity,
    encode_text,
)
from chatproto.client.backoff import Backoff
from chatproto.client.endpoint import connect
from chatproto.client.errors import (
    ChatClientError,
    ConnectionLost,
    HandshakeError,
    HandshakeTimeout,
    ImageTooLarge,
    InvalidState,
    NotAllowed,
    NotAMember,
    RegisterError,
    ServerError,
    ServerKeyChanged,
    SessionClosed,
    SigninError,
    UnknownGroup,
    UnknownUser,
    UntrustedServer,
)
from chatproto.client.known_servers import KnownServers, endpoint_host
from chatproto.client.outbox import Outbox, OutboxEntry
from chatproto.client.protocol import ChatClientProtocol, ProtocolDelegate
from chatproto.client.reconnect import ChatSession, open_session
from chatproto.wire.handshake import LoginComplete

__all__ = [
    "Backoff",
    "ChatSession",
    "Outbox",
    "OutboxEntry",
    "SessionClosed",
    "open_session",
    "IMAGE_CHUNK_BYTES",
    "MAX_IMAGE_BYTES",
    "ChatClient",
    "ChatClientError",
    "ChatClientProtocol",
    "ChatListener",
    "ConnectionLost",
    "HandshakeError",
    "HandshakeTimeout",
    "ImageTooLarge",
    "InvalidState",
    "KnownServers",
    "LoginComplete",
    "NotAMember",
    "NotAllowed",
    "ProtocolDelegate",
    "RegisterError",
    "ServerError",
    "ServerKeyChanged",
    "ServerTrust",
    "SigninError",
    "Timeouts",
    "TrustCallback",
    "UnknownGroup",
    "UnknownUser",
    "UntrustedServer",
    "check_server_identity",
    "connect",
    "encode_text",
    "endpoint_host",
]
