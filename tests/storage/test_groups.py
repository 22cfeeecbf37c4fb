"""Group changes through the store, on both databases: what is logged to whom (D7), and
what members added later or removed see of the group's past (D8)."""

from __future__ import annotations

import pytest
import pytest_twisted

from chatproto.storage.store import ChatStore, Draft, NotAMember
from chatproto.wire.messages import ContentType, GroupAction, GroupEvent, decode_record


async def _users(store: ChatStore, *names: str) -> None:
    for name in names:  # created in this order: user ids ascend along it
        await store.create_user(name, "h", 0)


async def _events(store: ChatStore, user: str) -> list[tuple[int, int, str, tuple[str, ...]]]:
    """(user_seq, action, actor, names) of every group event in the user's log."""
    out = []
    for entry in await store.read_log(user, 0, 1000):
        if entry.content_type == ContentType.EVENT:
            assert entry.body is not None
            e = decode_record(GroupEvent, entry.body)
            out.append((entry.user_seq, e.action, e.actor, e.names))
    return out


def _text(sender: str, group_id: int, n: int, now_ms: int) -> Draft:
    return Draft(sender, group_id, None, n.to_bytes(16, "big"), ContentType.TEXT,
                 f"m{n}".encode(), None, None, now_ms)


@pytest_twisted.ensureDeferred
async def test_an_add_names_only_the_new_members_in_request_order(store: ChatStore) -> None:
    """GroupAdd of [carol, bob, dave] where bob is a member: the ADDED event names carol and
    dave, in that order (not by user id), and reaches them and the members."""
    await _users(store, "alice", "bob", "dave", "carol")
    gid = (await store.create_group("alice", ["bob"], "g", 1)).group_id
    added = await store.change_group("alice", gid, GroupAction.ADDED, ["carol", "bob", "dave"],
                                     None, 2)
    assert added.entry is not None and added.conv_seq == 2
    event = decode_record(GroupEvent, added.entry.body or b"")
    assert (event.action, event.actor, event.names) == (GroupAction.ADDED, "alice",
                                                        ("carol", "dave"))
    assert {name for name, _ in added.recipients} == {"alice", "bob", "carol", "dave"}
    assert await _events(store, "carol") == [(1, GroupAction.ADDED, "alice", ("carol", "dave"))]


@pytest.mark.parametrize(("action", "names"), [
    (GroupAction.ADDED, ["bob", "alice"]),  # all already members
    (GroupAction.REMOVED, ["carol"]),  # not a member
])
@pytest_twisted.ensureDeferred
async def test_a_change_that_changes_nothing_logs_nothing(store: ChatStore, action: int,
                                                          names: list[str]) -> None:
    """Adding only members or removing only non-members succeeds and appends no event: no
    log grows, and the group's next message takes the next sequence number."""
    await _users(store, "alice", "bob", "carol")
    gid = (await store.create_group("alice", ["bob"], "g", 1)).group_id
    before = {u: await _events(store, u) for u in ("alice", "bob", "carol")}
    result = await store.change_group("alice", gid, action, names, None, 2)
    assert (result.message_id, result.entry, result.recipients) == (0, None, ())
    assert result.group_id == gid and not result.duplicate
    assert {u: await _events(store, u) for u in ("alice", "bob", "carol")} == before
    sent = await store.append_message(_text("bob", gid, 1, 3))
    assert sent.conv_seq == 2  # right after CREATED: nothing took a number
    assert [e.user_seq for e in await store.read_log("alice", 0, 10)] == [1, 2]


@pytest_twisted.ensureDeferred
async def test_a_removal_names_only_the_removed_in_request_order(store: ChatStore) -> None:
    """GroupRemove of [zed, carol, bob] where carol is not a member: the REMOVED event names
    zed and bob in that order; each removed user gets it, then nothing more."""
    await _users(store, "alice", "bob", "carol", "zed")
    gid = (await store.create_group("alice", ["bob", "zed"], "g", 1)).group_id
    removed = await store.change_group("alice", gid, GroupAction.REMOVED,
                                       ["zed", "carol", "bob"], None, 2)
    assert removed.entry is not None
    assert decode_record(GroupEvent, removed.entry.body or b"").names == ("zed", "bob")
    assert {name for name, _ in removed.recipients} == {"alice", "bob", "zed"}
    await store.append_message(_text("alice", gid, 1, 3))
    for user in ("bob", "zed"):
        log = await store.read_log(user, 0, 10)
        assert [e.content_type for e in log] == [ContentType.EVENT, ContentType.EVENT]
    assert await _events(store, "carol") == []


@pytest_twisted.ensureDeferred
async def test_the_owner_leaving_logs_owner_changed_after_left(store: ChatStore) -> None:
    """When the owner leaves, the earliest-joined admin becomes the owner, and an
    OWNER_CHANGED event (actor: the leaving owner, names: the new owner) is logged right
    after the LEFT event to the remaining members; the leaver gets only LEFT."""
    await _users(store, "alice", "bob", "carol", "dave")
    gid = (await store.create_group("alice", ["bob"], "g", 1)).group_id
    await store.change_group("alice", gid, GroupAction.ADDED, ["carol", "dave"], None, 2)
    await store.change_group("alice", gid, GroupAction.PROMOTED, ["dave", "carol"], None, 3)
    left = await store.change_group("alice", gid, GroupAction.LEFT, [], None, 4)
    assert left.entry is not None and len(left.followed_by) == 1
    handed = left.followed_by[0]
    assert handed.entry is not None and handed.conv_seq == left.conv_seq + 1
    event = decode_record(GroupEvent, handed.entry.body or b"")
    # carol and dave joined together: the lower user id (carol) wins.
    assert (event.action, event.actor, event.names) == (GroupAction.OWNER_CHANGED, "alice",
                                                        ("carol",))
    assert {name for name, _ in handed.recipients} == {"bob", "carol", "dave"}
    leaver = dict(left.recipients)
    assert "alice" in leaver and "alice" not in dict(handed.recipients)
    for name, seq in handed.recipients:
        assert seq == dict(left.recipients)[name] + 1  # consecutive in every log
    assert (await _events(store, "bob"))[-2:] == [
        (leaver["bob"], GroupAction.LEFT, "alice", ("alice",)),
        (leaver["bob"] + 1, GroupAction.OWNER_CHANGED, "alice", ("carol",))]
    assert (await _events(store, "alice"))[-1][1] == GroupAction.LEFT
    roles = {r.name: r.role for r in await store.group_members("bob", gid)}
    assert roles == {"bob": "member", "carol": "owner", "dave": "admin"}


