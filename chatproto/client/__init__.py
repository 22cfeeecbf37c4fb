"""The chatproto client library: :func:`connect` returns a :class:`ChatClient`."""

from chatproto.client.api import (
    IMAGE_CHUNK_BYTES,
    MAX_IMAGE_BYTES,
    ChatClient,
    ChatListener,
    TrustCallback,
    check_server_identity,
    connect,
)
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
    SigninError,
    UnknownGroup,
    UnknownUser,
    UntrustedServer,
)
from chatproto.client.known_servers import KnownServers, endpoint_host
from chatproto.client.protocol import ChatClientProtocol, ProtocolDelegate
from chatproto.wire.handshake import LoginComplete

__all__ = [
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
    "SigninError",
    "TrustCallback",
    "UnknownGroup",
    "UnknownUser",
    "UntrustedServer",
    "check_server_identity",
    "connect",
    "endpoint_host",
]
