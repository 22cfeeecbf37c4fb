"""Conversations and groups: direct chats, group membership and roles, and who shares a
conversation with whom. Group changes follow :mod:`chatproto.storage.group_rules` and are
logged as group events through :func:`chatproto.storage.message_log.append_group_event`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from twisted.internet.defer import Deferred, fail

from chatproto.storage import group_rules
from chatproto.storage.blocks import blocked_by
from chatproto.storage.database import Database, GroupCommitter, Transaction
from chatproto.storage.errors import UnknownGroup, UnknownUsers
from chatproto.storage.group_rules import GroupChange, Role, Standing
from chatproto.storage.lookups import (
    direct_key,
    ensure_direct,
    member_role,
    one,
    require_group_member,
    select_in,
    user_id,
    user_ids,
)
from chatproto.storage.message_log import append_group_event
from chatproto.storage.records import Appended, Contact, GroupSummary, MemberRow
from chatproto.wire.messages import GroupAction, GroupEvent


class ConversationStore:
    """Direct conversations and groups, their members and roles."""

    def __init__(self, db: Database, writes: GroupCommitter) -> None:
        self.db = db
        self.writes = writes

    def create_direct(self, user: str, peer: str, now_ms: int) -> Deferred[int]:
        """Ensure the direct conversation of two users exists; its id. UnknownUsers (also
        when the peer blocks the user: the same answer as for an unknown name)."""

        def txn_fn(txn: Transaction) -> int:
            me = user_id(txn, user)
            if blocked_by(txn, peer, me):
                raise UnknownUsers([peer])
            return ensure_direct(txn, user, me, peer, now_ms)

        return self.db.run_interaction("create_direct", txn_fn)

    def direct_exists(self, user: str, peer: str) -> Deferred[bool]:
        """Whether the two users have a direct conversation (False for unknown names, and
        when the peer blocks the user)."""

        def txn_fn(txn: Transaction) -> bool:
            txn.execute(
                "SELECT 1 FROM conversations WHERE direct_key = ? AND NOT EXISTS (SELECT 1"
                " FROM blocks b JOIN users p ON p.id = b.user_id JOIN users u"
                " ON u.id = b.blocked_id WHERE p.name = ? AND u.name = ?)",
                (direct_key(user, peer), peer, user))
            return txn.fetchone() is not None

        return self.db.run_interaction("direct_exists", txn_fn)

    def create_group(self, creator: str, names: Sequence[str], title: str,
                     now_ms: int) -> Deferred[Appended]:
        """Create a group (creator = owner) and log its CREATED event. UnknownUsers."""

        def txn_fn(txn: Transaction) -> Appended:
            creator_id = user_id(txn, creator)
            ids = user_ids(txn, names)
            txn.execute(
                "INSERT INTO conversations (kind, title, created_ms)"
                " VALUES ('group', ?, ?) RETURNING id",
                (title, now_ms),
            )
            group_id = int(one(txn)[0])
            txn.execute_many(
                "INSERT INTO members (conversation_id, user_id, role, joined_ms)"
                " VALUES (?, ?, ?, ?)",
                [(group_id, creator_id, Role.OWNER.value, now_ms)]
                + [(group_id, uid, Role.MEMBER.value, now_ms) for uid in ids.values()],
            )
            event = GroupEvent(GroupAction.CREATED, creator, tuple(names), title)
            return append_group_event(txn, group_id, creator_id, event, now_ms)

        return self.writes.submit(txn_fn)

    def change_group(self, actor: str, group_id: int, action: int, names: Sequence[str],
                     title: str | None, now_ms: int) -> Deferred[Appended]:
        """Add, remove, leave, rename, promote or demote (``action`` is a GroupAction), as
        :mod:`~chatproto.storage.group_rules` allows, and log the event to the members (and
        to those who were removed or left). UnknownGroup, NotAMember, NotAllowed,
        UnknownUsers.

        The event names only the users the change affected, in request order; a change that
        changes nothing logs nothing (the result has no entry). When the owner leaves, an
        OWNER_CHANGED event naming the new owner follows the LEFT event (``followed_by``).
        Another ``action`` is a caller's bug: ValueError, before any database work.
        """
        if action not in group_rules.REQUESTED_ACTIONS:
            return fail(ValueError(f"not a group change a member asks for: {action}"))

        def txn_fn(txn: Transaction) -> Appended:
            actor_id = user_id(txn, actor)
            current_title = _lock_group(txn, group_id)
            actor_role = member_role(txn, group_id, actor_id)
            group_rules.check_actor(action, group_id, actor_role)
            ids = user_ids(txn, names) if names else {}
            roles = _member_roles(txn, group_id, list(ids.values()))
            change = group_rules.plan_change(action, group_id, actor, actor_role,
                                             [(n, roles.get(ids[n])) for n in names])
            if not change.appends_event:
                return Appended(0, group_id, 0, now_ms, False, None, ())
            ids[actor] = actor_id
            new_title = _apply(txn, group_id, change, ids, title, current_title, now_ms)
            removed = [(ids[n], n) for n in change.remove]
            event = GroupEvent(action, actor, change.event_names, new_title)
            appended = append_group_event(txn, group_id, actor_id, event, now_ms,
                                          also_to=removed)
            if not change.hand_over:
                return appended
            successor = _hand_over(txn, group_id)
            if successor is None:  # the last member left
                return appended
            handed = GroupEvent(GroupAction.OWNER_CHANGED, actor, (successor,), new_title)
            followed = append_group_event(txn, group_id, actor_id, handed, now_ms)
            return replace(appended, followed_by=(followed,))

        return self.writes.submit(txn_fn)

    def user_groups(self, user: str) -> Deferred[list[GroupSummary]]:
        """Every group the user is in, by group id."""

        def txn_fn(txn: Transaction) -> list[GroupSummary]:
            txn.execute(
                "SELECT c.id, c.title, mb.role,"
                " (SELECT COUNT(*) FROM members x WHERE x.conversation_id = c.id)"
                " FROM members mb JOIN conversations c ON c.id = mb.conversation_id"
                " WHERE mb.user_id = (SELECT id FROM users WHERE name = ?)"
                " AND c.kind = 'group' ORDER BY c.id",
                (user,),
            )
            return [GroupSummary(int(g), str(t), str(r), int(n)) for g, t, r, n in
                    txn.fetchall()]

        return self.db.run_interaction("user_groups", txn_fn)

    def group_members(self, user: str, group_id: int) -> Deferred[list[MemberRow]]:
        """A group's members by name; only for members. UnknownGroup, NotAMember."""

        def txn_fn(txn: Transaction) -> list[MemberRow]:
            require_group_member(txn, group_id, user_id(txn, user))
            txn.execute(
                "SELECT u.name, mb.role, u.last_seen_ms FROM members mb"
                " JOIN users u ON u.id = mb.user_id WHERE mb.conversation_id = ?"
                " ORDER BY u.name",
                (group_id,),
            )
            return [MemberRow(str(n), str(r), None if s is None else int(s)) for n, r, s in
                    txn.fetchall()]

        return self.db.run_interaction("group_members", txn_fn)

    def conversation_members(self, user: str, group_id: int) -> Deferred[list[str]]:
        """The names of a group's members, if ``user`` is one of them. NotAMember."""
        return self.group_members(user, group_id).addCallback(
            lambda rows: [row.name for row in rows])

    def contacts(self, user: str) -> Deferred[list[tuple[str, int | None]]]:
        """Everyone who shares a conversation with ``user``, by name: Contact rows (typed as
        the plain tuples the server's callbacks take). Users who block ``user`` or whom
        ``user`` blocks are left out: neither sees the other's presence."""

        def txn_fn(txn: Transaction) -> list[tuple[str, int | None]]:
            txn.execute(
                "SELECT DISTINCT u.name, u.last_seen_ms FROM members me"
                " JOIN members other ON other.conversation_id = me.conversation_id"
                " JOIN users u ON u.id = other.user_id"
                " WHERE me.user_id = (SELECT id FROM users WHERE name = ?) AND u.name <> ?"
                " AND NOT EXISTS (SELECT 1 FROM blocks b WHERE (b.user_id = u.id AND"
                " b.blocked_id = me.user_id) OR (b.user_id = me.user_id AND b.blocked_id = u.id))"
                " ORDER BY u.name",
                (user, user),
            )
            return [Contact(str(n), None if s is None else int(s)) for n, s in txn.fetchall()]

        return self.db.run_interaction("contacts", txn_fn)


