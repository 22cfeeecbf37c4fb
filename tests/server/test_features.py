"""The everyday features end to end (issue 16): real server, client library, loopback TCP,
SQLite and PostgreSQL. Edits and retractions, the conversation list, search, account
self-service and blocking."""

from __future__ import annotations

import os
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredQueue

from chatproto.client import ServerError, connect
from chatproto.client.errors import RegisterError, SigninError
from chatproto.client.feature_requests import hidden_by_block
from chatproto.server.feature_settings import DEFAULT_EDIT_WINDOW_MS, DEFAULT_NAME_HOLD_MS
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode
from tests.server.conftest import Loopback, start_loopback
from tests.server.test_chat import PASSWORD, Recorder, User, login, users

NEW_PASSWORD = "a brand new passphrase"


class FeatureRecorder(Recorder):
    """Also records sign-outs."""

    def __init__(self) -> None:
        super().__init__()
        self.signed_out_reasons: DeferredQueue[str] = DeferredQueue()

    def signed_out(self, reason: str) -> None:
        self.signed_out_reasons.put(reason)


async def login_as(lb: Loopback, name: str, password: str = PASSWORD,
                   device_id: bytes | None = None) -> User:
    recorder = FeatureRecorder()
    client = await connect(
        lb.reactor, f"tcp:127.0.0.1:{lb.port}", server_fingerprint=lb.server.fingerprint,
        listener=recorder, device_id=device_id or os.urandom(16),
    )
    await client.signin(name, password)
    await client.sync()
    return User(name, client, recorder)


async def next_of(user: User, *types: int) -> m.Deliver:
    """The next delivered message of one of the content types."""
    while True:
        deliver, _ = await user.rec.messages.get()
        if deliver.content_type in types:
            return deliver


async def refused(d: Any) -> int:
    with pytest.raises(ServerError) as info:
        await d
    return int(info.value.code)


# --- edits and retractions ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_edits_and_retractions_reach_offline_devices_in_order_and_survive_restart(
        database_uri: str) -> None:
    """An edit and a retraction are log entries after the message they refer to: an offline
    device gets message, edit, retraction in that order at its next sign-in, and after a
    server restart the history still holds all three."""
    lb, stop = await start_loopback(database_uri)
    try:
        alice, bob = await users(lb, "alice", "bob")
        device = os.urandom(16)
        await bob.client.quit()
        sent = await alice.client.send_text("bob", "helo")
        kept = await alice.client.send_text("bob", "second")
        edited = await alice.client.edit("bob", sent.conv_seq, "hello")
        retracted = await alice.client.retract("bob", kept.conv_seq)
        assert (edited.conv_seq, retracted.conv_seq) == (3, 4)
    finally:
        await stop()
    lb, stop = await start_loopback(database_uri)
    try:
        bob = await login(lb, "bob", device_id=device)
        got = [await next_of(bob, m.ContentType.TEXT, f.EDIT, f.RETRACT) for _ in range(4)]
        assert [d.content_type for d in got] == [1, 1, f.EDIT, f.RETRACT]
        edit = m.decode_record(f.EditBody, got[2].body)
        assert (edit.target_seq, edit.text) == (1, b"hello")
        assert m.decode_record(f.RetractBody, got[3].body).target_seq == 2
        page = await bob.client.history("alice")
        assert [e.content_type for e in page.entries] == [f.RETRACT, f.EDIT, 1, 1]
    finally:
        await stop()


@pytest_twisted.ensureDeferred
async def test_edit_window_and_who_may_change_what(loopback: Loopback) -> None:
    """Only the sender edits, and only within the window (default 15 minutes); the sender
    retracts at any time; a retracted message cannot be edited or retracted again; a group's
    owner and admins retract any message in it, plain members only their own."""
    alice, bob, carol = await users(loopback, "alice", "bob", "carol")
    sent = await alice.client.send_text("bob", "typo")
    assert await refused(bob.client.edit("alice", sent.conv_seq, "not mine")) == \
        ErrorCode.UNKNOWN_MESSAGE
    assert await refused(alice.client.edit("bob", 99, "nothing there")) == \
        ErrorCode.UNKNOWN_MESSAGE
    loopback.clock.advance(DEFAULT_EDIT_WINDOW_MS / 1000 + 1)
    assert await refused(alice.client.edit("bob", sent.conv_seq, "too late")) == \
        ErrorCode.NOT_ALLOWED
    await alice.client.retract("bob", sent.conv_seq)
    assert await refused(alice.client.retract("bob", sent.conv_seq)) == \
        ErrorCode.UNKNOWN_MESSAGE
    assert await refused(alice.client.edit("bob", 1, "again")) == ErrorCode.UNKNOWN_MESSAGE

    gid = (await alice.client.create_group(["bob", "carol"], "g")).group_id
    by_bob = await bob.client.send_text(gid, "bob's")
    by_carol = await carol.client.send_text(gid, "carol's")
    assert await refused(carol.client.retract(gid, by_bob.conv_seq)) == \
        ErrorCode.UNKNOWN_MESSAGE
    await carol.client.retract(gid, by_carol.conv_seq)  # her own
    await alice.client.retract(gid, by_bob.conv_seq)  # the owner: anyone's
    assert await refused(alice.client.edit(gid, by_bob.conv_seq, "x")) == \
        ErrorCode.UNKNOWN_MESSAGE


