"""The delivery stream alone: a fake connection, an in-memory log and a Clock.

Live entries come in any order (as they do with several nodes: this node's own commit is
heard before another node's earlier one); the stream must send each entry of the log once,
in order, and read the log only when a gap does not fill in time.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from chatproto.server.delivery import GAP_WAIT, MAX_HELD_BYTES, MAX_HELD_ENTRIES, DeliveryStream
from chatproto.server.metrics import ServerStats
from chatproto.storage.records import LogEntry
from chatproto.wire import messages as m
from chatproto.wire.messages import ContentType


class FakeOwner:
    """A signed-in connection: records the user_seq of every Deliver pushed to it."""

    name = "bob"

    def __init__(self) -> None:
        self.closed = False
        self.write_blocked = False
        self.delivered: list[int] = []
        self.failed: list[Any] = []
        self.synced: int | None = None

    def push(self, payload: bytes, kind: str = "fan-out") -> None:
        fields = msgpack.unpackb(payload)
        self.delivered.append(fields[1])

    def send(self, msg: Any, *, check: bool = True) -> None:
        assert isinstance(msg, m.SyncDone), msg  # text entries are pushed, encoded
        self.synced = msg.last_seq

    def fail(self, code: Any, reason: str) -> None:
        self.failed.append((code, reason))


class FakeLog:
    """The user's log in memory; reads answer when the test says so (``answer``) or at once."""

    def __init__(self) -> None:
        self.entries: dict[int, LogEntry] = {}
        self.reads = 0
        self.held_reads: list[tuple[Deferred[list[LogEntry]], int, int]] | None = None

    def add(self, seq: int, body: bytes = b"hi") -> tuple[LogEntry, bytes]:
        entry = LogEntry(0, "alice", "bob", seq, 1_000, b"c%d" % seq, ContentType.TEXT, body,
                         None, None, len(body), seq, seq)
        self.entries[seq] = entry
        return entry, body

    def read_log(self, user: str, after_seq: int, limit: int) -> Deferred[list[LogEntry]]:
        self.reads += 1
        d: Deferred[list[LogEntry]] = Deferred()
        if self.held_reads is not None:
            self.held_reads.append((d, after_seq, limit))
        else:
            d.callback(self._page(after_seq, limit))
        return d

    def answer(self) -> None:
        assert self.held_reads
        d, after, limit = self.held_reads.pop(0)
        d.callback(self._page(after, limit))

    def _page(self, after: int, limit: int) -> list[LogEntry]:
        return [self.entries[s] for s in sorted(self.entries) if s > after][:limit]

    def message_body(self, message_id: int) -> Deferred[bytes]:
        return defer.succeed(self.entries[message_id].body or b"")


def live_stream() -> tuple[DeliveryStream, FakeOwner, FakeLog, Clock, ServerStats]:
    owner, store, clock, stats = FakeOwner(), FakeLog(), Clock(), ServerStats()
    stream = DeliveryStream(owner, store, stats, clock)  # type: ignore[arg-type]
    stream.start(1, 0)  # an empty log: live at once
    assert stream.live and store.reads == 1
    return stream, owner, store, clock, stats


def test_an_entry_ahead_of_a_gap_waits_for_the_gap_to_fill_without_a_read() -> None:
    stream, owner, store, clock, stats = live_stream()
    stream.log_advanced(1, *store.add(1))
    second = store.add(2)
    third = store.add(3)
    stream.log_advanced(3, *third)  # this node's commit, heard first
    assert owner.delivered == [1]
    stream.log_advanced(2, *second)  # the other node's poke
    assert owner.delivered == [1, 2, 3]
    assert store.reads == 1
    assert stats.gap_entries_held == 1 and stats.gap_reads == 0
    assert not clock.getDelayedCalls()  # the wait is over


def test_a_gap_still_open_after_the_wait_is_read_from_the_log() -> None:
    stream, owner, store, clock, stats = live_stream()
    store.add(1)  # committed elsewhere; its poke is lost
    stream.log_advanced(2, *store.add(2))
    clock.advance(GAP_WAIT * 0.9)
    assert owner.delivered == [] and store.reads == 1
    clock.advance(GAP_WAIT * 0.2)
    assert owner.delivered == [1, 2]
    assert store.reads == 2 and stats.gap_reads == 1
    stream.log_advanced(1, store.entries[1], b"hi")  # its poke, late
    assert owner.delivered == [1, 2]


