"""Request-level refusals: answered with ``Error(req, code, reason, names)``, never fatal."""

from __future__ import annotations

from twisted.python.failure import Failure

from chatproto.storage import store as st
from chatproto.storage.content_files import ContentMismatch
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode


class RequestError(Exception):
    """A request-level failure: answered with Error(req, code, reason, names); not fatal."""

    def __init__(self, code: ErrorCode, reason: str, names: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.code = code
        # The wire allows 1024 bytes of reason and 256 names; a long list of unknown names
        # must not turn a refusal into an encoding failure.
        self.reason = reason.encode("utf-8")[:1000].decode("utf-8", "ignore")
        self.names = names[: m.MAX_NAMES]


_STORE_ERRORS: tuple[tuple[type[st.StoreError], ErrorCode], ...] = (
    (st.UnknownUsers, ErrorCode.UNKNOWN_USER),
    (st.UnknownGroup, ErrorCode.UNKNOWN_GROUP),
    (st.NotAMember, ErrorCode.NOT_A_MEMBER),
    (st.NotAllowed, ErrorCode.NOT_ALLOWED),
    (st.UnknownMessage, ErrorCode.UNKNOWN_MESSAGE),
    (ContentMismatch, ErrorCode.BAD_IMAGE),  # only images are stored whole and checked
)


def request_error(f: Failure) -> Failure:
    """Turn the store's refusals into request errors (other failures pass through)."""
    for cls, code in _STORE_ERRORS:
        if f.check(cls):
            names = f.value.names if isinstance(f.value, st.UnknownUsers) else ()
            raise RequestError(code, str(f.value), names)
    return f
