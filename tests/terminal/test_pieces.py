"""The terminal client's pieces without a terminal: shared wording, the local store, the
input line's readline keys, wrapped lines, the command table, quiet presence, kept marks and
groups left for good."""

from __future__ import annotations

from pathlib import Path

import urwid

from chatproto.terminal.cli import deliver_json
from chatproto.terminal.commandline import COMMANDS
from chatproto.terminal.commands import HANDLERS
from chatproto.terminal.local_state import LocalStore
from chatproto.terminal.model import DELIVERED, FAILED, PRESENCE_QUIET_MS, READ, STORED, ChatModel
from chatproto.terminal.presentation import describe_event, read_image_file
from chatproto.terminal.widgets import InputLine, line_widget
from chatproto.wire import messages as m
from tests.terminal.conftest import png_bytes

T0 = 1_700_000_000_000


def event_deliver(seq: int, group_id: int, event: m.GroupEvent,
                  sender: str | None = None) -> m.Deliver:
    return m.Deliver(seq, group_id, sender or event.actor, None, seq, T0 + seq, bytes(16),
                     m.ContentType.EVENT, m.encode_record(event), None)


def text_deliver(seq: int, sender: str, to: str | None, text: str, group_id: int = 0,
                 msg_id: bytes = bytes(16)) -> m.Deliver:
    return m.Deliver(seq, group_id, sender, to, seq, T0 + seq, msg_id, m.ContentType.TEXT,
                     text.encode(), None)


def test_both_clients_word_every_group_event() -> None:
    """PROMOTED, DEMOTED and OWNER_CHANGED (8) are sentences in the terminal client and named
    actions in tail's JSON, never "group event 6"."""
    cases = [
        (m.GroupAction.PROMOTED, ("bob",), "alice made bob admin", "promoted"),
        (m.GroupAction.DEMOTED, ("bob", "carol"), "alice made bob, carol plain members",
         "demoted"),
        (8, ("bob",), "bob is now the owner", "owner_changed"),
    ]
    for action, names, sentence, name in cases:
        event = m.GroupEvent(action, "alice", names, "")
        assert describe_event(event) == sentence
        out = deliver_json(event_deliver(1, 5, event))
        assert out["type"] == "event" and out["event"]["action"] == name


def test_image_files_are_checked_before_upload(tmp_path: Path) -> None:
    """A missing, empty, over-large or non-image file is refused with a one-line reason."""
    good = tmp_path / "a.png"
    good.write_bytes(png_bytes())
    assert read_image_file(good) == png_bytes()
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(11 * 1024 * 1024)
    for path, reason in ((text, "is not an image"), (empty, "is empty"),
                         (big, "at most 10.0 MiB"), (tmp_path / "nope.png", "No such file")):
        try:
            read_image_file(path)
        except ValueError as e:
            assert reason in str(e) and "\n" not in str(e)
        else:
            raise AssertionError(f"{path} was accepted")


def _keys(edit: InputLine, *keys: str) -> None:
    for key in keys:
        if len(key) == 1:
            edit.keypress((60,), key)
        else:
            assert edit.keypress((60,), key) is None, key


def test_input_line_has_the_readline_keys() -> None:
    """Ctrl-A/E, Ctrl-U/K, Ctrl-W, Alt-B/F and Esc edit the line as in readline, so Ctrl-U
    then /win bob is the command, not the old text with /win bob appended."""
    edit = InputLine(lambda text, pos: [])
    edit.set_edit_text("some old text")
    edit.set_edit_pos(len("some old text"))
    _keys(edit, "ctrl u")
    assert edit.edit_text == ""
    _keys(edit, *"/win bob")
    assert edit.edit_text == "/win bob"
    edit.set_edit_text("hello big world")
    edit.set_edit_pos(15)
    _keys(edit, "ctrl w")
    assert (edit.edit_text, edit.edit_pos) == ("hello big ", 10)
    _keys(edit, "meta b")
    assert edit.edit_pos == 6
    _keys(edit, "ctrl k")
    assert edit.edit_text == "hello "
    _keys(edit, "ctrl a")
    assert edit.edit_pos == 0
    _keys(edit, "meta f")
    assert edit.edit_pos == 5
    _keys(edit, "ctrl e")
    assert edit.edit_pos == 6
    _keys(edit, "esc")
    assert edit.edit_text == ""


def test_recalled_lines_are_not_typing() -> None:
    """Up puts an earlier line back with ``recalling`` set while the text changes."""
    edit = InputLine(lambda text, pos: [])
    edit.remember("first line")
    seen: list[bool] = []
    urwid.connect_signal(edit, "postchange", lambda *_: seen.append(edit.recalling))
    _keys(edit, "up")
    assert edit.edit_text == "first line" and seen == [True]
    _keys(edit, "x")
    assert seen[-1] is False


def test_wrapped_lines_are_indented_under_the_text() -> None:
    """A long message wraps under its first character, not under the time."""
    model = ChatModel("alice", now_ms=lambda: T0)
    line = model.add_deliver(text_deliver(1, "bob", "alice", "word " * 30))
    assert line is not None
    rows = [r.decode() for r in line_widget(line, "alice").render((40,)).text]
    assert len(rows) > 1
    indent = rows[0].index("word")
    assert all(row[:indent].strip() == "" and row[indent:].strip() for row in rows[1:])


