"""A signed-in connection on a StringTransport and a task.Clock: Quit, image transfers, Sync,
typing and receipts, the order of name lists. Synchronous: the store double answers at once,
or holds an answer until the test releases it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.defer import Deferred

from chatproto.storage.store import LogEntry
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode
from tests.server.test_protocol import Conn, Harness, MemoryStore

PNG = b"\x89PNG\r\n\x1a\n"


def log_entry(user_seq: int, text: bytes) -> LogEntry:
    return LogEntry(0, "alice", "bob", user_seq, 1, bytes([user_seq]) * 16, m.ContentType.TEXT,
                    text, None, None, len(text), user_seq, user_seq=user_seq)


class ChatMemoryStore(MemoryStore):
    """The MemoryStore plus what these tests need; ``hold_last_seen`` keeps record_last_seen
    pending until the test fires it."""

    def __init__(self) -> None:
        super().__init__()
        self.contact_rows: dict[str, list[tuple[str, int | None]]] = {}
        self.direct_pairs: set[frozenset[str]] = set()
        self.member_rows: list[tuple[str, str, int | None]] = []
        self.hold_last_seen: Deferred[None] | None = None
        self.acks: list[tuple[str, int]] = []
        self.log_reads = 0
        self.hold_log: Deferred[None] | None = None
        self.log = [log_entry(1, b"hi")]

    def record_last_seen(self, name: str, now_ms: int) -> Deferred[None]:
        super().record_last_seen(name, now_ms)
        return self.hold_last_seen if self.hold_last_seen is not None else defer.succeed(None)

    def contacts(self, name: str) -> Deferred[list[tuple[str, int | None]]]:
        return defer.succeed(list(self.contact_rows.get(name, [])))

    def direct_exists(self, user: str, peer: str) -> Deferred[bool]:
        return defer.succeed(frozenset((user, peer)) in self.direct_pairs)

    def group_members(self, user: str, group_id: int) -> Deferred[
            list[tuple[str, str, int | None]]]:
        return defer.succeed(list(self.member_rows))

    def sync_position(self, user: str, device_id: bytes) -> Deferred[tuple[int, int]]:
        return defer.succeed((0, 1))

    def read_log(self, user: str, after_seq: int, limit: int) -> Deferred[list[LogEntry]]:
        self.log_reads += 1
        page = [e for e in self.log if e.user_seq > after_seq][:limit]
        if self.hold_log is not None:
            return self.hold_log.addCallback(lambda _: page)
        return defer.succeed(page)

    def acknowledge(self, user: str, device_id: bytes, up_to: int, now_ms: int) -> Deferred[
            list[Any]]:
        self.acks.append((user, up_to))
        return defer.succeed([])


class ChatHarness(Harness):
    """The protocol tests' Harness over a ChatMemoryStore."""

    store: ChatMemoryStore

    def __init__(self) -> None:
        super().__init__(store=ChatMemoryStore())


@pytest.fixture
def harness() -> ChatHarness:
    return ChatHarness()


def signed_in(h: ChatHarness, name: str, ip: str = "10.0.0.1") -> Conn:
    if name not in h.store.users:
        h.add_user(name)
    conn = h.connect(ip)
    conn.login(name)
    conn.receive()
    return conn


def send(conn: Conn, *msgs: m.Message) -> list[Any]:
    """Send messages in one write; what the server answered (pings and presence left out)."""
    session = conn.client.session
    assert session is not None
    conn.deliver(b"".join(session.send(msg) for msg in msgs))
    return [x for x in conn.receive() if not isinstance(x, m.Ping | m.PresenceEvent)]


def image_chat(req: int, total: int, first: bytes, mime: str | None = None) -> m.Chat:
    return m.Chat(req, bytes([req]) * 16, 0, "bob", None, m.ContentType.IMAGE, first,
                  m.ImageInfo(total, hashlib.sha256(first).digest(), mime))


def errors(items: list[Any]) -> list[tuple[int, int]]:
    return [(x.req, x.code) for x in items if isinstance(x, m.Error)]


# --- Quit ------------------------------------------------------------------------------------


def test_requests_after_quit_are_ignored(harness: ChatHarness) -> None:
    """Requests that arrive after Quit (here a Chat and a DeliveryAck in the next write, while
    the session is still ending) get no reply at all: no Error, no 500; then AckQuit."""
    harness.add_user("bob")
    alice = signed_in(harness, "alice")
    harness.store.hold_last_seen = held = Deferred()
    assert send(alice, m.Quit(7)) == []
    text = m.Chat(8, b"x" * 16, 0, "bob", None, m.ContentType.TEXT, b"too late", None)
    assert send(alice, text, m.DeliveryAck(3), m.GroupList(9)) == []
    assert harness.store.acks == []
    held.callback(None)
    assert alice.receive() == [m.AckQuit(7)]
    assert alice.closing


