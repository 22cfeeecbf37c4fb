"""Edits, retractions and files in the terminal client: a window remembers the latest change
of each of its messages and shows the message with it ("(edited)", or "(message deleted)"),
and the FileInfo of its file messages (fetched and saved with /fetch).

Changes can come before the message they refer to (a history page is newest first), so they
are remembered per target and applied whenever the target's line is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chatproto.terminal.presentation import format_size, write_new_file
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m
from chatproto.wire.file_names import sanitise_file_name

FILE = f.FILE
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


def decode_file_info(body: bytes) -> f.FileInfo | None:
    try:
        return m.decode_record(f.FileInfo, body)
    except m.RemoteProtocolError:
        return None


def file_text(info: f.FileInfo) -> str:
    """How a file message reads in a window."""
    return f"[file] {info.name} ({format_size(info.size)}, {info.mime}); /fetch saves it"


def remember_file(files: dict[int, f.FileInfo], content_type: int, conv_seq: int,
                  body: bytes) -> None:
    if content_type == FILE:
        info = decode_file_info(body)
        if info is not None:
            files[conv_seq] = info


def save_file(directory: Path, name: str, data: bytes) -> Path:
    """Save a received file under its (sanitised) name in ``directory``, never overwriting a
    file: ``-1``, ``-2``, ... are added to the stem until the name is free."""
    stem, dot, ext = sanitise_file_name(name).rpartition(".")
    if not dot or not stem:
        return write_new_file(directory, stem + dot + ext, "", data)
    return write_new_file(directory, stem, dot + ext, data)
