"""What the terminal client shows, without the drawing: windows, their lines, unread counts,
delivery marks, presence and typing, and the command line's parsing and completion.

:mod:`chatproto.terminal.app` draws this with urwid and feeds it from the client library; the
model itself does no I/O, so it is tested directly. Its clock is ``now_ms``.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from chatproto.terminal.message_changes import (
    CHANGE_TYPES,
    FILE,
    Change,
    decode_change,
    decode_file_info,
    file_text,
    hidden_sender,
    newer,
    remember_file,
    shown_text,
)
from chatproto.terminal.presentation import (
    OWNER_CHANGED,
    decode_event,
    describe_event,
    format_size,
    last_seen_text,
)
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m

__all__ = ["ChatModel", "Conversation", "Line", "Presence"]

#: Delivery states of our own messages, in order.
PENDING, STORED, DELIVERED, READ, FAILED = "pending", "stored", "delivered", "read", "failed"
_STATUS_RANK = {PENDING: 0, STORED: 1, DELIVERED: 2, READ: 3, FAILED: -1}
#: Marks shown after our own messages.
MARKS = {PENDING: "…", STORED: "✓", DELIVERED: "✓✓", READ: "✓✓ read", FAILED: "✗ not sent"}

#: How long a typing indicator lasts without a refresh (seconds).
TYPING_TTL = 6.0
#: A contact must stay online this long (ms) before "X is online" is shown; a shorter
#: session (a bot's scripted ``send``) shows neither "is online" nor "went offline".
PRESENCE_QUIET_MS = 10_000

Key = tuple[str, str | int]
STATUS_KEY: Key = ("status", "")


@dataclass
class Line:
    """One line of a window: a message, an event or a notice from the client.

    ``kind`` is ``text``, ``image``, ``event`` or ``info``; ``status`` is set for our own
    messages (see :data:`MARKS`).
    """

    kind: str
    text: str
    time_ms: int
    sender: str | None = None
    conv_seq: int | None = None
    client_msg_id: bytes | None = None
    status: str | None = None
    image_path: str | None = None
    level: str = "info"  # for info lines: info, error, presence


@dataclass
class Presence:
    """What we know of a user's presence."""

    online: bool
    last_seen_ms: int | None


@dataclass
class Conversation:
    """A window: the status window, a direct chat or a group."""

    key: Key
    title: str
    lines: list[Line] = field(default_factory=list)
    unread: int = 0
    highlight: bool = False
    #: The oldest conversation sequence loaded and whether older ones exist (None: not loaded).
    oldest_seq: int | None = None
    has_more: bool = True
    history_loaded: bool = False
    #: The highest conv_seq of someone else's message we told the server we read.
    read_sent: int = 0
    #: The highest conv_seq others' receipts reported delivered / read (our marks; kept in
    #: the state directory, so they survive a restart).
    delivered_upto: int = 0
    read_upto: int = 0
    typing: dict[str, float] = field(default_factory=dict)
    #: The latest edit or the retraction of each message, by its conv_seq.
    changes: dict[int, Change] = field(default_factory=dict)
    #: The files of the window's file messages, by conv_seq (for /fetch).
    files: dict[int, f.FileInfo] = field(default_factory=dict)
    #: Bumped on every change, so the UI knows when to redraw.
    version: int = 0

    @property
    def is_group(self) -> bool:
        """A group window."""
        return self.key[0] == "group"

    @property
    def is_status(self) -> bool:
        """The status window (server notices, no chat)."""
        return self.key == STATUS_KEY

    @property
    def target(self) -> str | int:
        """The library's target: the peer's name or the group id."""
        return self.key[1]

    def highest_seq(self) -> int:
        """The highest conv_seq in the window (0 if none)."""
        return max((line.conv_seq for line in self.lines if line.conv_seq), default=0)

    def highest_foreign_seq(self, me: str) -> int:
        """The highest conv_seq of a message someone else sent (0 if none)."""
        return max((line.conv_seq for line in self.lines
                    if line.conv_seq and line.sender != me and line.kind != "info"), default=0)

    def has_seq(self, conv_seq: int) -> bool:
        """True if the message with this sequence number is shown."""
        return any(line.conv_seq == conv_seq for line in self.lines)

    def insert(self, line: Line) -> None:
        """Add a line in conversation order (lines without a sequence go at the end)."""
        self.version += 1
        if line.conv_seq is None or line.conv_seq > self.highest_seq():
            self.lines.append(line)  # live lines go at the end, after any notice
            return
        for index, other in enumerate(self.lines):
            if other.conv_seq is not None and other.conv_seq > line.conv_seq:
                self.lines.insert(index, line)
                return
        self.lines.append(line)

    def mark_of(self, conv_seq: int) -> str:
        """The mark of our own stored message with this sequence number."""
        if conv_seq <= self.read_upto:
            return READ
        if conv_seq <= self.delivered_upto:
            return DELIVERED
        return STORED

    def typing_names(self, now: float) -> list[str]:
        """Who is typing here now (expired indicators are dropped)."""
        for name, until in list(self.typing.items()):
            if until <= now:
                del self.typing[name]
        return sorted(self.typing)