def test_every_command_has_a_handler() -> None:
    """The help table and the handler table name the same commands."""
    assert set(HANDLERS) == set(COMMANDS)


def test_short_presence_sessions_are_not_announced() -> None:
    """A contact online for less than PRESENCE_QUIET_MS (a bot's scripted send) adds no
    line; one who stays gets "is online" once the quiet time passed, then "went offline"."""
    now = [T0]
    model = ChatModel("alice", now_ms=lambda: now[0])
    bob = model.dm("bob")
    model.set_presence("bob", False, T0)
    model.set_presence("bob", True, None, announce=True)
    now[0] += 1500
    model.set_presence("bob", False, now[0], announce=True)
    model.flush_presence()
    assert [x for x in bob.lines if x.level == "presence"] == []
    model.set_presence("bob", True, None, announce=True)
    now[0] += PRESENCE_QUIET_MS - 1
    model.flush_presence()
    assert bob.lines == []
    now[0] += 1
    model.flush_presence()
    assert [x.text for x in bob.lines] == ["bob is online"]
    model.set_presence("bob", False, now[0], announce=True)
    assert bob.lines[-1].text.startswith("bob went offline")


def test_marks_come_back_from_the_local_store(tmp_path: Path) -> None:
    """Receipts raise the window's delivered/read marks; saved and restored with the window
    list, they mark our messages when history is loaded after a restart."""
    model = ChatModel("alice", now_ms=lambda: T0)
    bob = model.dm("bob")
    model.receipt(m.Receipt(m.ReceiptKind.READ, 0, "bob", 2))
    model.receipt(m.Receipt(m.ReceiptKind.DELIVERED, 0, "bob", 3))
    store = LocalStore(tmp_path, "127.0.0.1:7777")
    store.save_windows(model)

    again = ChatModel("alice", now_ms=lambda: T0)
    store.restore_windows(again)
    entries = tuple(m.HistoryEntry(seq, "alice", "bob", T0 + seq, m.ContentType.TEXT, b"x",
                                   None) for seq in (4, 3, 2))
    again.add_history(again.dm("bob"), m.HistoryPage(1, 0, "bob", entries, False))
    marks = {x.conv_seq: x.status for x in again.dm("bob").lines}
    assert marks == {2: READ, 3: DELIVERED, 4: STORED}
    assert bob.read_upto == 2

    # A closed window's marks are kept too (and a receipt for it), and saved.
    again.close(again.dm("bob"))
    again.receipt(m.Receipt(m.ReceiptKind.READ, 0, "bob", 4))
    store.save_windows(again)
    third = ChatModel("alice", now_ms=lambda: T0)
    store.restore_windows(third)
    assert third.find("bob") is None
    assert third.dm("bob").mark_of(4) == READ


def test_a_left_group_does_not_come_back(tmp_path: Path) -> None:
    """Leaving closes the group's window; the focus goes to the window before it; our own
    LEFT event (and later messages) do not reopen it, even after a restart; being added
    again does."""
    model = ChatModel("alice", now_ms=lambda: T0)
    model.dm("bob")
    group = model.group(7)
    model.dm("carol")
    model.switch_to(group)
    model.leave_group(7)
    assert [c.title for c in model.windows] == ["status", "bob", "carol"]
    assert model.current.title == "bob"
    left = m.GroupEvent(m.GroupAction.LEFT, "alice", (), "")
    assert model.add_deliver(event_deliver(5, 7, left)) is None
    assert model.add_deliver(text_deliver(6, "bob", None, "hi", group_id=7)) is None
    assert model.find("#group-7") is None
    store = LocalStore(tmp_path, "h:1")
    store.save_windows(model)
    again = ChatModel("alice", now_ms=lambda: T0)
    store.restore_windows(again)
    assert again.add_deliver(text_deliver(6, "bob", None, "hi", group_id=7)) is None
    added = m.GroupEvent(m.GroupAction.ADDED, "bob", ("alice",), "")
    assert again.add_deliver(event_deliver(8, 7, added)) is not None
    assert again.find("#group-7") is not None


def test_a_refused_message_is_reported_once() -> None:
    """Two paths report the same refusal (the send's errback and send_failed): one line."""
    model = ChatModel("alice", now_ms=lambda: T0)
    bob = model.dm("bob")
    model.add_outgoing(bob, "text", "hi", b"1" * 16)
    model.failed(b"1" * 16, "NOT_ALLOWED (303)")
    model.failed(b"1" * 16, "NOT_ALLOWED (303)")
    assert [x.text for x in bob.lines if x.kind == "info"] == ["not sent: NOT_ALLOWED (303)"]
    assert bob.lines[0].status == FAILED


def test_last_name_is_remembered(tmp_path: Path) -> None:
    """The name signed in last is pre-filled next time (per server; never a password)."""
    store = LocalStore(tmp_path, "127.0.0.1:7777")
    assert store.last_name() == ""
    store.remember_name("alice")
    assert store.last_name() == "alice"
    assert LocalStore(tmp_path, "other:1").last_name() == ""
