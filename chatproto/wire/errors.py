"""Error codes and protocol exceptions shared by every layer of the wire protocol.

The numeric values of :class:`ErrorCode` travel on the wire (in ERROR messages and
in close reasons), so they must never be renumbered.
"""

from __future__ import annotations

import enum

__all__ = [
    "ErrorCode",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
]


class ErrorCode(enum.IntEnum):
    """Numeric error codes used on the wire.

    1xx codes are fatal protocol violations (the connection is closed), 2xx codes are
    authentication failures, 3xx codes are non-fatal request errors answered with an
    ERROR message, and 5xx codes are server-side failures.
    """

    # fatal protocol violations (connection closes)
    MALFORMED_FRAME = 100
    FRAME_TOO_LARGE = 101
    BAD_IV = 102
    BAD_TAG = 103
    BAD_PADDING = 104
    MALFORMED_MESSAGE = 105
    UNKNOWN_MESSAGE_TYPE = 106
    UNEXPECTED_MESSAGE = 107
    UNSUPPORTED_VERSION = 108
    FRAME_LIMIT = 109
    HANDSHAKE_TIMEOUT = 110
    IDLE_TIMEOUT = 111
    SERVER_BUSY = 112
    BAD_SERVER_SIGNATURE = 113
    SERVER_KEY_CHANGED = 114
    PING_TIMEOUT = 115

    # authentication
    AUTH_FAILED = 200
    TRY_LATER = 201
    NAME_TAKEN = 202
    INVALID_NAME = 203
    INVALID_PASSWORD = 204
    TOO_MANY_ATTEMPTS = 205
    HELLO_ERROR = 206

    # request errors (non-fatal; answered with an ERROR message)
    UNKNOWN_USER = 300
    UNKNOWN_GROUP = 301
    NOT_A_MEMBER = 302
    NOT_ALLOWED = 303
    IMAGE_TOO_LARGE = 304
    BAD_IMAGE = 305
    INVALID_REQUEST = 306
    MESSAGE_TOO_LARGE = 307
    RATE_LIMITED = 308
    UNKNOWN_MESSAGE = 320  # an edit or retraction names no message it may change
    FILE_TOO_LARGE = 321  # a FILE_OFFER above the server's size limit
    BAD_FILE = 322  # a file's chunks out of order or not matching its size or SHA-256

    # server side
    INTERNAL_ERROR = 500
    STORAGE_UNAVAILABLE = 501


class ProtocolError(Exception):
    """Base class of every protocol error.

    Attributes:
        code: The :class:`ErrorCode` describing the failure.
        message: A human-readable explanation.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        """Create the error.

        Args:
            code: The error code.
            message: A human-readable explanation.
        """
        self.code = ErrorCode(code)
        self.message = message
        super().__init__(code, message)

    def __str__(self) -> str:
        """Return ``"NAME (number): message"``."""
        return f"{self.code.name} ({int(self.code)}): {self.message}"

    def __repr__(self) -> str:
        """Return a debugging representation."""
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class RemoteProtocolError(ProtocolError):
    """The peer violated the protocol; fatal to the connection."""


class LocalProtocolError(ProtocolError):
    """We misused the API (our bug), e.g. sending an over-long payload."""
