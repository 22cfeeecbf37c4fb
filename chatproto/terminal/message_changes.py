"""Edits and retractions in the terminal client: a window remembers the latest change of each
of its messages and shows the message with it ("(edited)", or "(message deleted)").

Changes can come before the message they refer to (a history page is newest first), so they
are remembered per target and applied whenever the target's line is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m

#: The content types of changes (which make no line of their own).
CHANGE_TYPES = frozenset({f.EDIT, f.RETRACT})
DELETED_TEXT = "(message deleted)"
EDITED_MARK = " (edited)"


@dataclass(frozen=True)
class Change:
    """The change a message shows: the latest edit, or its retraction (which always wins)."""

    change_seq: int
    retracted: bool
    text: str


def decode_change(content_type: int, body: bytes) -> tuple[int, Change | None]:
    """(target conv_seq, the change without its own seq) of an EDIT or RETRACT body."""
    try:
        if content_type == f.EDIT:
            edit = m.decode_record(f.EditBody, body)
            return edit.target_seq, Change(0, False, edit.text.decode("utf-8", "replace"))
        retract = m.decode_record(f.RetractBody, body)
        return retract.target_seq, Change(0, True, "")
    except m.RemoteProtocolError:
        return 0, None


def newer(current: Change | None, new: Change) -> bool:
    """Whether ``new`` replaces ``current``."""
    if current is None:
        return True
    if current.retracted != new.retracted:
        return new.retracted
    return new.change_seq > current.change_seq


def shown_text(original: str, change: Change | None) -> str:
    """A message's text as shown, with its change."""
    if change is None:
        return original
    return DELETED_TEXT if change.retracted else change.text + EDITED_MARK


def hidden_sender(group_id: int, sender: str, content_type: int, blocked: set[str]) -> bool:
    """Group messages from users we block are not shown (events are)."""
    return bool(group_id) and sender in blocked and content_type != m.ContentType.EVENT
