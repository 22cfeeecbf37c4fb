"""The options of a client connection: how it decides to trust the server's identity
(:class:`ServerTrust`, :func:`check_server_identity`) and its timers (:class:`Timeouts`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed

from chatproto.client.errors import ServerKeyChanged, UntrustedServer
from chatproto.client.known_servers import KnownServers
from chatproto.wire.keys import constant_time_equal

__all__ = ["ServerTrust", "Timeouts", "TrustCallback", "check_server_identity",
           "client_options"]

#: ``trust_on_first_use(host, fingerprint)``: True to trust and pin an unknown server.
TrustCallback = Callable[[str, str], "bool | Deferred[bool]"]


def check_server_identity(
    host: str,
    fingerprint: str,
    *,
    known_servers: KnownServers | None = None,
    server_fingerprint: str | None = None,
    trust_on_first_use: TrustCallback | None = None,
) -> Deferred[None]:
    """Decide whether to trust a server's identity.

    An explicit ``server_fingerprint`` must match; otherwise a pin in ``known_servers`` must
    match; otherwise ``trust_on_first_use`` is asked and, if it answers True, the fingerprint is
    pinned. With neither a pin nor a callback, the server is refused.

    Args:
        host: The server, as ``host:port``.
        fingerprint: The fingerprint the server proved it holds.
        known_servers: The pin file.
        server_fingerprint: The expected fingerprint, overriding the pin file.
        trust_on_first_use: Asked about unknown servers; may return a Deferred.

    Returns:
        A Deferred firing with None if trusted, else failing with ServerKeyChanged or
        UntrustedServer.
    """
    if server_fingerprint is not None:
        if constant_time_equal(server_fingerprint.encode(), fingerprint.encode()):
            return succeed(None)
        return fail(ServerKeyChanged(host, server_fingerprint, fingerprint))
    expected = known_servers.lookup(host) if known_servers is not None else None
    if expected is not None:
        if constant_time_equal(expected.encode(), fingerprint.encode()):
            return succeed(None)
        return fail(ServerKeyChanged(host, expected, fingerprint))
    if trust_on_first_use is None:
        return fail(UntrustedServer(host, fingerprint))
    callback = trust_on_first_use

    def decided(trusted: object) -> None:
        if trusted is not True:
            raise UntrustedServer(host, fingerprint)
        if known_servers is not None:
            known_servers.add(host, fingerprint)

    d: Deferred[Any] = maybeDeferred(callback, host, fingerprint)
    return d.addCallback(decided)


@dataclass(frozen=True)
class ServerTrust:
    """How a client decides to trust the server's identity key (:func:`check_server_identity`).

    Attributes:
        known_servers: The pin file; an unknown server is pinned there once trusted.
        server_fingerprint: The expected fingerprint (``SHA256:...``), overriding the pins.
        trust_on_first_use: ``(host, fingerprint) -> bool | Deferred[bool]`` asked about an
            unknown server; without it (and without a pin) the server is refused.
    """

    known_servers: KnownServers | None = None
    server_fingerprint: str | None = None
    trust_on_first_use: TrustCallback | None = None

    def check(self, host: str, fingerprint: str) -> Deferred[None]:
        """:func:`check_server_identity` with these settings."""
        return check_server_identity(host, fingerprint, known_servers=self.known_servers,
                                     server_fingerprint=self.server_fingerprint,
                                     trust_on_first_use=self.trust_on_first_use)


@dataclass(frozen=True)
class Timeouts:
    """The timers of a connection (and, for a ChatSession, of a whole login attempt).

    Attributes:
        ping_interval: Seconds between pings once signed in.
        ping_timeout: Seconds to wait for a Pong before closing.
        handshake_timeout: Seconds to wait for the server's key after Hello.
        login_timeout: (ChatSession) Seconds for one whole attempt (connect, sign in, sync)
            before it is abandoned and retried.
    """

    ping_interval: float = 30
    ping_timeout: float = 10
    handshake_timeout: float = 10
    login_timeout: float = 30


def client_options(trust: ServerTrust | None, timeouts: Timeouts | None,
                   shorthand: dict[str, Any]) -> tuple[ServerTrust, Timeouts]:
    """The two option objects, from the objects and/or their fields given as keywords
    (``known_servers=...``, ``ping_timeout=...``: a shorthand accepted by :class:`ChatClient`,
    :func:`connect` and :func:`~chatproto.client.reconnect.open_session`).

    Raises:
        TypeError: For a keyword that is a field of neither.
    """
    trust = trust or ServerTrust()
    timeouts = timeouts or Timeouts()
    trust_fields = {k: v for k, v in shorthand.items() if k in ServerTrust.__dataclass_fields__}
    timeout_fields = {k: v for k, v in shorthand.items() if k in Timeouts.__dataclass_fields__}
    unknown = set(shorthand) - set(trust_fields) - set(timeout_fields)
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
    return replace(trust, **trust_fields), replace(timeouts, **timeout_fields)