# --- conversation list -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_conversation_list_with_last_message_and_unread_counts(loopback: Loopback) -> None:
    """The list holds direct conversations and groups, the most recent first, each with its
    last message and how many messages from others came after the user's READ."""
    alice, bob, carol = await users(loopback, "alice", "bob", "carol")
    await alice.client.send_text("bob", "one")
    await alice.client.send_text("bob", "two")
    gid = (await carol.client.create_group(["bob"], "club")).group_id
    loopback.clock.advance(1)
    await carol.client.send_text(gid, "group news")
    listed = await bob.client.conversations()
    assert [(c.group_id, c.peer, c.title) for c in listed] == [(gid, None, "club"),
                                                              (0, "alice", "")]
    group, direct = listed
    assert (group.last_sender, group.last_preview, group.unread) == ("carol", "group news", 1)
    assert (direct.last_seq, direct.last_preview, direct.unread) == (2, "two", 2)
    await bob.client.mark_read("alice", 1)
    await bob.client.send_text("alice", "read one")  # bob's own message is never unread
    # READ has no answer: the position is stored a moment later (asked again until then,
    # a bounded number of round trips).
    for _ in range(100):
        listed = await bob.client.conversations()
        direct = next(c for c in listed if c.peer == "alice")
        if direct.unread < 2:
            break
    assert (direct.unread, direct.last_preview, direct.last_sender) == (1, "read one", "bob")
    assert [c.peer for c in await alice.client.conversations()] == ["bob"]


# --- search ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_search_finds_only_what_the_user_may_read(loopback: Loopback) -> None:
    """Search covers the user's conversations only, newest first, in pages; it finds an
    edited message by its new text, not its old one, and no retracted message."""
    alice, bob, carol = await users(loopback, "alice", "bob", "carol")
    for i in range(3):
        await alice.client.send_text("bob", f"pineapple number {i}")
    await carol.client.send_text("bob", "pineapple secret between carol and bob")
    gid = (await alice.client.create_group(["carol"], "g")).group_id
    await alice.client.send_text(gid, "group pineapple")
    wrong = await alice.client.send_text("bob", "meet at the statoin")
    await alice.client.edit("bob", wrong.conv_seq, "meet at the station")
    gone = await alice.client.send_text("bob", "delete this pineapple")
    await alice.client.retract("bob", gone.conv_seq)

    page = await alice.client.search("pineapple", limit=2)
    assert [h.text for h in page.hits] == [b"group pineapple", b"pineapple number 2"]
    assert page.has_more
    page = await alice.client.search("pineapple", before_id=page.hits[-1].hit_id, limit=10)
    assert [h.text for h in page.hits] == [b"pineapple number 1", b"pineapple number 0"]
    assert not page.has_more
    assert {(h.peer, h.sender) for h in page.hits} == {("bob", "alice")}
    assert [h.text for h in (await alice.client.search("station")).hits] == [
        b"meet at the station"]
    assert (await alice.client.search("statoin")).hits == ()
    assert (await alice.client.search("secret")).hits == ()  # carol and bob's conversation
    assert [h.sender for h in (await bob.client.search("secret")).hits] == ["carol"]
    assert [h.group_id for h in (await carol.client.search("group pineapple")).hits] == [gid]
    assert await refused(alice.client.search("   ")) == ErrorCode.INVALID_REQUEST
    # Words that look like query operators are only words.
    assert (await alice.client.search('"pineapple OR NEAR(x')).hits == ()


# --- accounts ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_changed_password_signs_out_the_other_devices(loopback: Loopback) -> None:
    """Changing the password needs the current one; every other session of the account gets
    SIGNED_OUT and is closed; the old password no longer signs in, the new one does."""
    (alice,) = await users(loopback, "alice")
    laptop = await login_as(loopback, "alice")
    assert await refused(alice.client.change_password("wrong password", NEW_PASSWORD)) == \
        ErrorCode.AUTH_FAILED
    assert await refused(alice.client.change_password(PASSWORD, "short")) == \
        ErrorCode.INVALID_PASSWORD
    await alice.client.change_password(PASSWORD, NEW_PASSWORD)
    assert "password" in await laptop.rec.signed_out_reasons.get()
    assert [d.current for d in await alice.client.devices()] == [True]
    with pytest.raises(SigninError):
        await login_as(loopback, "alice")
    again = await login_as(loopback, "alice", NEW_PASSWORD)
    assert again.client.state == "signed_in"