def test_ping_after_quit_is_still_answered(harness: ChatHarness) -> None:
    """Ping is transport-level: answered even while the session ends."""
    alice = signed_in(harness, "alice")
    harness.store.hold_last_seen = Deferred()
    send(alice, m.Quit(1))
    assert send(alice, m.Ping(5)) == [m.Pong(5)]


# --- image transfers -------------------------------------------------------------------------


def test_refused_images_do_not_hold_transfer_slots(harness: ChatHarness) -> None:
    """Four images refused at once (too large; not an image) leave every slot free: a fifth
    image starts normally (no reply until its chunks arrive), and the refused ones' chunks are
    still dropped silently."""
    alice = signed_in(harness, "alice")
    limit = harness.server.limits.max_image_bytes
    assert errors(send(alice, image_chat(1, limit + 1, PNG + b"a"))) == [
        (1, ErrorCode.IMAGE_TOO_LARGE)]
    assert errors(send(alice, image_chat(2, 100, b"GIF00a not an image"))) == [
        (2, ErrorCode.BAD_IMAGE)]
    assert errors(send(alice, image_chat(3, limit + 1, PNG))) == [(3, ErrorCode.IMAGE_TOO_LARGE)]
    assert errors(send(alice, image_chat(4, 100, b"BM bitmap"))) == [(4, ErrorCode.BAD_IMAGE)]
    assert send(alice, image_chat(5, 100, PNG + b"first")) == []
    assert send(alice, m.ImageChunk(2, 1, b"x" * 50)) == []  # dropped silently
    assert send(alice, m.ImageChunk(2, 2, b"x" * 31)) == []  # ... up to the announced total
    assert errors(send(alice, m.ImageChunk(2, 3, b"x"))) == [(2, ErrorCode.INVALID_REQUEST)]


def test_a_chunk_out_of_order_frees_the_slot(harness: ChatHarness) -> None:
    """A transfer refused in the middle (a chunk with the wrong index) no longer counts: four
    such refusals and a fifth transfer still starts."""
    alice = signed_in(harness, "alice")
    for req in range(1, 5):
        assert send(alice, image_chat(req, 100, PNG)) == []
        assert errors(send(alice, m.ImageChunk(req, 2, b"x"))) == [(req, ErrorCode.BAD_IMAGE)]
    assert send(alice, image_chat(5, 100, PNG)) == []


def test_five_transfers_in_progress_are_too_many(harness: ChatHarness) -> None:
    """Four transfers in progress: a fifth is refused with INVALID_REQUEST."""
    alice = signed_in(harness, "alice")
    for req in range(1, 5):
        assert send(alice, image_chat(req, 100, PNG)) == []
    assert errors(send(alice, image_chat(5, 100, PNG))) == [(5, ErrorCode.INVALID_REQUEST)]