def _lock_group(txn: Transaction, group_id: int) -> str:
    """Lock the group's row (membership changes and sends serialize on it); its title."""
    txn.execute(
        "UPDATE conversations SET next_seq = next_seq WHERE id = ? AND kind = 'group'"
        " RETURNING title",
        (group_id,),
    )
    row = txn.fetchone()
    if row is None:
        raise UnknownGroup(group_id)
    return str(row[0])


def _member_roles(txn: Transaction, group_id: int, ids: list[int]) -> dict[int, Role]:
    """The roles of those of ``ids`` who are members of the group."""
    rows = select_in(txn, "SELECT user_id, role FROM members WHERE conversation_id = ?"
                     " AND user_id IN", ids, leading=(group_id,))
    return {int(uid): Role(role) for uid, role in rows}


def _apply(txn: Transaction, group_id: int, change: GroupChange, ids: dict[str, int],
           title: str | None, current_title: str, now_ms: int) -> str:
    """Write a planned change; the group's title after it."""
    txn.execute_many(
        "INSERT INTO members (conversation_id, user_id, role, joined_ms) VALUES (?, ?, ?, ?)",
        [(group_id, ids[n], Role.MEMBER.value, now_ms) for n in change.add])
    txn.execute_many("DELETE FROM members WHERE conversation_id = ? AND user_id = ?",
                     [(group_id, ids[n]) for n in change.remove])
    if change.new_role is not None and change.set_role:
        txn.execute_many(
            "UPDATE members SET role = ? WHERE conversation_id = ? AND user_id = ?",
            [(change.new_role.value, group_id, ids[n]) for n in change.set_role])
    if change.rename:
        assert title is not None
        txn.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, group_id))
        return title
    return current_title


def _hand_over(txn: Transaction, group_id: int) -> str | None:
    """The owner has left: make :func:`group_rules.choose_successor`'s pick the owner; their
    name (None when nobody is left)."""
    txn.execute(
        "SELECT mb.user_id, mb.role, mb.joined_ms, u.name FROM members mb"
        " JOIN users u ON u.id = mb.user_id WHERE mb.conversation_id = ?",
        (group_id,),
    )
    rows = txn.fetchall()
    names = {int(uid): str(name) for uid, _, _, name in rows}
    successor = group_rules.choose_successor(
        Standing(int(uid), Role(role), int(joined)) for uid, role, joined, _ in rows)
    if successor is None:
        return None
    txn.execute("UPDATE members SET role = ? WHERE conversation_id = ? AND user_id = ?",
                (Role.OWNER.value, group_id, successor.user_id))
    return names[successor.user_id]

