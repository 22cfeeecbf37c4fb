"""What the terminal client shows, without the drawing: windows, their lines, unread counts,
delivery marks, presence and typing, and the command line's parsing and completion.

:mod:`chatproto.terminal.app` draws this with urwid and feeds it from the client library; the
model itself does no I/O, so it is tested directly.
"""

from __future__ import annotations

import datetime
import glob
import os
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from chatproto.terminal.cli import format_size
from chatproto.wire import messages as m

__all__ = [
    "COMMANDS",
    "ChatModel",
    "Command",
    "Conversation",
    "Line",
    "complete",
    "parse_command",
]

#: Delivery states of our own messages, in order.
PENDING, STORED, DELIVERED, READ, FAILED = "pending", "stored", "delivered", "read", "failed"
_STATUS_RANK = {PENDING: 0, STORED: 1, DELIVERED: 2, READ: 3, FAILED: -1}
#: Marks shown after our own messages.
MARKS = {PENDING: "…", STORED: "✓", DELIVERED: "✓✓", READ: "✓✓ read", FAILED: "✗ not sent"}

#: How long a typing indicator lasts without a refresh (seconds).
TYPING_TTL = 6.0

Key = tuple[str, str | int]
STATUS_KEY: Key = ("status", "")


def clock_time(ms: int) -> str:
    """``HH:MM`` in local time."""
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%H:%M")


def last_seen_text(ms: int | None, now_ms: int) -> str:
    """``last seen 14:02`` today, ``last seen 2024-03-01 14:02`` otherwise."""
    if ms is None:
        return "never seen"
    when = datetime.datetime.fromtimestamp(ms / 1000)
    now = datetime.datetime.fromtimestamp(now_ms / 1000)
    if when.date() == now.date():
        return f"last seen {when:%H:%M}"
    return f"last seen {when:%Y-%m-%d %H:%M}"


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
    typing: dict[str, float] = field(default_factory=dict)
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

    def typing_names(self, now: float) -> list[str]:
        """Who is typing here now (expired indicators are dropped)."""
        for name, until in list(self.typing.items()):
            if until <= now:
                del self.typing[name]
        return sorted(self.typing)


def describe_event(event: m.GroupEvent) -> str:
    """A group event as a sentence."""
    names = ", ".join(event.names)
    if event.action == m.GroupAction.CREATED:
        title = f" \"{event.title}\"" if event.title else ""
        return f"{event.actor} created the group{title} with {names}"
    if event.action == m.GroupAction.ADDED:
        return f"{event.actor} added {names}"
    if event.action == m.GroupAction.REMOVED:
        return f"{event.actor} removed {names}"
    if event.action == m.GroupAction.LEFT:
        return f"{event.actor} left the group"
    if event.action == m.GroupAction.RENAMED:
        return f"{event.actor} renamed the group to \"{event.title}\""
    return f"{event.actor}: group event {event.action}"


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
        """Close a window (not the status window)."""
        if conv.is_status:
            return
        index = self.windows.index(conv)
        del self.windows[index]
        del self.by_key[conv.key]
        if self.active >= index:
            self.active = max(0, self.active - 1)
        self.version += 1

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
        """Add a delivered message; None if it is already shown (our own copy, a resend)."""
        conv = self.window(self.key_of(deliver))
        assert conv is not None
        own = deliver.sender == self.me
        if own and deliver.client_msg_id is not None:
            for line in conv.lines:
                if line.client_msg_id == deliver.client_msg_id:
                    if line.conv_seq is None:  # the copy came before the SendAck
                        self._set_seq(conv, line, deliver.conv_seq)
                    return None
        if conv.has_seq(deliver.conv_seq):
            return None
        line = self._line(deliver.content_type, deliver.body, deliver.image, deliver.sender,
                          deliver.conv_seq, deliver.server_time_ms, image_path)
        if own:
            line.client_msg_id = deliver.client_msg_id
            line.status = STORED
        if deliver.content_type == m.ContentType.EVENT and deliver.group_id:
            self._apply_event(deliver.group_id, deliver.body)
        conv.insert(line)
        conv.typing.pop(deliver.sender, None)
        self._touch(conv, counts=not own and line.kind != "event",
                    highlight=bool(self.me) and self.me in line.text and not own)
        return line

    def _line(self, content_type: int, body: bytes, image: m.ImageInfo | None, sender: str,
              conv_seq: int, time_ms: int, image_path: str | None) -> Line:
        if content_type == m.ContentType.IMAGE and image is not None:
            what = image.mime or "image"
            text = f"sent an image ({what}, {format_size(image.total_size)})"
            if image_path:
                text = (f"sent an image: {os.path.basename(image_path)} "
                        f"({format_size(image.total_size)}) saved to {image_path}")
            return Line("image", text, time_ms, sender, conv_seq, image_path=image_path)
        if content_type == m.ContentType.EVENT:
            try:
                text = describe_event(m.decode_record(m.GroupEvent, body))
            except Exception:
                text = "(an unreadable group event)"
            return Line("event", text, time_ms, sender, conv_seq)
        return Line("text", body.decode("utf-8", "replace"), time_ms, sender, conv_seq)

    def _apply_event(self, group_id: int, body: bytes) -> None:
        try:
            event = m.decode_record(m.GroupEvent, body)
        except Exception:
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

    def add_history(self, conv: Conversation, page: m.HistoryPage) -> int:
        """Add an older page of a conversation; returns how many lines were new."""
        added = 0
        for entry in page.entries:
            if conv.has_seq(entry.conv_seq):
                continue
            line = self._line(entry.content_type, entry.body, entry.image, entry.sender,
                              entry.conv_seq, entry.server_time_ms, None)
            if entry.sender == self.me:
                line.status = STORED
            conv.insert(line)
            added += 1
        seqs = [e.conv_seq for e in page.entries]
        if seqs:
            conv.oldest_seq = min(seqs + ([conv.oldest_seq] if conv.oldest_seq else []))
        conv.has_more = page.has_more
        conv.history_loaded = True
        self.version += 1
        return added

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
        """Our message was refused."""
        found = self._find_own(client_msg_id)
        if found is not None:
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
        if conv is None:
            return
        status = READ if receipt.kind == m.ReceiptKind.READ else DELIVERED
        for line in conv.lines:
            if (line.sender == self.me and line.conv_seq is not None
                    and line.conv_seq <= receipt.conv_seq and line.status != FAILED):
                self._raise_status(line, status)
        conv.version += 1
        self.version += 1

    # --- presence and typing -----------------------------------------------------------------

    def set_presence(self, name: str, online: bool, last_seen_ms: int | None,
                     announce: bool = False) -> None:
        """Record a user's presence; with ``announce``, say so in their window."""
        before = self.presence.get(name)
        self.presence[name] = Presence(online, last_seen_ms)
        self.version += 1
        if not announce or (before is not None and before.online == online) or name == self.me:
            return
        text = (f"{name} is online" if online
                else f"{name} went offline ({last_seen_text(last_seen_ms, self.now_ms())})")
        conv = self.by_key.get(("dm", name))
        self.notice(text, conv, level="presence")

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


