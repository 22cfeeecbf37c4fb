"""The terminal client's model: windows, ordering, delivery marks, presence, typing, commands
and completion (no terminal, no network)."""

from __future__ import annotations

from pathlib import Path

from chatproto.terminal.commandline import complete, parse_command
from chatproto.terminal.model import DELIVERED, PENDING, READ, STORED, ChatModel
from chatproto.terminal.presentation import save_image
from chatproto.wire import messages as m

T0 = 1_700_000_000_000


def deliver(seq: int, sender: str, to: str | None, text: str, group_id: int = 0,
            msg_id: bytes | None = None, content_type: int = m.ContentType.TEXT,
            body: bytes | None = None) -> m.Deliver:
    return m.Deliver(seq, group_id, sender, to, seq, T0 + seq, msg_id or bytes(16),
                     content_type, body if body is not None else text.encode(), None)


def test_direct_messages_open_windows_and_count_unread() -> None:
    """A message from bob opens his window, counts as unread until shown; a duplicate (a
    resend, or a history page) is not shown twice."""
    model = ChatModel("alice", now_ms=lambda: T0)
    assert model.add_deliver(deliver(1, "bob", "alice", "hi")) is not None
    bob = model.find("bob")
    assert bob is not None and bob.unread == 1 and [x.text for x in bob.lines] == ["hi"]
    assert model.add_deliver(deliver(1, "bob", "alice", "hi")) is None
    model.switch(1)
    assert bob.unread == 0 and model.current is bob


def test_own_messages_get_marks_in_order() -> None:
    """Our message is pending, ✓ on SendAck (whether our own copy arrives before or after),
    ✓✓ on a DELIVERED receipt and read on READ; history goes above, live lines below."""
    model = ChatModel("alice", now_ms=lambda: T0)
    bob = model.dm("bob")
    line = model.add_outgoing(bob, "text", "hello", b"M" * 16)
    assert line.status == PENDING
    assert model.add_deliver(deliver(5, "alice", "bob", "hello", msg_id=b"M" * 16)) is None
    assert line.conv_seq == 5
    model.acked(m.SendAck(1, b"M" * 16, 0, 5, T0))
    assert line.status == STORED
    model.receipt(m.Receipt(m.ReceiptKind.DELIVERED, 0, "bob", 5))
    assert line.status == DELIVERED
    model.receipt(m.Receipt(m.ReceiptKind.READ, 0, "bob", 5))
    model.receipt(m.Receipt(m.ReceiptKind.DELIVERED, 0, "bob", 5))
    assert line.status == READ
    entries = tuple(m.HistoryEntry(s, "bob", "alice", T0, m.ContentType.TEXT, f"old {s}".encode(),
                                   None) for s in (4, 3))
    assert model.add_history(bob, m.HistoryPage(1, 0, "bob", entries, False)) == 2
    model.notice("bob went offline", bob)
    model.add_deliver(deliver(6, "bob", "alice", "back"))
    assert [x.text for x in bob.lines] == ["old 3", "old 4", "hello", "bob went offline", "back"]
    assert not bob.has_more and bob.oldest_seq == 3


def test_groups_events_presence_and_typing() -> None:
    """Group events title the window and track members; presence changes are announced in
    the peer's window; typing indicators expire."""
    model = ChatModel("alice", now_ms=lambda: T0)
    model.group_members[7] = ["alice"]
    event = m.encode_record(m.GroupEvent(m.GroupAction.CREATED, "alice", ("bob",), "team"))
    model.add_deliver(deliver(1, "alice", None, "", group_id=7,
                              content_type=m.ContentType.EVENT, body=event))
    group = model.find("#team")
    assert group is not None and group.lines[0].text == 'alice created the group "team" with bob'
    assert model.group_members[7] == ["alice", "bob"]
    bob = model.dm("bob")
    model.set_presence("bob", True, None)
    model.set_presence("bob", False, T0, announce=True)
    assert model.presence_mark("bob") == "○" and "bob went offline" in bob.lines[-1].text
    model.typing(m.TypingEvent(7, "bob", True), now=100.0)
    assert group.typing_names(101.0) == ["bob"] and group.typing_names(200.0) == []


def test_parse_command() -> None:
    """Commands split like a shell; plain text and //escaped slashes are messages."""
    cmd = parse_command("/group add bob carol")
    assert (cmd.name, cmd.args) == ("group", ["add", "bob", "carol"])
    assert parse_command("hello /there").name == ""
    assert parse_command("//not a command").rest == "/not a command"


def test_completion(tmp_path: Path) -> None:
    """Tab completes commands, /group subcommands, names (with ": " first on a line) and
    paths after /image."""
    names = ["bob", "bobby", "carol"]
    assert complete("/gr", 3, names) == [("/group ", 7)]
    assert complete("/group a", 8, names) == [("/group add ", 11)]
    assert complete("/msg c", 6, names) == [("/msg carol ", 11)]
    assert complete("/msg bo", 7, names) == [("/msg bob", 8)]  # the common prefix first
    assert complete("/msg bob", 8, names) == [("/msg bob ", 9), ("/msg bobby ", 11)]
    assert complete("car", 3, names) == [("carol: ", 7)]
    (tmp_path / "photo.png").write_bytes(b"x")
    text = f"/image {tmp_path}/ph"
    assert complete(text, len(text), names) == [(f"/image {tmp_path}/photo.png",
                                                 len(text) + 7)]


def test_save_image_never_overwrites(tmp_path: Path) -> None:
    """Received images get the sender and time as name, a suffix when it is taken, and the
    extension of their type."""
    png = b"\x89PNG\r\n\x1a\n" + b"rest"
    d = m.Deliver(3, 0, "bob", "alice", 3, T0, bytes(16), m.ContentType.IMAGE, png,
                  m.ImageInfo(len(png), bytes(32), "image/png"))
    first = save_image(tmp_path, d, png)
    second = save_image(tmp_path, d, png)
    assert first.name.startswith("bob-") and first.suffix == ".png"
    assert second.name == first.stem + "-1.png" and second.read_bytes() == png
