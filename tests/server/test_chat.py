"""Conversation flows end to end: real server, real client library, loopback TCP, both databases."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredQueue

from chatproto.client import ChatClient, ChatListener, ServerError, connect
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode
from tests.server.conftest import Loopback

PASSWORD = "correct horse battery"


def png(size: int) -> bytes:
    """Bytes that pass the server's PNG check (magic bytes), ``size`` long."""
    return b"\x89PNG\r\n\x1a\n" + os.urandom(size - 8)


class Recorder(ChatListener):
    """Queues everything the server pushes, per kind."""

    def __init__(self) -> None:
        self.messages: DeferredQueue[tuple[m.Deliver, bytes | None]] = DeferredQueue()
        self.receipts: DeferredQueue[m.Receipt] = DeferredQueue()
        self.typing: DeferredQueue[m.TypingEvent] = DeferredQueue()
        self.presence: DeferredQueue[m.PresenceEvent] = DeferredQueue()
        self.errors: DeferredQueue[tuple[int, str]] = DeferredQueue()

    def message_received(self, deliver: m.Deliver, image: bytes | None) -> None:
        self.messages.put((deliver, image))

    def receipt_received(self, receipt: m.Receipt) -> None:
        self.receipts.put(receipt)

    def typing_received(self, event: m.TypingEvent) -> None:
        self.typing.put(event)

    def presence_changed(self, event: m.PresenceEvent) -> None:
        self.presence.put(event)

    def error_received(self, code: int, reason: str) -> None:
        self.errors.put((code, reason))

    async def next_chat(self) -> m.Deliver:
        """The next delivered message that is not a group event."""
        while True:
            deliver, _ = await self.messages.get()
            if deliver.content_type != m.ContentType.EVENT:
                return deliver

    async def next_event(self) -> m.GroupEvent:
        """The next group event."""
        while True:
            deliver, _ = await self.messages.get()
            if deliver.content_type == m.ContentType.EVENT:
                return m.decode_record(m.GroupEvent, deliver.body)

    def pending(self) -> int:
        return len(self.messages.pending)


class User:
    """A signed-in client and what it has received."""

    def __init__(self, name: str, client: ChatClient, recorder: Recorder) -> None:
        self.name = name
        self.client = client
        self.rec = recorder


async def login(lb: Loopback, name: str, *, register: bool = False, sync: bool = True,
                device_id: bytes | None = None) -> User:
    recorder = Recorder()
    client = await connect(
        lb.reactor, f"tcp:127.0.0.1:{lb.port}", server_fingerprint=lb.server.fingerprint,
        listener=recorder, device_id=device_id or os.urandom(16),
    )
    if register:
        await client.register(name, PASSWORD)
    await client.signin(name, PASSWORD)
    if sync:
        await client.sync()
    return User(name, client, recorder)


async def users(lb: Loopback, *names: str) -> list[User]:
    return [await login(lb, name, register=True) for name in names]


async def own_copy(user: User) -> m.Deliver:
    """A sender's own device gets a copy of what it sent (multi-device log)."""
    return await user.rec.next_chat()


@pytest_twisted.ensureDeferred
async def test_two_users_chat_both_ways(loopback: Loopback) -> None:
    """Alice and Bob exchange texts; each Deliver carries the authenticated sender, the
    recipient, a server timestamp and increasing conversation sequence numbers."""
    alice, bob = await users(loopback, "alice", "bob")
    ack = await alice.client.create_chat("bob")
    assert (ack.peer, ack.online) == ("bob", True)
    sent = await alice.client.send_text("bob", "hello bob")
    got = await bob.rec.next_chat()
    assert (got.sender, got.to, got.group_id, got.body) == ("alice", "bob", 0, b"hello bob")
    assert got.conv_seq == sent.conv_seq == 1
    assert got.server_time_ms == sent.server_time_ms
    reply = await bob.client.send_text("alice", "hi alice")
    got = await alice.rec.next_chat()  # alice's own copy first, then bob's reply
    assert got.sender == "alice"
    got = await alice.rec.next_chat()
    assert (got.sender, got.to, got.body, got.conv_seq) == ("bob", "alice", b"hi alice", 2)
    assert reply.conv_seq == 2