def test_reusing_the_req_of_a_running_transfer(harness: ChatHarness,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An image Chat reusing the req of a transfer in progress gets Error(req, 306, "that
    request number is in use") and the running transfer goes on; that holds until the
    running one is answered, even after its last chunk (while it is checked and stored)."""
    checking: list[Deferred[Any]] = []

    def append_message(draft: Any) -> Deferred[Any]:
        checking.append(Deferred())
        return checking[-1]

    monkeypatch.setattr(harness.store, "append_message", append_message, raising=False)
    alice = signed_in(harness, "alice")
    assert send(alice, image_chat(1, 20, PNG)) == []
    items = send(alice, image_chat(1, 20, PNG))
    assert len(items) == 1 and isinstance(items[0], m.Error)
    assert (items[0].req, items[0].code, items[0].reason) == (
        1, ErrorCode.INVALID_REQUEST, "that request number is in use")
    assert send(alice, m.ImageChunk(1, 1, b"x" * 12)) == []  # the running one, complete
    assert len(checking) == 1
    assert errors(send(alice, image_chat(1, 20, PNG))) == [(1, ErrorCode.INVALID_REQUEST)]


def test_image_info_mime_must_be_nil_and_size_positive(harness: ChatHarness) -> None:
    """A client's ImageInfo has mime nil (else INVALID_REQUEST) and total_size > 0 (else
    BAD_IMAGE)."""
    alice = signed_in(harness, "alice")
    assert errors(send(alice, image_chat(1, 100, PNG, mime="image/png"))) == [
        (1, ErrorCode.INVALID_REQUEST)]
    assert errors(send(alice, image_chat(2, 0, PNG))) == [(2, ErrorCode.BAD_IMAGE)]
    for req in range(3, 7):  # neither refusal took a slot
        assert send(alice, image_chat(req, 100, PNG)) == []


def test_empty_text_is_an_invalid_request(harness: ChatHarness) -> None:
    """A text Chat with an empty body: Error(req, INVALID_REQUEST, "empty text")."""
    alice = signed_in(harness, "alice")
    items = send(alice, m.Chat(4, b"e" * 16, 0, "bob", None, m.ContentType.TEXT, b"", None))
    assert [(x.req, x.code, x.reason) for x in items] == [
        (4, ErrorCode.INVALID_REQUEST, "empty text")]


# --- Sync ------------------------------------------------------------------------------------


def test_a_second_sync_is_refused_and_replays_nothing(harness: ChatHarness) -> None:
    """The first Sync replays the log and ends with SyncDone; a second one on the same
    connection gets Error(req, INVALID_REQUEST, "already synced") and nothing again."""
    bob = signed_in(harness, "bob")
    items = send(bob, m.Sync(1, None))
    assert [type(x) for x in items] == [m.Deliver, m.SyncDone]
    reads = harness.store.log_reads
    items = send(bob, m.Sync(2, None))
    assert [(x.req, x.code, x.reason) for x in items] == [
        (2, ErrorCode.INVALID_REQUEST, "already synced")]
    assert harness.store.log_reads == reads


def test_replaying_streams_are_counted_for_the_metrics(harness: ChatHarness) -> None:
    """While a stream reads its log from the database it counts in stats.replaying (the
    chatproto_delivery_replays gauge); when the page has been sent it no longer does."""
    bob = signed_in(harness, "bob")
    harness.store.hold_log = held = Deferred()
    assert send(bob, m.Sync(1, None)) == []
    assert harness.server.stats.replaying == 1
    held.callback(None)
    assert [type(x) for x in bob.receive()] == [m.Deliver, m.SyncDone]
    assert harness.server.stats.replaying == 0


def test_a_notice_without_the_entry_makes_the_stream_read_the_log(harness: ChatHarness) -> None:
    """The router may say only "the log of bob reached N" (another node stored it): a live
    stream then reads the log from its cursor and delivers what it has not sent, in order;
    with the entry attached it is sent without a read."""
    bob = signed_in(harness, "bob")
    send(bob, m.Sync(1, None))
    harness.store.log += [log_entry(2, b"two"), log_entry(3, b"three")]
    reads = harness.store.log_reads
    harness.server.router.log_advanced("bob", 3, None, None)
    assert [(x.user_seq, x.body) for x in bob.receive()] == [(2, b"two"), (3, b"three")]
    assert harness.store.log_reads == reads + 1
    four = log_entry(4, b"four")
    harness.server.router.log_advanced("bob", 4, four, b"four")
    assert [(x.user_seq, x.body) for x in bob.receive()] == [(4, b"four")]
    assert harness.store.log_reads == reads + 1


# --- typing and read receipts ----------------------------------------------------------------


def test_typing_and_read_reach_only_direct_peers(harness: ChatHarness) -> None:
    """Typing and Read naming a user who has no direct conversation with the sender (even a
    fellow group member), or no user at all, are dropped silently (no Error, nothing sent);
    to the peer of a direct conversation they are relayed."""
    alice = signed_in(harness, "alice")
    bob = signed_in(harness, "bob", "10.0.0.2")
    harness.store.contact_rows["alice"] = [("bob", None)]  # a group in common only
    for peer in ("bob", "nobody"):
        assert send(alice, m.Typing(0, peer, True), m.Read(0, peer, 3)) == []
    assert bob.receive() == []
    harness.store.direct_pairs.add(frozenset(("alice", "bob")))
    send(alice, m.Typing(0, "bob", True), m.Read(0, "bob", 3))
    assert bob.receive() == [m.TypingEvent(0, "alice", True),
                             m.Receipt(m.ReceiptKind.READ, 0, "alice", 3)]


# --- order of name lists ---------------------------------------------------------------------


def test_presence_and_members_are_sorted_by_name(harness: ChatHarness) -> None:
    """Presence and Members list names bytewise by their UTF-8, whatever order the database
    returns (a PostgreSQL collation may ignore punctuation)."""
    alice = signed_in(harness, "alice")
    signed_in(harness, "a-c", "10.0.0.3")
    harness.store.contact_rows["alice"] = [("ab", 5), ("a.b", None), ("a-c", 7), ("a_b", 1)]
    (presence,) = send(alice, m.PresenceQuery(1))
    assert [e.name for e in presence.entries] == ["a-c", "a.b", "a_b", "ab"]
    assert [(e.online, e.last_seen_ms) for e in presence.entries] == [
        (True, None), (False, None), (False, 1), (False, 5)]
    harness.store.member_rows = [("b", "member", None), ("alice", "owner", None),
                                 ("a-c", "admin", 3)]
    (members,) = send(alice, m.GroupMembers(2, 9))
    assert [e.name for e in members.members] == ["a-c", "alice", "b"]