class ChatModel:
    """Every window of one signed-in user, fed by the terminal client.

    Args:
        me: Our user name (empty until signed in).
        now_ms: The clock, in ms since the epoch (for notices and "last seen").
    """

    def __init__(self, me: str = "", now_ms: Callable[[], int] | None = None) -> None:
        self.me = me
        self.now_ms = now_ms or (lambda: int(datetime.datetime.now().timestamp() * 1000))
        status = Conversation(STATUS_KEY, "status")
        self.windows: list[Conversation] = [status]
        self.by_key: dict[Key, Conversation] = {STATUS_KEY: status}
        self.presence: dict[str, Presence] = {}
        self.group_titles: dict[int, str] = {}
        self.group_members: dict[int, list[str]] = {}
        #: Groups we left (or were removed from): their events and messages open no window.
        self.left_groups: set[int] = set()
        #: The delivered / read marks of conversations without an open window (closed, or
        #: restored from the local store before their window opens).
        self.marks: dict[Key, tuple[int, int]] = {}
        #: The users we block: their group messages are not shown.
        self.blocked: set[str] = set()
        #: Contacts who came online recently, not announced yet (name → since, ms).
        self.pending_online: dict[str, int] = {}
        self.active = 0
        self.version = 0

    # --- windows -----------------------------------------------------------------------------

    @property
    def status(self) -> Conversation:
        """The status window (number 1)."""
        return self.windows[0]

    @property
    def current(self) -> Conversation:
        """The window shown."""
        return self.windows[self.active]

    def window(self, key: Key, create: bool = True) -> Conversation | None:
        """The window of a conversation, created (at the end of the list) if needed."""
        conv = self.by_key.get(key)
        if conv is None and create:
            conv = Conversation(key, self._title(key))
            conv.delivered_upto, conv.read_upto = self.marks.pop(key, (0, 0))
            self.by_key[key] = conv
            self.windows.append(conv)
            self.version += 1
        return conv

    def dm(self, peer: str) -> Conversation:
        """The direct chat with ``peer``."""
        conv = self.window(("dm", peer))
        assert conv is not None
        return conv

    def group(self, group_id: int) -> Conversation:
        """The window of a group."""
        conv = self.window(("group", group_id))
        assert conv is not None
        return conv

    def _title(self, key: Key) -> str:
        if key[0] == "group":
            assert isinstance(key[1], int)
            title = self.group_titles.get(key[1])
            return f"#{title}" if title else f"#group-{key[1]}"
        return str(key[1])

    def set_group_title(self, group_id: int, title: str) -> None:
        """Remember a group's title and retitle its window."""
        self.group_titles[group_id] = title
        conv = self.by_key.get(("group", group_id))
        if conv is not None:
            conv.title = self._title(conv.key)
            self.version += 1

    def switch(self, index: int) -> bool:
        """Show window ``index`` (0-based); False if there is none."""
        if not 0 <= index < len(self.windows):
            return False
        self.active = index
        conv = self.windows[index]
        conv.unread = 0
        conv.highlight = False
        self.version += 1
        return True

    def switch_to(self, conv: Conversation) -> None:
        """Show ``conv``."""
        self.switch(self.windows.index(conv))

    def close(self, conv: Conversation) -> None:
        """Close a window (not the status window). The windows after it move up one number;
        the focus stays on the window it was on, or, if that one closed, goes to the window
        before it."""
        if conv.is_status or conv.key not in self.by_key:
            return
        index = self.windows.index(conv)
        del self.windows[index]
        del self.by_key[conv.key]
        if conv.delivered_upto or conv.read_upto:
            self.marks[conv.key] = (conv.delivered_upto, conv.read_upto)
        if self.active >= index:
            self.active = max(0, self.active - 1)
        self.version += 1

    def leave_group(self, group_id: int) -> None:
        """We are no longer in a group: close its window; its later events open none."""
        self.left_groups.add(group_id)
        self.group_members.pop(group_id, None)
        conv = self.by_key.get(("group", group_id))
        if conv is not None:
            self.close(conv)

    def find(self, spec: str) -> Conversation | None:
        """A window by number (``3``), peer name (``bob``) or group title (``#team``)."""
        if spec.isdigit():
            index = int(spec) - 1
            return self.windows[index] if 0 <= index < len(self.windows) else None
        for conv in self.windows:
            if spec in (conv.title, str(conv.target), f"#{conv.target}"):
                return conv
        return None

    # --- lines -------------------------------------------------------------------------------

    def notice(self, text: str, conv: Conversation | None = None, level: str = "info") -> Line:
        """A notice from the client (in ``conv``, or in the status window)."""
        target = conv or self.status
        line = Line("info", text, self.now_ms(), level=level)
        target.insert(line)
        self._touch(target, counts=False)
        return line

    def _touch(self, conv: Conversation, counts: bool, highlight: bool = False) -> None:
        self.version += 1
        if conv is not self.current and counts:
            conv.unread += 1
            conv.highlight = conv.highlight or highlight

    def key_of(self, deliver: m.Deliver) -> Key:
        """The window a delivered message belongs to."""
        if deliver.group_id:
            return ("group", deliver.group_id)
        peer = deliver.to if deliver.sender == self.me and deliver.to else deliver.sender
        return ("dm", peer)

    def add_deliver(self, deliver: m.Deliver, image_path: str | None = None) -> Line | None:
        """Add a delivered message; None if it is already shown (our own copy, a resend) or
        belongs to a group we left."""
        if deliver.group_id and not self._still_member(deliver):
            return None
        conv = self.window(self.key_of(deliver))
        assert conv is not None
        own = deliver.sender == self.me
        if own and deliver.client_msg_id is not None:
            for line in conv.lines:
                if line.client_msg_id == deliver.client_msg_id:
                    if line.conv_seq is None:  # the copy came before the SendAck
                        self._set_seq(conv, line, deliver.conv_seq)
                    return None
        if deliver.content_type in CHANGE_TYPES:
            self.apply_change(conv, deliver.conv_seq, deliver.content_type, deliver.body)
            return None
        if conv.has_seq(deliver.conv_seq) or hidden_sender(
                deliver.group_id, deliver.sender, deliver.content_type, self.blocked):
            return None
        line = self._line(deliver.content_type, deliver.body, deliver.image, deliver.sender,
                          deliver.conv_seq, deliver.server_time_ms, image_path)
        line.text = shown_text(line.text, conv.changes.get(deliver.conv_seq))
        remember_file(conv.files, deliver.content_type, deliver.conv_seq, deliver.body)
        if own:
            line.client_msg_id = deliver.client_msg_id
            line.status = conv.mark_of(deliver.conv_seq)
        if deliver.content_type == m.ContentType.EVENT and deliver.group_id:
            self._apply_event(deliver.group_id, deliver.body)
        conv.insert(line)
        conv.typing.pop(deliver.sender, None)
        self._touch(conv, counts=not own and line.kind != "event",
                    highlight=bool(self.me) and self.me in line.text and not own)
        return line

    def _still_member(self, deliver: m.Deliver) -> bool:
        """Whether a group message should be shown: False for a group we left, and for the
        event of our leaving (or being removed), which closes the window; an event adding
        us again reopens it."""
        group_id = deliver.group_id
        event = decode_event(deliver.body) if deliver.content_type == m.ContentType.EVENT \
            else None
        if event is not None and self.me:
            gone = (event.action == m.GroupAction.LEFT and event.actor == self.me) or (
                event.action == m.GroupAction.REMOVED and self.me in event.names)
            if gone:
                self.leave_group(group_id)
                return False
            if event.action in (m.GroupAction.CREATED, m.GroupAction.ADDED) \
                    and self.me in event.names:
                self.left_groups.discard(group_id)
        return group_id not in self.left_groups

    def _line(self, content_type: int, body: bytes, image: m.ImageInfo | None, sender: str,
              conv_seq: int, time_ms: int, image_path: str | None) -> Line:
        if content_type == m.ContentType.IMAGE and image is not None:
            what = image.mime or "image"
            text = f"sent an image ({what}, {format_size(image.total_size)})"
            if image_path:
                text = (f"sent an image: {os.path.basename(image_path)} "
                        f"({format_size(image.total_size)}) saved to {image_path}")
            return Line("image", text, time_ms, sender, conv_seq, image_path=image_path)
        if content_type == FILE:
            info = decode_file_info(body)
            text = "(an unreadable file message)" if info is None else file_text(info)
            return Line("file", text, time_ms, sender, conv_seq)
        if content_type == m.ContentType.EVENT:
            event = decode_event(body)
            text = describe_event(event) if event is not None else "(an unreadable group event)"
            return Line("event", text, time_ms, sender, conv_seq)
        return Line("text", body.decode("utf-8", "replace"), time_ms, sender, conv_seq)

    def _apply_event(self, group_id: int, body: bytes) -> None:
        event = decode_event(body)
        if event is None:
            return
        if event.title or event.action == m.GroupAction.RENAMED:
            self.set_group_title(group_id, event.title)
        members = self.group_members.get(group_id)
        if members is None:
            return
        if event.action in (m.GroupAction.CREATED, m.GroupAction.ADDED):
            members.extend(n for n in event.names if n not in members)
        elif event.action == m.GroupAction.REMOVED:
            members[:] = [n for n in members if n not in event.names]
        elif event.action == m.GroupAction.LEFT:
            members[:] = [n for n in members if n != event.actor]
        elif event.action == OWNER_CHANGED:  # the new owner first, as the server lists them
            members[:] = [*event.names, *(n for n in members if n not in event.names)]

    def add_history(self, conv: Conversation, page: m.HistoryPage) -> int:
        """Add an older page of a conversation; returns how many lines were new."""
        added = 0
        group_id = conv.target if isinstance(conv.target, int) else 0
        for entry in page.entries:
            if entry.content_type in CHANGE_TYPES:
                self.apply_change(conv, entry.conv_seq, entry.content_type, entry.body)
                continue
            if conv.has_seq(entry.conv_seq) or hidden_sender(
                    group_id, entry.sender, entry.content_type, self.blocked):
                continue
            line = self._line(entry.content_type, entry.body, entry.image, entry.sender,
                              entry.conv_seq, entry.server_time_ms, None)
            line.text = shown_text(line.text, conv.changes.get(entry.conv_seq))
            remember_file(conv.files, entry.content_type, entry.conv_seq, entry.body)
            if entry.sender == self.me:
                line.status = conv.mark_of(entry.conv_seq)
            conv.insert(line)
            added += 1
        seqs = [e.conv_seq for e in page.entries]
        if seqs:
            conv.oldest_seq = min(seqs + ([conv.oldest_seq] if conv.oldest_seq else []))
        conv.has_more = page.has_more
        conv.history_loaded = True
        self.version += 1
        return added

    def apply_change(self, conv: Conversation, change_seq: int, content_type: int,
                     body: bytes) -> None:
        """An edit or retraction (entry ``change_seq``): its target shows it, now or when
        its line is made."""
        target, change = decode_change(content_type, body)
        if change is None:
            return
        change = Change(change_seq, change.retracted, change.text)
        if not newer(conv.changes.get(target), change):
            return
        conv.changes[target] = change
        for line in conv.lines:
            if line.conv_seq == target and line.kind in ("text", "image", "file"):
                line.text = shown_text(line.text, change)
                line.kind = "text"
        conv.version += 1
        self.version += 1

    def last_file(self, conv: Conversation) -> tuple[int, f.FileInfo] | None:
        """The latest file message of the window that is not deleted: (conv_seq, info)."""
        for line in reversed(conv.lines):
            if line.kind == "file" and line.conv_seq is not None and not (
                    line.conv_seq in conv.changes and conv.changes[line.conv_seq].retracted):
                info = conv.files.get(line.conv_seq)
                if info is not None:
                    return line.conv_seq, info
        return None

    def last_own_message(self, conv: Conversation,
                         kinds: tuple[str, ...] = ("text", "image", "file")) -> Line | None:
        """Our latest stored, not deleted message of those kinds in the window (for /edit
        and /delete)."""
        for line in reversed(conv.lines):
            if (line.sender == self.me and line.conv_seq is not None
                    and line.kind in kinds
                    and not (line.conv_seq in conv.changes
                             and conv.changes[line.conv_seq].retracted)):
                return line
        return None

    def add_outgoing(self, conv: Conversation, kind: str, text: str,
                     client_msg_id: bytes, image_path: str | None = None) -> Line:
        """Our message, shown at once as pending."""
        line = Line(kind, text, self.now_ms(), self.me, None, client_msg_id, PENDING,
                    image_path)
        conv.insert(line)
        self._touch(conv, counts=False)
        return line

    def _set_seq(self, conv: Conversation, line: Line, conv_seq: int) -> None:
        line.conv_seq = conv_seq  # the line stays where it was typed
        conv.version += 1

    def _find_own(self, client_msg_id: bytes) -> tuple[Conversation, Line] | None:
        for conv in self.windows:
            for line in conv.lines:
                if line.client_msg_id == client_msg_id and line.sender == self.me:
                    return conv, line
        return None

    def acked(self, ack: m.SendAck) -> None:
        """The server stored our message: ✓."""
        found = self._find_own(ack.client_msg_id)
        if found is None:
            return
        conv, line = found
        if line.conv_seq is None:
            self._set_seq(conv, line, ack.conv_seq)
        line.time_ms = ack.server_time_ms
        self._raise_status(line, STORED)
        conv.version += 1
        self.version += 1

    def failed(self, client_msg_id: bytes, why: str) -> None:
        """Our message was refused (said once, however many paths report it)."""
        found = self._find_own(client_msg_id)
        if found is not None and found[1].status != FAILED:
            conv, line = found
            line.status = FAILED
            self.notice(f"not sent: {why}", conv, level="error")

    @staticmethod
    def _raise_status(line: Line, status: str) -> None:
        if _STATUS_RANK.get(line.status or PENDING, 0) < _STATUS_RANK[status]:
            line.status = status

    def receipt(self, receipt: m.Receipt) -> None:
        """A delivery or read receipt: ✓✓ or read on our messages up to its sequence."""
        key: Key = ("group", receipt.group_id) if receipt.group_id else ("dm", receipt.by)
        conv = self.by_key.get(key)
        status = READ if receipt.kind == m.ReceiptKind.READ else DELIVERED
        if conv is None:
            delivered, read = self.marks.get(key, (0, 0))
            if status == READ:
                read = max(read, receipt.conv_seq)
            self.marks[key] = (max(delivered, receipt.conv_seq), read)
            return
        if status == READ:
            conv.read_upto = max(conv.read_upto, receipt.conv_seq)
        conv.delivered_upto = max(conv.delivered_upto, receipt.conv_seq)
        for line in conv.lines:
            if (line.sender == self.me and line.conv_seq is not None
                    and line.conv_seq <= receipt.conv_seq and line.status != FAILED):
                self._raise_status(line, status)
        conv.version += 1
        self.version += 1

    # --- presence and typing -----------------------------------------------------------------

    def set_presence(self, name: str, online: bool, last_seen_ms: int | None,
                     announce: bool = False) -> None:
        """Record a user's presence; with ``announce``, say so in their window, quietly: "is
        online" only once they stayed :data:`PRESENCE_QUIET_MS` (:meth:`flush_presence`),
        and nothing at all for a shorter session."""
        before = self.presence.get(name)
        self.presence[name] = Presence(online, last_seen_ms)
        self.version += 1
        if not announce or (before is not None and before.online == online) or name == self.me:
            return
        if online:
            self.pending_online[name] = self.now_ms()
            return
        if self.pending_online.pop(name, None) is not None:
            return  # a short session: neither line
        text = f"{name} went offline ({last_seen_text(last_seen_ms, self.now_ms())})"
        self.notice(text, self.by_key.get(("dm", name)), level="presence")

    def flush_presence(self) -> None:
        """Announce the contacts who have stayed online long enough."""
        now = self.now_ms()
        for name, since in list(self.pending_online.items()):
            if now - since >= PRESENCE_QUIET_MS:
                del self.pending_online[name]
                self.notice(f"{name} is online", self.by_key.get(("dm", name)),
                            level="presence")

    def presence_mark(self, name: str) -> str:
        """``●`` online, ``○`` offline, `` `` unknown."""
        p = self.presence.get(name)
        if name == self.me and self.me:
            return "●"
        if p is None:
            return " "
        return "●" if p.online else "○"

    def typing(self, event: m.TypingEvent, now: float) -> None:
        """Someone started or stopped typing."""
        key: Key = ("group", event.group_id) if event.group_id else ("dm", event.sender)
        conv = self.by_key.get(key)
        if conv is None:
            return
        if event.active:
            conv.typing[event.sender] = now + TYPING_TTL
        else:
            conv.typing.pop(event.sender, None)
        conv.version += 1
        self.version += 1

    def known_names(self) -> list[str]:
        """Every user name we have seen, for completion."""
        names = set(self.presence)
        for conv in self.windows:
            if conv.key[0] == "dm":
                names.add(str(conv.key[1]))
            names.update(line.sender for line in conv.lines if line.sender)
        for members in self.group_members.values():
            names.update(members)
        names.discard(self.me)
        return sorted(names)