# --- commands ------------------------------------------------------------------------------

#: Command → (arguments, help).
COMMANDS: dict[str, tuple[str, str]] = {
    "msg": ("NAME [TEXT]", "open (or start) a direct chat with NAME, optionally sending TEXT"),
    "group": ("create NAME... | add NAME... | remove NAME... | leave | members | rename TITLE",
              "create a group, change the current group's members, leave it, list them"),
    "image": ("PATH", "send an image file (PNG, JPEG, GIF, WebP) to this window"),
    "history": ("", "load older messages of this window"),
    "who": ("", "presence of your contacts (● online, ○ offline)"),
    "win": ("N|NAME", "switch window (also Alt+1..9, Ctrl-N / Ctrl-P)"),
    "close": ("", "close this window"),
    "help": ("", "this list"),
    "quit": ("", "sign out and exit"),
}
GROUP_SUBCOMMANDS = ("create", "add", "remove", "leave", "members", "rename")


@dataclass
class Command:
    """A parsed command line: ``name`` is empty for plain text."""

    name: str
    args: list[str]
    rest: str


def parse_command(text: str) -> Command:
    """Split ``/cmd args`` (``//text`` sends ``/text``); plain text has an empty name."""
    if not text.startswith("/") or text.startswith("//"):
        return Command("", [], text[1:] if text.startswith("//") else text)
    head, _, rest = text[1:].partition(" ")
    try:
        args = shlex.split(rest)
    except ValueError:
        args = rest.split()
    return Command(head.lower(), args, rest.strip())


def _common_prefix(words: Sequence[str]) -> str:
    return os.path.commonprefix(list(words)) if words else ""


def complete(text: str, pos: int, names: Iterable[str],
             list_paths: Callable[[str], list[str]] | None = None) -> list[tuple[str, int]]:
    """Completions of the word before the cursor, as ``(new_text, new_pos)`` pairs for
    urwid's ``Edit.text_completer``: command names, ``/group`` subcommands, file paths after
    ``/image``, user names elsewhere (a name first on a plain line gets ``": "``)."""
    before, after = text[:pos], text[pos:]
    start = before.rfind(" ") + 1
    word = before[start:]
    words_before = before[:start].split()
    candidates: list[str]
    suffix = " "
    if not words_before and word.startswith("/"):
        candidates = ["/" + c for c in COMMANDS if ("/" + c).startswith(word)]
    elif words_before == ["/group"]:
        candidates = [c for c in GROUP_SUBCOMMANDS if c.startswith(word)]
    elif words_before and words_before[0] == "/image":
        lister = list_paths or _list_paths
        candidates = lister(word)
        suffix = ""
    else:
        candidates = [n for n in names if n.startswith(word)]
        if not words_before:
            suffix = ": "
    if not candidates:
        return []

    def apply(word_done: str, end: str) -> tuple[str, int]:
        new_before = before[:start] + word_done + end
        return new_before + after, len(new_before)

    if len(candidates) == 1:
        only = candidates[0]
        return [apply(only, "" if only.endswith("/") else suffix)]
    prefix = _common_prefix(candidates)
    if len(prefix) > len(word):
        return [apply(prefix, "")]
    return [apply(c, "" if c.endswith("/") else suffix) for c in sorted(candidates)]


def _list_paths(word: str) -> list[str]:
    expanded = os.path.expanduser(word)
    matches = sorted(glob.glob(glob.escape(expanded) + "*"))
    out = []
    for path in matches[:200]:
        shown = word + path[len(expanded):] if path.startswith(expanded) else path
        out.append(shown + "/" if os.path.isdir(path) else shown)
    return out