@pytest_twisted.ensureDeferred
async def test_create_unknown_user_is_a_clear_error(loopback: Loopback) -> None:
    """Create with a name that does not exist answers UNKNOWN_USER naming it."""
    (alice,) = await users(loopback, "alice")
    with pytest.raises(ServerError) as info:
        await alice.client.create_chat("nobody")
    assert info.value.code == ErrorCode.UNKNOWN_USER
    assert info.value.names == ("nobody",)
    with pytest.raises(ServerError) as info:
        await alice.client.send_text("nobody", "hi")
    assert info.value.code == ErrorCode.UNKNOWN_USER


@pytest_twisted.ensureDeferred
async def test_offline_messages_arrive_in_order_once_at_next_login(loopback: Loopback) -> None:
    """Messages to a user who is offline are stored and delivered at the next login, in
    order, exactly once; a later login of the same device gets none of them again."""
    alice, bob = await users(loopback, "alice", "bob")
    device = os.urandom(16)
    await bob.client.quit()
    ack = await alice.client.create_chat("bob")
    assert ack.online is False and ack.last_seen_ms is not None
    for i in range(5):
        await alice.client.send_text("bob", f"offline {i}")
    bob = await login(loopback, "bob", device_id=device)
    bodies = [(await bob.rec.next_chat()).body for _ in range(5)]
    assert bodies == [f"offline {i}".encode() for i in range(5)]
    await bob.client.quit()
    bob = await login(loopback, "bob", device_id=device)
    await alice.client.send_text("bob", "after")
    assert (await bob.rec.next_chat()).body == b"after"
    assert bob.rec.pending() == 0


@pytest_twisted.ensureDeferred
async def test_forged_sender_is_ignored(loopback: Loopback) -> None:
    """The sender field a client puts in Chat is ignored: the server uses the signed-in name."""
    alice, bob, _ = await users(loopback, "alice", "bob", "carol")
    protocol = alice.client._session_protocol()
    protocol.send(m.Chat(999, os.urandom(16), 0, "bob", "carol", m.ContentType.TEXT,
                         b"i am carol", None))
    got = await bob.rec.next_chat()
    assert got.sender == "alice" and got.body == b"i am carol"


@pytest_twisted.ensureDeferred
async def test_group_with_one_member_offline(loopback: Loopback) -> None:
    """A three-member group: the online members get the message at once, the offline one at
    its next login; ACK create group names who was offline."""
    alice, bob, carol = await users(loopback, "alice", "bob", "carol")
    await carol.client.quit()
    created = await alice.client.create_group(["bob", "carol"], title="trio")
    assert created.offline == ("carol",)
    gid = created.group_id
    event = await bob.rec.next_event()
    assert (event.action, event.actor, set(event.names), event.title) == (
        m.GroupAction.CREATED, "alice", {"bob", "carol"}, "trio")
    await alice.client.send_text(gid, "hi all")
    got = await bob.rec.next_chat()
    assert (got.group_id, got.sender, got.to, got.body) == (gid, "alice", None, b"hi all")
    carol = await login(loopback, "carol")
    got = await carol.rec.next_chat()
    assert (got.group_id, got.body) == (gid, b"hi all")


@pytest_twisted.ensureDeferred
async def test_non_members_cannot_send_or_read(loopback: Loopback) -> None:
    """A user outside a group gets NOT_A_MEMBER for sending, history and members; an unknown
    group id is UNKNOWN_GROUP."""
    alice, _, mallory = await users(loopback, "alice", "bob", "mallory")
    gid = (await alice.client.create_group(["bob"])).group_id
    for attempt in (mallory.client.send_text(gid, "let me in"),
                    mallory.client.history(gid),
                    mallory.client.group_members(gid)):
        with pytest.raises(ServerError) as info:
            await attempt
        assert info.value.code == ErrorCode.NOT_A_MEMBER
    with pytest.raises(ServerError) as info:
        await alice.client.send_text(gid + 1000, "anyone?")
    assert info.value.code == ErrorCode.UNKNOWN_GROUP


