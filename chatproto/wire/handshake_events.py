"""The events the handshake machines report (see :mod:`chatproto.wire.handshake`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerIdentityReceived:
    """The server proved it holds this identity key; check it against the pin, then call
    :meth:`ClientHandshake.accept_identity` (nothing secret is sent before that)."""

    identity_key: bytes
    fingerprint: str


@dataclass(frozen=True, slots=True)
class SigninRejected:
    """NCK: wrong name or password (one generic answer), or a rate limit (TRY_LATER)."""

    code: int
    reason: str
    retry_after_ms: int


@dataclass(frozen=True, slots=True)
class Registered:
    """ACK register: the account exists now; sign in on the same connection."""

    name: str


@dataclass(frozen=True, slots=True)
class RegisterRejected:
    """NCK register: the name is taken, invalid, or registrations are limited."""

    code: int
    reason: str
    retry_after_ms: int


@dataclass(frozen=True, slots=True)
class LoginComplete:
    """Hello done: the session is ready (``handshake.session``)."""

    name: str
    session_id: bytes
    server_time_ms: int


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """The handshake is over without a session: hello error, an error, or too many attempts.
    The connection closes; a new login starts with a new connection.

    ``authenticated`` is False for an ERROR that arrived before any key existed: anyone on the
    path could have sent it, so ``reason`` is then a fixed text naming only the code's class
    (:func:`unauthenticated_reason`), never the peer's words."""

    code: int
    reason: str
    authenticated: bool = True


_CODE_CLASSES = {
    1: "a protocol error",
    2: "an authentication error",
    3: "a request error",
    5: "a server error",
}


def unauthenticated_reason(code: int) -> str:
    """The fixed text shown for an unauthenticated ERROR: only the class of its code."""
    what = _CODE_CLASSES.get(code // 100, "an error")
    return (f"the server closed the connection with {what} ({code // 100}xx) before proving "
            "its identity; its text is not shown because anyone could have sent it")


@dataclass(frozen=True, slots=True)
class CredentialsReceived:
    """Server side: a Signin or register arrived; answer with accept/reject."""

    register: bool
    name: str
    password: str
    device_id: bytes


@dataclass(frozen=True, slots=True)
class LoginVerified:
    """Server side: the test message proved the client holds the session keys. Mark the user
    online, then call :meth:`ServerHandshake.complete`."""

    name: str
    device_id: bytes


ClientEvent = (
    ServerIdentityReceived | SigninRejected | Registered | RegisterRejected | LoginComplete
    | HandshakeFailed
)
ServerEvent = CredentialsReceived | LoginVerified | HandshakeFailed
