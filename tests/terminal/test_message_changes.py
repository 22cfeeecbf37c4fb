"""The terminal model with edits, retractions, files and blocked senders (no I/O)."""

from __future__ import annotations

from chatproto.terminal.message_changes import DELETED_TEXT, EDITED_MARK
from chatproto.terminal.model import ChatModel
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m


def deliver(seq: int, content_type: int, body: bytes, sender: str = "bob",
            group_id: int = 0) -> m.Deliver:
    return m.Deliver(seq, group_id, sender, None if group_id else "alice", seq, 1000 * seq,
                     None, content_type, body, None)


def edit(seq: int, target: int, text: str) -> m.Deliver:
    return deliver(seq, f.EDIT, m.encode_record(f.EditBody(target, text.encode())))


def retract(seq: int, target: int) -> m.Deliver:
    return deliver(seq, f.RETRACT, m.encode_record(f.RetractBody(target)))


def test_live_edits_and_retraction() -> None:
    """An edit replaces the shown text (marked edited, the latest wins); a retraction shows
    the message as deleted; neither makes a line of its own."""
    model = ChatModel("alice")
    model.add_deliver(deliver(1, m.ContentType.TEXT, b"helo"))
    assert model.add_deliver(edit(2, 1, "hello")) is None
    assert model.add_deliver(edit(3, 1, "hello!")) is None
    conv = model.dm("bob")
    assert [line.text for line in conv.lines] == ["hello!" + EDITED_MARK]
    model.add_deliver(retract(4, 1))
    model.add_deliver(edit(5, 1, "too late"))
    assert [line.text for line in conv.lines] == [DELETED_TEXT]


def test_history_newest_first_applies_changes_to_older_lines() -> None:
    """A history page lists the edits before the message they change (newest first): the
    message still shows its latest edit, and a retraction wins over any edit."""
    model = ChatModel("alice")
    conv = model.dm("bob")
    entries = [
        m.HistoryEntry(5, "bob", "alice", 5000, f.RETRACT,
                       m.encode_record(f.RetractBody(2)), None),
        m.HistoryEntry(4, "bob", "alice", 4000, f.EDIT,
                       m.encode_record(f.EditBody(1, b"second edit")), None),
        m.HistoryEntry(3, "bob", "alice", 3000, f.EDIT,
                       m.encode_record(f.EditBody(1, b"first edit")), None),
        m.HistoryEntry(2, "bob", "alice", 2000, m.ContentType.TEXT, b"oops", None),
        m.HistoryEntry(1, "bob", "alice", 1000, m.ContentType.TEXT, b"draft", None),
    ]
    model.add_history(conv, m.HistoryPage(1, 0, "bob", tuple(entries), False))
    assert [line.text for line in conv.lines] == ["second edit" + EDITED_MARK, DELETED_TEXT]


def test_files_and_blocked_group_senders() -> None:
    """A file message shows its name and size and is what /fetch takes; group messages from
    a blocked user are not shown, their direct ones were refused by the server anyway."""
    model = ChatModel("alice")
    info = f.FileInfo("plan.pdf", "application/pdf", 2048, b"\1" * 32)
    model.add_deliver(deliver(1, f.FILE, m.encode_record(info)))
    conv = model.dm("bob")
    assert conv.lines[0].text.startswith("[file] plan.pdf (")
    assert model.last_file(conv) == (1, info)
    model.blocked.add("mallory")
    assert model.add_deliver(deliver(1, m.ContentType.TEXT, b"spam", "mallory", 7)) is None
    assert model.add_deliver(deliver(2, m.ContentType.TEXT, b"hi", "bob", 7)) is not None
