"""Opening a connection: :func:`connect` returns a :class:`~chatproto.client.api.ChatClient`
once the server's identity is trusted."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory

from chatproto.client.api import ChatClient
from chatproto.client.known_servers import endpoint_host
from chatproto.client.listener import ChatListener
from chatproto.client.options import ServerTrust, Timeouts
from chatproto.client.protocol import ChatClientProtocol

__all__ = ["connect"]


class _ClientFactory(Factory):
    """Builds the client's protocol for the endpoint."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def buildProtocol(self, addr: IAddress | None) -> ChatClientProtocol:
        return self.client.build_protocol()


def connect(
    reactor: Any,
    endpoint: str,
    *,
    trust: ServerTrust | None = None,
    timeouts: Timeouts | None = None,
    device_id: bytes | None = None,
    listener: ChatListener | None = None,
    auto_ack: bool = True,
    **shorthand: Any,
) -> Deferred[ChatClient]:
    """Connect to a server and check its identity.

    Args:
        reactor: The reactor.
        endpoint: A client endpoint description (``tcp:host:port``, ``tls:host:port``, ...).
        trust: How to decide whether to trust the server (:class:`ServerTrust`: the pin
            file, an expected fingerprint, a trust-on-first-use callback).
        timeouts: The connection's timers (:class:`Timeouts`).
        device_id: 16 bytes identifying this device (random if omitted).
        listener: Receives pushed messages and state changes.
        auto_ack: See :class:`ChatClient`.
        shorthand: The fields of :class:`ServerTrust` and :class:`Timeouts` as keywords
            (``known_servers=pins, server_fingerprint=fp``).

    Returns:
        A Deferred firing with a ChatClient in the state ``"connected"`` (handshaken, not
        signed in), or failing with ServerKeyChanged, UntrustedServer, HandshakeTimeout,
        ConnectionLost or the connection error.
    """
    try:
        client = ChatClient(reactor, endpoint_host(endpoint), trust=trust, timeouts=timeouts,
                            device_id=device_id, listener=listener, auto_ack=auto_ack,
                            **shorthand)
        connecting: Deferred[Any] = clientFromString(reactor, endpoint).connect(
            _ClientFactory(client)
        )
    except Exception as e:
        return fail(e)
    client._connecting = connecting
    connecting.addErrback(client._fire_ready)
    return client.ready
