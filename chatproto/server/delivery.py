"""One connection's share of its user's log: exactly once, in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.server.metrics import ServerStats
from chatproto.server.refusals import RequestError
from chatproto.storage.store import ChatStore, LogEntry
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode

log = Logger()

#: Log entries read per query when replaying a user's log.
REPLAY_PAGE = 200
#: Seconds a live entry that arrived ahead of a gap waits for the entries before it (another
#: node's commit whose poke is on its way) before the stream reads the log instead.
GAP_WAIT = 0.05
#: At most this many entries, and this many bytes of their bodies, wait for a gap to fill;
#: beyond either bound the stream drops them and reads the log.
MAX_HELD_ENTRIES = 8
MAX_HELD_BYTES = 64 * 1024


class StreamOwner(TypingProtocol):
    """What a stream needs of its connection."""

    @property
    def name(self) -> str:
        ...

    @property
    def closed(self) -> bool:
        ...

    #: The connection's write buffer is above its high-water mark: send no more entries.
    write_blocked: bool

    send: Callable[..., None]

    #: Sends an encoded message: ``push(payload, kind)`` (kind: the metrics' message type).
    push: Callable[..., None]

    def fail(self, code: ErrorCode, reason: str) -> None:
        ...


class _Encoded:
    """The last log entry's Deliver, encoded once (fan-out and the sender's echo send the
    same entry to several streams in a row; a group's to every member)."""

    __slots__ = ("body", "entry", "template")

    def __init__(self) -> None:
        self.entry: LogEntry | None = None
        self.body: bytes | None = None
        self.template: m.DeliverTemplate | None = None


_last = _Encoded()


def deliver_template(entry: LogEntry, first: bytes, image: m.ImageInfo | None,
                     ) -> m.DeliverTemplate:
    """The entry's Deliver without ``user_seq``: built once per entry (identity of the entry
    and its first bytes), then reused for each of its recipients."""
    last = _last
    if last.entry is entry and last.body is first and last.template is not None:
        return last.template
    template = m.DeliverTemplate(entry.group_id, entry.sender, entry.to, entry.conv_seq,
                                 entry.created_ms, entry.client_msg_id, entry.content_type,
                                 first, image)
    last.entry, last.body, last.template = entry, first, template
    return template


def send_entry(owner: StreamOwner, user_seq: int, entry: LogEntry, body: bytes) -> None:
    """Send one log entry: a Deliver, then ImageChunks for the rest of an image."""
    if entry.content_type != m.ContentType.IMAGE:
        owner.push(deliver_template(entry, body, None).payload(user_seq), "Deliver")
        return
    assert entry.sha256 is not None
    image = m.ImageInfo(len(body), entry.sha256, entry.mime)
    first = body[: m.MAX_CHUNK_BYTES]
    owner.send(m.Deliver(user_seq, entry.group_id, entry.sender, entry.to, entry.conv_seq,
                         entry.created_ms, entry.client_msg_id, entry.content_type, first,
                         image), check=False)
    view = memoryview(body)
    for index, offset in enumerate(range(len(first), len(body), m.MAX_CHUNK_BYTES), 1):
        owner.send(m.ImageChunk(user_seq, index, bytes(view[offset:offset + m.MAX_CHUNK_BYTES])))