@pytest_twisted.ensureDeferred
async def test_group_add_remove_leave_take_effect_for_the_next_message(
        loopback: Loopback) -> None:
    """Membership changes are events in the group and apply to the very next message: an added
    member receives it, a removed or departed one does not, and only admins may remove."""
    alice, bob, carol, dave = await users(loopback, "alice", "bob", "carol", "dave")
    gid = (await alice.client.create_group(["bob", "carol"])).group_id
    await alice.client.group_add(gid, ["dave"])
    assert (await dave.rec.next_event()).action == m.GroupAction.ADDED
    with pytest.raises(ServerError) as info:
        await bob.client.group_remove(gid, ["carol"])
    assert info.value.code == ErrorCode.NOT_ALLOWED
    await alice.client.group_remove(gid, ["carol"])
    await bob.client.group_leave(gid)
    await alice.client.send_text(gid, "who is here?")
    assert (await dave.rec.next_chat()).body == b"who is here?"
    # carol and bob got the events (their own removal / departure) but not the message
    carol_events = [await carol.rec.next_event() for _ in range(3)]
    assert [e.action for e in carol_events] == [
        m.GroupAction.CREATED, m.GroupAction.ADDED, m.GroupAction.REMOVED]
    assert carol.rec.pending() == 0
    with pytest.raises(ServerError) as info:
        await carol.client.send_text(gid, "still here?")
    assert info.value.code == ErrorCode.NOT_A_MEMBER
    members = await alice.client.group_members(gid)
    assert sorted(x.name for x in members) == ["alice", "dave"]
    await alice.client.group_rename(gid, "two of us")
    groups = await dave.client.list_groups()
    assert [(g.group_id, g.title, g.member_count) for g in groups] == [(gid, "two of us", 2)]


@pytest_twisted.ensureDeferred
async def test_quit_then_messages_then_login(loopback: Loopback) -> None:
    """After quit the user is offline (presence says so, with last seen); messages sent in the
    meantime arrive at the next login."""
    alice, bob = await users(loopback, "alice", "bob")
    await alice.client.create_chat("bob")
    await bob.client.quit()
    event = await alice.rec.presence.get()
    assert (event.name, event.online) == ("bob", False) and event.last_seen_ms
    entries = {e.name: e for e in await alice.client.presence()}
    assert entries["bob"].online is False and entries["bob"].last_seen_ms == event.last_seen_ms
    await alice.client.send_text("bob", "while you were out")
    bob = await login(loopback, "bob")
    assert (await bob.rec.next_chat()).body == b"while you were out"
    event = await alice.rec.presence.get()
    assert (event.name, event.online) == ("bob", True)


@pytest_twisted.ensureDeferred
async def test_receipts_and_typing_are_relayed_not_stored(loopback: Loopback) -> None:
    """The recipient's cumulative ack becomes a DELIVERED receipt for the sender; mark_read a
    READ receipt; typing reaches the peer. None of them appears in the history."""
    alice, bob = await users(loopback, "alice", "bob")
    sent = await alice.client.send_text("bob", "ping")
    await bob.rec.next_chat()
    receipt = await alice.rec.receipts.get()
    assert (receipt.kind, receipt.by, receipt.group_id, receipt.conv_seq) == (
        m.ReceiptKind.DELIVERED, "bob", 0, sent.conv_seq)
    await bob.client.mark_read("alice", sent.conv_seq)
    receipt = await alice.rec.receipts.get()
    assert (receipt.kind, receipt.by, receipt.conv_seq) == (m.ReceiptKind.READ, "bob", 1)
    await bob.client.typing("alice", True)
    event = await alice.rec.typing.get()
    assert (event.sender, event.active, event.group_id) == ("bob", True, 0)
    page = await alice.client.history("bob")
    assert [e.body for e in page.entries] == [b"ping"]


@pytest_twisted.ensureDeferred
async def test_ten_mib_image_round_trip(loopback: Loopback) -> None:
    """A 10 MiB image (the default maximum) arrives byte-identical, in chunks, with its
    SHA-256 and detected type; the history lists it without the body."""
    alice, bob = await users(loopback, "alice", "bob")
    image = png(10 * 1024 * 1024)
    sent = await alice.client.send_image("bob", image)
    while True:
        deliver, data = await bob.rec.messages.get()
        if deliver.content_type == m.ContentType.IMAGE:
            break
    assert data == image
    assert deliver.image is not None
    assert deliver.image.sha256 == hashlib.sha256(image).digest()
    assert deliver.image.mime == "image/png" and deliver.conv_seq == sent.conv_seq
    page = await bob.client.history("alice")
    assert page.entries[0].body == b"" and page.entries[0].image is not None
    assert page.entries[0].image.total_size == len(image)