@pytest_twisted.ensureDeferred
async def test_devices_listed_and_one_signed_out(loopback: Loopback) -> None:
    """DEVICE_LIST shows the account's devices (which one asked, which are online);
    SIGN_OUT_DEVICE closes that device's sessions and forgets its log position."""
    phone_id, laptop_id = b"p" * 16, b"l" * 16
    (alice,) = await users(loopback, "alice")
    await alice.client.quit()
    phone = await login_as(loopback, "alice", device_id=phone_id)
    laptop = await login_as(loopback, "alice", device_id=laptop_id)
    listed = {d.device_id: (d.online, d.current) for d in await phone.client.devices()}
    assert listed[phone_id] == (True, True) and listed[laptop_id] == (True, False)
    await phone.client.sign_out_device(laptop_id)
    assert "another device" in await laptop.rec.signed_out_reasons.get()
    assert await refused(phone.client.sign_out_device(phone_id)) == ErrorCode.INVALID_REQUEST


@pytest_twisted.ensureDeferred
async def test_deleted_account_cannot_sign_in_and_its_name_is_held(loopback: Loopback) -> None:
    """Deleting the account needs the password; then it cannot sign in, its name cannot be
    registered during the hold period, its groups saw it leave, and what it sent stays with
    the recipients. After the hold, a new account with the name starts afresh."""
    alice, bob = await users(loopback, "alice", "bob")
    await alice.client.send_text("bob", "remember me")
    gid = (await alice.client.create_group(["bob"], "g")).group_id
    assert await refused(alice.client.delete_account("wrong password")) == ErrorCode.AUTH_FAILED
    assert (await bob.rec.next_event()).action == m.GroupAction.CREATED
    await alice.client.delete_account(PASSWORD)
    event = await bob.rec.next_event()
    assert (event.action, event.actor) == (m.GroupAction.LEFT, "alice")
    with pytest.raises(SigninError):
        await login_as(loopback, "alice")
    with pytest.raises(RegisterError) as info:
        await login(loopback, "alice", register=True)
    assert info.value.code == ErrorCode.NAME_TAKEN
    page = await bob.client.history("alice")
    assert [e.body for e in page.entries] == [b"remember me"]
    assert await refused(bob.client.send_text("alice", "are you there?")) == \
        ErrorCode.UNKNOWN_USER
    assert [g.group_id for g in await bob.client.list_groups()] == [gid]

    loopback.clock.advance(DEFAULT_NAME_HOLD_MS / 1000 + 1)
    new_alice = await login(loopback, "alice", register=True)
    assert (await new_alice.client.history("bob")).entries == ()
    assert (await bob.client.history("alice")).entries == ()


# --- blocking ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_blocked_user_gets_the_unknown_user_answer(loopback: Loopback) -> None:
    """A blocked user cannot start a direct conversation or send direct messages (the
    answer is UNKNOWN_USER, as for a name that does not exist), does not see the blocker's
    presence, and the blocker's clients hide the blocked user's group messages. UNBLOCK
    undoes it."""
    alice, mallory, bob = await users(loopback, "alice", "mallory", "bob")
    await mallory.client.send_text("alice", "hi")
    await alice.client.block("mallory")
    assert await alice.client.block_list() == ("mallory",)
    for attempt in (mallory.client.create_chat("alice"),
                    mallory.client.send_text("alice", "let me in")):
        with pytest.raises(ServerError) as info:
            await attempt
        assert (info.value.code, info.value.names) == (ErrorCode.UNKNOWN_USER, ("alice",))
    assert "alice" not in {p.name for p in await mallory.client.presence()}
    assert "mallory" not in {p.name for p in await alice.client.presence()}
    await alice.client.send_text("mallory", "the blocker may still write")

    gid = (await bob.client.create_group(["alice", "mallory"], "g")).group_id
    await mallory.client.send_text(gid, "in the group")
    got = await next_of(alice, m.ContentType.TEXT)
    while got.group_id != gid:
        got = await next_of(alice, m.ContentType.TEXT)
    assert hidden_by_block(got, alice.client.blocked)
    assert await refused(alice.client.block("alice")) == ErrorCode.INVALID_REQUEST
    assert await refused(alice.client.block("nobody")) == ErrorCode.UNKNOWN_USER

    await alice.client.unblock("mallory")
    assert await alice.client.block_list() == ()
    assert not hidden_by_block(got, alice.client.blocked)
    await mallory.client.send_text("alice", "thanks")
    assert "alice" in {p.name for p in await mallory.client.presence()}
