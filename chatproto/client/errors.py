"""The exceptions the client library raises (through Deferred errbacks).

Every exception derives from :class:`ChatClientError`. Errors the server reports for a request
(an ERROR message) are :class:`ServerError`, or a subclass of it for the well-known codes.
"""

from __future__ import annotations

from chatproto.wire.errors import ErrorCode
from chatproto.wire.handshake_events import unauthenticated_reason

__all__ = [
    "ChatClientError",
    "ConnectionLost",
    "HandshakeError",
    "HandshakeTimeout",
    "ImageTooLarge",
    "InvalidState",
    "NotAMember",
    "NotAllowed",
    "RegisterError",
    "ServerError",
    "ServerKeyChanged",
    "SessionClosed",
    "SigninError",
    "UnknownGroup",
    "UnknownUser",
    "UntrustedServer",
]


def _code_name(code: int) -> str:
    try:
        return f"{ErrorCode(code).name} ({code})"
    except ValueError:
        return str(code)


class ChatClientError(Exception):
    """Base class of every error of the client library."""


class ConnectionLost(ChatClientError):
    """The connection closed while a request was pending (or before it could be sent).

    Attributes:
        cause: Why the connection closed, if known (e.g. a protocol error or a ping timeout).
    """

    def __init__(self, message: str = "the connection was lost",
                 cause: BaseException | None = None) -> None:
        """Create the error.

        Args:
            message: A human-readable explanation.
            cause: The underlying reason, if known.
        """
        super().__init__(message if cause is None else f"{message}: {cause}")
        self.cause = cause


class HandshakeTimeout(ConnectionLost):
    """The server did not answer Hello in time; the connection was aborted."""


class SessionClosed(ConnectionLost):
    """A :class:`~chatproto.client.reconnect.ChatSession` was closed while a send was still
    waiting for its SendAck (the message stays in a persistent outbox)."""


class InvalidState(ChatClientError):
    """The call is not allowed now (e.g. a session request before signing in)."""


class ServerKeyChanged(ChatClientError):
    """The server's identity key does not match the pinned fingerprint.

    Attributes:
        host: The server, as ``host:port``.
        expected: The pinned fingerprint.
        got: The fingerprint the server presented.
    """

    def __init__(self, host: str, expected: str, got: str) -> None:
        """Create the error.

        Args:
            host: The server, as ``host:port``.
            expected: The pinned fingerprint.
            got: The fingerprint the server presented.
        """
        super().__init__(
            f"the identity key of {host} has changed: expected {expected}, got {got}; "
            "this may be an attack (or the server's key was replaced)"
        )
        self.host = host
        self.expected = expected
        self.got = got


class UntrustedServer(ChatClientError):
    """The server's identity is not pinned and was not trusted on first use.

    Attributes:
        host: The server, as ``host:port``.
        fingerprint: The fingerprint the server presented.
    """

    def __init__(self, host: str, fingerprint: str) -> None:
        """Create the error.

        Args:
            host: The server, as ``host:port``.
            fingerprint: The fingerprint the server presented.
        """
        super().__init__(f"the identity of {host} ({fingerprint}) is not trusted")
        self.host = host
        self.fingerprint = fingerprint


class _CodedError(ChatClientError):
    """An error carrying a numeric code and the server's reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{_code_name(code)}: {reason}")
        self.code = code
        self.reason = reason


class HandshakeError(_CodedError):
    """The handshake failed (hello error, too many attempts, an ERROR); the connection closes.

    An ERROR that arrived before any key existed is unauthenticated: its ``reason`` is then the
    fixed text of :func:`~chatproto.wire.handshake_events.unauthenticated_reason`, which names
    only the code's class, and the message shows that text alone (not the code's name, which
    anyone on the path could have chosen).

    Attributes:
        code: The error code.
        reason: The server's explanation, or the fixed text for an unauthenticated ERROR.
        authenticated: Whether the code and reason came under the handshake keys.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.authenticated = reason != unauthenticated_reason(code)
        if not self.authenticated:
            self.args = (reason,)

    def __str__(self) -> str:
        return str(self.args[0])


class _RejectedError(_CodedError):
    def __init__(self, code: int, reason: str, retry_after_ms: int = 0) -> None:
        super().__init__(code, reason)
        self.retry_after_ms = retry_after_ms


class SigninError(_RejectedError):
    """NCK: wrong name or password, or a rate limit; signin may be retried on the connection.

    Attributes:
        code: The error code (AUTH_FAILED, TRY_LATER, ...).
        reason: The server's explanation.
        retry_after_ms: How long to wait before retrying (0: no advice).
    """


class RegisterError(_RejectedError):
    """NCK register: the name is taken or invalid, or registrations are limited.

    Attributes:
        code: The error code (NAME_TAKEN, INVALID_NAME, ...).
        reason: The server's explanation.
        retry_after_ms: How long to wait before retrying (0: no advice).
    """


class ImageTooLarge(ChatClientError, ValueError):
    """An image to send is larger than the client's limit."""


class ServerError(_CodedError):
    """The server answered a request with ERROR.

    Attributes:
        code: The error code.
        reason: The server's explanation.
        names: The names the error is about (e.g. unknown users), possibly empty.
    """

    def __init__(self, code: int, reason: str, names: tuple[str, ...] = ()) -> None:
        """Create the error.

        Args:
            code: The error code.
            reason: The server's explanation.
            names: The names the error is about.
        """
        super().__init__(code, reason)
        self.names = names

    @staticmethod
    def from_code(code: int, reason: str, names: tuple[str, ...] = ()) -> ServerError:
        """The most specific ServerError subclass for ``code``.

        Args:
            code: The error code.
            reason: The server's explanation.
            names: The names the error is about.

        Returns:
            The exception instance.
        """
        cls = _BY_CODE.get(code, ServerError)
        return cls(code, reason, names)


class UnknownUser(ServerError):
    """A named user does not exist (``names`` lists them)."""


class UnknownGroup(ServerError):
    """The group does not exist."""


class NotAMember(ServerError):
    """The user is not a member of the group."""


class NotAllowed(ServerError):
    """The user may not do this (e.g. not the group's owner)."""


_BY_CODE: dict[int, type[ServerError]] = {
    ErrorCode.UNKNOWN_USER: UnknownUser,
    ErrorCode.UNKNOWN_GROUP: UnknownGroup,
    ErrorCode.NOT_A_MEMBER: NotAMember,
    ErrorCode.NOT_ALLOWED: NotAllowed,
}