@pytest_twisted.ensureDeferred
async def test_oversize_and_non_images_get_clear_errors(loopback: Loopback) -> None:
    """An 11 MiB image is refused at its first chunk with IMAGE_TOO_LARGE and a non-image with
    BAD_IMAGE, each as an error frame for that request; the connection stays usable."""
    alice, bob = await users(loopback, "alice", "bob")
    with pytest.raises(ServerError) as info:
        await alice.client.send_image("bob", b"%PDF-1.4 not an image " * 100)
    assert info.value.code == ErrorCode.BAD_IMAGE
    # The client library refuses an 11 MiB image itself, so speak the wire directly.
    protocol = alice.client._session_protocol()
    big = png(11 * 1024 * 1024)
    protocol.send(m.Chat(7001, os.urandom(16), 0, "bob", None, m.ContentType.IMAGE,
                         big[:1024], m.ImageInfo(len(big), hashlib.sha256(big).digest(), None)))
    code, reason = await alice.rec.errors.get()
    assert code == ErrorCode.IMAGE_TOO_LARGE and "bytes" in reason
    text = await alice.client.send_text("bob", "still connected")
    assert (await bob.rec.next_chat()).body == b"still connected"
    assert text.conv_seq == 1  # nothing of the refused uploads was stored


@pytest_twisted.ensureDeferred
async def test_an_image_that_does_not_match_its_sha256_is_refused(loopback: Loopback) -> None:
    """The store checks an image against its announced SHA-256 (off the reactor): a mismatch
    is Error(req, BAD_IMAGE) naming the SHA-256, nothing is stored, and the transfer's slot
    and req are free again."""
    alice, bob = await users(loopback, "alice", "bob")
    protocol = alice.client._session_protocol()
    image = png(3000)
    for _ in range(2):  # the same req again: the first transfer's slot was freed
        protocol.send(m.Chat(7002, os.urandom(16), 0, "bob", None, m.ContentType.IMAGE, image,
                             m.ImageInfo(len(image), hashlib.sha256(b"other").digest(), None)))
        code, reason = await alice.rec.errors.get()
        assert code == ErrorCode.BAD_IMAGE and "SHA-256" in reason
    text = await alice.client.send_text("bob", "still connected")
    assert (await bob.rec.next_chat()).body == b"still connected"
    assert text.conv_seq == 1


@pytest_twisted.ensureDeferred
async def test_history_pages_at_the_edges(loopback: Loopback) -> None:
    """History pages go newest first, before a sequence number, and has_more is exact at
    page boundaries."""
    alice, _ = await users(loopback, "alice", "bob")
    for i in range(1, 8):
        await alice.client.send_text("bob", f"m{i}")
    page = await alice.client.history("bob", limit=3)
    assert [e.conv_seq for e in page.entries] == [7, 6, 5] and page.has_more
    page = await alice.client.history("bob", before_seq=5, limit=3)
    assert [e.conv_seq for e in page.entries] == [4, 3, 2] and page.has_more
    page = await alice.client.history("bob", before_seq=2, limit=3)
    assert [e.conv_seq for e in page.entries] == [1] and not page.has_more
    page = await alice.client.history("bob", before_seq=4, limit=3)
    assert [e.conv_seq for e in page.entries] == [3, 2, 1] and not page.has_more


@pytest_twisted.ensureDeferred
async def test_large_image_does_not_delay_text_to_another_user(loopback: Loopback) -> None:
    """While a 10 MiB image travels from alice to bob, a text from carol to dave arrives
    within a bounded number of alice's frames (the server interleaves per message)."""
    alice, bob, carol, dave = await users(loopback, "alice", "bob", "carol", "dave")
    image = png(10 * 1024 * 1024)
    upload = alice.client.send_image("bob", image)
    await carol.client.send_text("dave", "quick")
    got = await dave.rec.next_chat()
    assert got.body == b"quick"
    assert not upload.called, "the text had to wait for the whole image"
    await upload


@pytest_twisted.ensureDeferred
async def test_a_refusal_naming_many_unknown_users_is_still_a_valid_error(
        loopback: Loopback) -> None:
    """CreateGroup with 256 unknown 32-character names is refused with UNKNOWN_USER listing
    them; the long reason is cut to fit the wire, and the connection stays open."""
    (alice,) = await users(loopback, "alice")
    names = [f"{i:03d}" + "x" * 29 for i in range(256)]
    with pytest.raises(ServerError) as info:
        await alice.client.create_group(names)
    assert info.value.code == ErrorCode.UNKNOWN_USER
    assert len(info.value.names) == 256 and len(info.value.reason.encode()) <= 1024
    assert (await alice.client.presence()) == ()