@pytest_twisted.ensureDeferred
async def test_without_admins_the_earliest_member_becomes_the_owner(store: ChatStore) -> None:
    await _users(store, "alice", "bob", "carol")
    gid = (await store.create_group("alice", ["carol"], "g", 1)).group_id
    await store.change_group("alice", gid, GroupAction.ADDED, ["bob"], None, 2)
    left = await store.change_group("alice", gid, GroupAction.LEFT, [], None, 3)
    (handed,) = left.followed_by
    assert handed.entry is not None and handed.entry.body is not None
    event = decode_record(GroupEvent, handed.entry.body)
    assert event.names == ("carol",)  # joined first, although bob's id is lower


@pytest_twisted.ensureDeferred
async def test_the_last_member_leaving_hands_over_to_nobody(store: ChatStore) -> None:
    await _users(store, "alice", "bob")
    gid = (await store.create_group("alice", ["bob"], "g", 1)).group_id
    await store.change_group("bob", gid, GroupAction.LEFT, [], None, 2)
    left = await store.change_group("alice", gid, GroupAction.LEFT, [], None, 3)
    assert left.entry is not None and left.followed_by == ()
    assert [e[1] for e in await _events(store, "alice")] == [
        GroupAction.CREATED, GroupAction.LEFT, GroupAction.LEFT]


@pytest_twisted.ensureDeferred
async def test_history_of_members_added_later_and_removed(store: ChatStore) -> None:
    """D8, what the store does: a member added later reads the group's whole history,
    messages from before they joined included, while their log (what is delivered to them)
    starts with the ADDED event. A removed member keeps the log up to the REMOVED event and
    may no longer read the history; added again, they read all of it again."""
    await _users(store, "alice", "bob", "carol")
    gid = (await store.create_group("alice", ["bob"], "g", 1)).group_id
    await store.append_message(_text("bob", gid, 1, 2))
    await store.change_group("alice", gid, GroupAction.ADDED, ["carol"], None, 3)
    await store.append_message(_text("alice", gid, 2, 4))
    page = await store.history("carol", gid, None, 0, 10)
    assert [(r.conv_seq, r.content_type) for r in page.rows] == [
        (4, ContentType.TEXT), (3, ContentType.EVENT), (2, ContentType.TEXT),
        (1, ContentType.EVENT)] and page.more is False
    assert [(e.conv_seq, e.body if e.content_type == ContentType.TEXT else None)
            for e in await store.read_log("carol", 0, 10)] == [(3, None), (4, b"m2")]

    await store.change_group("alice", gid, GroupAction.REMOVED, ["bob"], None, 5)
    await store.append_message(_text("alice", gid, 3, 6))
    assert [e.conv_seq for e in await store.read_log("bob", 0, 10)] == [1, 2, 3, 4, 5]
    with pytest.raises(NotAMember):
        await store.history("bob", gid, None, 0, 10)

    # Added again: the whole history again (what was said while out too); the log goes on at
    # the new ADDED event, without what was said while out.
    await store.change_group("alice", gid, GroupAction.ADDED, ["bob"], None, 7)
    assert [r.conv_seq for r in (await store.history("bob", gid, None, 0, 10)).rows] == [
        7, 6, 5, 4, 3, 2, 1]
    assert [e.conv_seq for e in await store.read_log("bob", 5, 10)] == [7]


@pytest.mark.parametrize("action", [GroupAction.CREATED, GroupAction.OWNER_CHANGED, 0])
@pytest_twisted.ensureDeferred
async def test_an_action_no_member_asks_for_fails_alone(store: ChatStore, action: int) -> None:
    """CREATED, OWNER_CHANGED or an unknown action is the caller's bug: it fails at once
    with ValueError and never reaches the group committer (whose batch it would fail)."""
    await _users(store, "alice", "bob")
    gid = (await store.create_group("alice", ["bob"], "g", 1)).group_id
    sizes: list[int] = []
    store.writes.on_batch = sizes.append
    with pytest.raises(ValueError, match="not a group change"):
        await store.change_group("alice", gid, action, ["bob"], None, 2)
    assert sizes == [] and await _events(store, "bob") == [(1, GroupAction.CREATED, "alice",
                                                           ("bob",))]


@pytest_twisted.ensureDeferred
async def test_direct_exists_only_for_a_direct_conversation(store: ChatStore) -> None:
    """direct_exists is True once two users have a direct conversation (either order), and
    False for fellow group members without one and for unknown names (D10)."""
    await _users(store, "alice", "bob", "carol")
    await store.create_group("alice", ["bob", "carol"], "g", 1)
    assert not await store.direct_exists("alice", "bob")
    assert not await store.direct_exists("alice", "nobody")
    await store.create_direct("bob", "alice", 2)
    assert await store.direct_exists("alice", "bob")
    assert await store.direct_exists("bob", "alice")
    assert not await store.direct_exists("alice", "carol")