def test_a_notice_without_its_entry_reads_at_once() -> None:
    stream, owner, store, clock, _ = live_stream()
    store.add(1)
    store.add(2)
    stream.log_advanced(2, None, None)  # the bounded log check, or a large image
    assert owner.delivered == [1, 2] and store.reads == 2
    assert not clock.getDelayedCalls()


def test_held_entries_are_bounded_in_count() -> None:
    stream, owner, store, clock, _ = live_stream()
    store.add(1)
    for seq in range(2, MAX_HELD_ENTRIES + 2):
        stream.log_advanced(seq, *store.add(seq))
    assert store.reads == 1  # MAX_HELD_ENTRIES held
    stream.log_advanced(MAX_HELD_ENTRIES + 2, *store.add(MAX_HELD_ENTRIES + 2))
    assert store.reads == 2  # one more: read instead
    assert owner.delivered == list(range(1, MAX_HELD_ENTRIES + 3))
    assert not clock.getDelayedCalls()


def test_held_entries_are_bounded_in_bytes() -> None:
    stream, owner, store, _, _ = live_stream()
    store.add(1)
    stream.log_advanced(2, *store.add(2, b"x" * (MAX_HELD_BYTES - 10)))
    assert store.reads == 1
    stream.log_advanced(3, *store.add(3, b"y" * 11))
    assert store.reads == 2
    assert owner.delivered == [1, 2, 3]


def test_a_stopped_stream_drops_what_it_holds_and_never_reads() -> None:
    stream, owner, store, clock, _ = live_stream()
    store.add(1)
    stream.log_advanced(2, *store.add(2))
    owner.closed = True
    stream.stop()
    assert not clock.getDelayedCalls()
    clock.advance(GAP_WAIT * 2)
    assert owner.delivered == [] and store.reads == 1


def test_a_full_write_buffer_drops_the_held_entries_for_the_log() -> None:
    stream, owner, store, clock, _ = live_stream()
    store.add(1)
    stream.log_advanced(2, *store.add(2))
    owner.write_blocked = True
    stream.log_advanced(1, store.entries[1], b"hi")
    assert owner.delivered == [] and not clock.getDelayedCalls()
    owner.write_blocked = False
    stream.resume()
    assert owner.delivered == [1, 2]


def test_entries_heard_while_reading_are_left_to_the_read() -> None:
    stream, owner, store, clock, _ = live_stream()
    store.held_reads = []
    store.add(1)
    stream.log_advanced(2, *store.add(2))
    clock.advance(GAP_WAIT)  # the wait ends: a read starts
    stream.log_advanced(3, *store.add(3))  # arrives during the read
    assert not clock.getDelayedCalls()
    store.answer()  # page: 1, 2, 3
    assert owner.delivered == [1, 2, 3]
    store.answer()  # the read again (dirty), nothing new
    assert owner.delivered == [1, 2, 3]


@given(st.permutations(list(range(1, 13))),
       st.lists(st.booleans(), min_size=12, max_size=12),
       st.lists(st.sampled_from([0.0, GAP_WAIT / 3, GAP_WAIT * 2]), min_size=12, max_size=12))
def test_every_entry_once_and_in_order_whatever_the_arrival(
        order: list[int], lost: list[bool], pauses: list[float]) -> None:
    """Notices in any order, some lost, with waits between them; after the last wait every
    entry was sent exactly once, in order."""
    stream, owner, store, clock, _ = live_stream()
    for seq in range(1, 13):
        store.add(seq)
    for seq, is_lost, pause in zip(order, lost, pauses, strict=True):
        if not is_lost:
            stream.log_advanced(seq, store.entries[seq], b"hi")
        clock.advance(pause)
        assert owner.delivered == list(range(1, len(owner.delivered) + 1))
    clock.advance(GAP_WAIT * 2)
    heard = [seq for seq, is_lost in zip(order, lost, strict=True) if not is_lost]
    if heard:  # nothing heard is left waiting: sent, or read (with what follows it)
        assert len(owner.delivered) >= max(heard)
    assert not clock.getDelayedCalls()
    if owner.delivered != list(range(1, 13)):
        # Only lost notices at the end can leave entries unsent: the log check's notice.
        stream.log_advanced(12, None, None)
    assert owner.delivered == list(range(1, 13))