@pytest_twisted.ensureDeferred
async def test_roles_owner_promotes_admins_and_ownership_passes_on(loopback: Loopback) -> None:
    """Only the owner promotes or demotes (a PROMOTED event reaches the members); an admin may
    add and remove members but not the owner or another admin; when the owner leaves, the
    longest-standing admin becomes the owner."""
    alice, bob, carol, _ = await users(loopback, "alice", "bob", "carol", "dave")
    gid = (await alice.client.create_group(["bob", "carol", "dave"])).group_id

    def set_role(user: User, names: list[str], admin: bool) -> Any:
        return user.client.group_set_role(gid, names, admin)

    with pytest.raises(ServerError) as info:
        await set_role(bob, ["bob"], True)
    assert info.value.code == ErrorCode.NOT_ALLOWED
    await set_role(alice, ["bob", "carol"], True)
    await carol.rec.next_event()  # CREATED
    event = await carol.rec.next_event()
    assert (event.action, event.actor, set(event.names)) == (
        m.GroupAction.PROMOTED, "alice", {"bob", "carol"})
    await bob.client.group_remove(gid, ["dave"])
    for target in ("alice", "carol"):
        with pytest.raises(ServerError) as info:
            await bob.client.group_remove(gid, [target])
        assert info.value.code == ErrorCode.NOT_ALLOWED
    await set_role(alice, ["carol"], False)
    await alice.client.group_leave(gid)
    roles = {x.name: x.role for x in await carol.client.group_members(gid)}
    assert roles == {"bob": "owner", "carol": "member"}
    # The hand-over reaches the online members live, right after the LEFT event.
    event = await carol.rec.next_event()
    while event.action != m.GroupAction.LEFT:
        event = await carol.rec.next_event()
    assert event.actor == "alice"
    event = await carol.rec.next_event()
    assert (event.action, event.actor, event.names) == (
        m.GroupAction.OWNER_CHANGED, "alice", ("bob",))


@pytest_twisted.ensureDeferred
async def test_sync_cursor_past_the_end_is_clipped(loopback: Loopback) -> None:
    """Sync with a cursor beyond the end of the log answers SyncDone with the log's end, and
    the next live message is delivered (not skipped as already seen)."""
    alice, _ = await users(loopback, "alice", "bob")
    bob = await login(loopback, "bob", sync=False)
    last = await bob.client.sync(cursor=1000)
    assert last == 0
    await alice.client.send_text("bob", "after a bogus cursor")
    assert (await bob.rec.next_chat()).body == b"after a bogus cursor"


@pytest_twisted.ensureDeferred
async def test_a_new_device_replays_the_whole_log(loopback: Loopback) -> None:
    """Sync(nil) on a device never seen before replays its user's log from user_seq 1, even
    after another device of the user acknowledged all of it."""
    alice, bob = await users(loopback, "alice", "bob")
    for text in ("one", "two"):
        await alice.client.send_text("bob", text)
    assert (await bob.rec.next_chat()).body == b"one"
    assert (await bob.rec.next_chat()).body == b"two"
    await bob.client.quit()  # its acknowledgement is stored before the session ends
    tablet = await login(loopback, "bob", sync=False, device_id=os.urandom(16))
    assert await tablet.client.sync() == 2
    first, second = await tablet.rec.next_chat(), await tablet.rec.next_chat()
    assert (first.user_seq, first.body, second.user_seq, second.body) == (1, b"one", 2, b"two")


@pytest_twisted.ensureDeferred
async def test_history_with_no_messages_and_with_an_unknown_user(loopback: Loopback) -> None:
    """History of a direct conversation with an existing user and no messages is an empty
    page (has_more false); with an unknown user it is UNKNOWN_USER."""
    alice, _ = await users(loopback, "alice", "bob")
    page = await alice.client.history("bob")
    assert page.entries == () and page.has_more is False
    with pytest.raises(ServerError) as info:
        await alice.client.history("nobody")
    assert info.value.code == ErrorCode.UNKNOWN_USER