class DeliveryStream:
    """Delivers one connection's share of its user's log.

    Sync starts it at a cursor; it replays the log from the database in pages, then switches
    to live delivery. A live entry that is exactly the next one is sent at once; anything else
    (a gap, a notice without the entry, or a notice while a page is being read) makes it read
    the log again, so the seam between replay and live delivery has neither a gap nor a
    duplicate.

    With several nodes a user's log is written by each node their partners are on, and this
    node hears of its own commits before the pokes of another node's earlier ones: entry
    N + 1 arrives before N. Such an entry is held (up to :data:`MAX_HELD_ENTRIES` and
    :data:`MAX_HELD_BYTES`) for :data:`GAP_WAIT` seconds; when N arrives both go out in order,
    with no read. If the gap is still open then, or a bound is reached, the held entries are
    dropped and the stream reads the log from its cursor, as for any other gap.

    While the owner's write buffer is above its high-water mark (``write_blocked``) nothing is
    sent: a replay stops between entries and live entries are left in the log; :meth:`resume`
    reads the log from the cursor once the buffer drained. The log is the buffer.
    """

    __slots__ = ("_gap_timer", "_held", "clock", "dirty", "live", "owner", "reading",
                 "sent_seq", "started", "stats", "store", "sync_req")

    def __init__(self, owner: StreamOwner, store: ChatStore, stats: ServerStats,
                 clock: Any) -> None:
        self.owner = owner
        self.store = store
        self.stats = stats
        self.clock = clock
        #: Live entries that arrived ahead of a gap, by user_seq (None while there are none).
        self._held: dict[int, tuple[LogEntry, bytes]] | None = None
        self._gap_timer: Any = None  # an IDelayedCall
        self.sent_seq = 0
        self.started = False
        self.live = False
        self.reading = False
        self.dirty = False
        self.sync_req: int | None = None

    def start(self, req: int, cursor: int) -> None:
        """Sync: replay after ``cursor``, then SyncDone(req), then live entries."""
        self.sent_seq = cursor
        self.sync_req = req
        self.live = False
        self.dirty = True
        self._pump()

    def claim(self) -> None:
        """A Sync arrived: the stream starts once per connection (RequestError after)."""
        if self.started:
            raise RequestError(ErrorCode.INVALID_REQUEST, "already synced")
        self.started = True

    def log_advanced(self, user_seq: int, entry: LogEntry | None, body: bytes | None) -> None:
        if self.owner.closed:
            return
        if self.reading or (not self.live and self.sync_req is not None):
            self.dirty = True
            return
        if not self.live or user_seq <= self.sent_seq:
            return
        if self.owner.write_blocked:
            self._drop_held()  # resume() reads it from the log
            self.dirty = True
            return
        if entry is not None and body is not None:
            if user_seq == self.sent_seq + 1:
                self.sent_seq = user_seq
                send_entry(self.owner, user_seq, entry, body)
                if self._held is not None:
                    self._send_held()
                return
            if self._hold(user_seq, entry, body):
                return
        self._read_instead()

    def _hold(self, user_seq: int, entry: LogEntry, body: bytes) -> bool:
        """Keep an entry that arrived ahead of a gap (False: a bound says read instead)."""
        held = self._held
        if held is None:
            held = self._held = {}
        if (len(held) >= MAX_HELD_ENTRIES
                or sum(len(b) for _, b in held.values()) + len(body) > MAX_HELD_BYTES):
            return False
        held.setdefault(user_seq, (entry, body))
        if self._gap_timer is None:
            self._gap_timer = self.clock.callLater(GAP_WAIT, self._gap_timed_out)
        return True

    def _send_held(self) -> None:
        """Send the held entries that now follow the cursor; forget those behind it."""
        held = self._held
        assert held is not None
        while (nxt := held.pop(self.sent_seq + 1, None)) is not None:
            if self.owner.write_blocked or self.owner.closed:
                self._read_instead()
                return
            self.sent_seq += 1
            self.stats.gap_entries_held += 1
            send_entry(self.owner, self.sent_seq, *nxt)
        for seq in [s for s in held if s <= self.sent_seq]:
            del held[seq]
        if not held:
            self._drop_held()

    def _drop_held(self) -> None:
        self._held = None
        if self._gap_timer is not None:
            if self._gap_timer.active():
                self._gap_timer.cancel()
            self._gap_timer = None

    def _gap_timed_out(self) -> None:
        self._gap_timer = None
        if self._held is not None:
            self.stats.gap_reads += 1
            self._read_instead()

    def _read_instead(self) -> None:
        """Read the log from the cursor (what is held is in it: :meth:`_pump` drops it)."""
        self.dirty = True
        self._pump()

    def stop(self) -> None:
        """The connection ended: drop what is held (it stays in the log)."""
        self._drop_held()

    def resume(self) -> None:
        """The owner's write buffer drained: send what the log holds beyond the cursor."""
        if self.dirty and (self.live or self.sync_req is not None):
            self._pump()

    def _pump(self) -> None:
        self._drop_held()  # the read covers it
        if self.reading or self.owner.closed:
            return
        self.reading = True
        self.stats.replaying += 1
        d = defer.ensureDeferred(self._read())

        def done(result: object) -> object:
            self.reading = False
            self.stats.replaying -= 1
            return result

        d.addBoth(done)
        d.addErrback(self._failed)

    def _failed(self, f: Failure) -> None:
        if self.owner.closed:  # e.g. the server is stopping: nothing to tell anyone
            return
        log.failure("replaying the log of {name} failed", f, name=self.owner.name)
        self.owner.fail(ErrorCode.STORAGE_UNAVAILABLE, "could not read your messages; reconnect")

    async def _read(self) -> None:
        store = self.store
        owner = self.owner
        while self.dirty and not owner.closed:
            if owner.write_blocked:
                return  # still dirty: resume() reads on from the cursor
            self.dirty = False
            entries = await store.read_log(owner.name, self.sent_seq, REPLAY_PAGE)
            for entry in entries:
                if entry.user_seq <= self.sent_seq:
                    continue
                if owner.write_blocked:
                    self.dirty = True  # the rest of the page is read again later
                    break
                body = entry.body
                if body is None:
                    body = await store.message_body(entry.message_id)
                if owner.closed or owner.write_blocked:
                    self.dirty = True
                    break
                self.sent_seq = entry.user_seq
                send_entry(owner, entry.user_seq, entry, body)
            else:
                if len(entries) == REPLAY_PAGE:
                    self.dirty = True
        if owner.write_blocked:
            return
        if self.sync_req is not None and not owner.closed:
            owner.send(m.SyncDone(self.sync_req, self.sent_seq))
            self.sync_req = None
            self.live = True
