"""The chat store: every query the server makes, each one interaction.

Names are case-sensitive ASCII strings already validated by the caller.
Password hashes are stored and returned opaquely and never logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from chatproto.storage.database import Database, GroupCommitter, Transaction
from chatproto.wire.messages import GroupEvent, encode_record

#: Max names per ``IN (...)`` list (SQLite's old variable limit is 999).
_IN_CHUNK = 500


class StoreError(Exception):
    """Base class for store errors callers are expected to handle."""


class NameTaken(StoreError):
    """A user with this name already exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"user name already taken: {name!r}")
        self.name = name


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    created_ms: int
    last_login_ms: int | None
    last_login_ip: str | None
    last_seen_ms: int | None


_USER_COLUMNS = "name, created_ms, last_login_ms, last_login_ip, last_seen_ms"


def _user_from_row(row: tuple[Any, ...]) -> UserRecord:
    name, created_ms, last_login_ms, last_login_ip, last_seen_ms = row
    return UserRecord(
        name=str(name),
        created_ms=int(created_ms),
        last_login_ms=None if last_login_ms is None else int(last_login_ms),
        last_login_ip=None if last_login_ip is None else str(last_login_ip),
        last_seen_ms=None if last_seen_ms is None else int(last_seen_ms),
    )


class ChatStore:
    """High-level storage operations over a started :class:`Database`."""

    def __init__(self, db: Database, *, max_batch: int = 256) -> None:
        self.db = db
        #: Chat writes (messages, acks, membership changes) share transactions under load.
        self.writes = GroupCommitter(db, max_batch=max_batch, isolated=(StoreError,))

    # -- users ---------------------------------------------------------------

    def create_user(self, name: str, password_hash: str, now_ms: int) -> Deferred[None]:
        """Create a user; fails with :class:`NameTaken` if the name exists."""

        def txn_fn(txn: Transaction) -> None:
            try:
                txn.execute(
                    "INSERT INTO users (name, password_hash, created_ms) VALUES (?, ?, ?)",
                    (name, password_hash, now_ms),
                )
            except Exception as exc:
                if txn.engine.is_unique_violation(exc):
                    raise NameTaken(name) from None
                raise

        return self.db.run_interaction("create_user", txn_fn)

    def get_login(self, name: str) -> Deferred[tuple[str | None, str | None]]:
        """(password hash, last sign-in IP) in one query; (None, None) for an unknown user."""

        def txn_fn(txn: Transaction) -> tuple[str | None, str | None]:
            txn.execute("SELECT password_hash, last_login_ip FROM users WHERE name = ?", (name,))
            row = txn.fetchone()
            return (None, None) if row is None else (str(row[0]), row[1])

        return self.db.run_interaction("get_login", txn_fn)

    def get_password_hash(self, name: str) -> Deferred[str | None]:
        def txn_fn(txn: Transaction) -> str | None:
            txn.execute("SELECT password_hash FROM users WHERE name = ?", (name,))
            row = txn.fetchone()
            return None if row is None else str(row[0])

        return self.db.run_interaction("get_password_hash", txn_fn)

    def set_password_hash(self, name: str, password_hash: str) -> Deferred[bool]:
        """Replace a user's password hash; False if there is no such user."""

        def txn_fn(txn: Transaction) -> bool:
            txn.execute("UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name))
            return txn.rowcount > 0

        return self.db.run_interaction("set_password_hash", txn_fn)

    def delete_user(self, name: str) -> Deferred[bool]:
        """Delete a user (cascading to memberships, deliveries, devices)."""

        def txn_fn(txn: Transaction) -> bool:
            txn.execute("DELETE FROM users WHERE name = ?", (name,))
            return txn.rowcount > 0

        return self.db.run_interaction("delete_user", txn_fn)

    def list_users(self) -> Deferred[list[UserRecord]]:
        """All users, ordered by name."""

        def txn_fn(txn: Transaction) -> list[UserRecord]:
            txn.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY name")  # noqa: S608
            return [_user_from_row(r) for r in txn.fetchall()]

        return self.db.run_interaction("list_users", txn_fn)

    def get_user(self, name: str) -> Deferred[UserRecord | None]:
        def txn_fn(txn: Transaction) -> UserRecord | None:
            txn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?", (name,))  # noqa: S608
            row = txn.fetchone()
            return None if row is None else _user_from_row(row)

        return self.db.run_interaction("get_user", txn_fn)

    def users_exist(self, names: Iterable[str]) -> Deferred[set[str]]:
        """Which of ``names`` are existing users."""
        wanted = sorted(set(names))

        def txn_fn(txn: Transaction) -> set[str]:
            found: set[str] = set()
            for i in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[i : i + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                txn.execute(f"SELECT name FROM users WHERE name IN ({marks})", chunk)  # noqa: S608
                found.update(str(r[0]) for r in txn.fetchall())
            return found

        return self.db.run_interaction("users_exist", txn_fn)

    def record_login(self, name: str, ip: str, now_ms: int) -> Deferred[None]:
        """Record a successful login (also counts as being seen)."""

        def txn_fn(txn: Transaction) -> None:
            txn.execute(
                "UPDATE users SET last_login_ms = ?, last_login_ip = ?, last_seen_ms = ?"
                " WHERE name = ?",
                (now_ms, ip, now_ms, name),
            )

        return self.db.run_interaction("record_login", txn_fn)

    def record_last_seen(self, name: str, now_ms: int) -> Deferred[None]:
        def txn_fn(txn: Transaction) -> None:
            txn.execute("UPDATE users SET last_seen_ms = ? WHERE name = ?", (now_ms, name))

        return self.db.run_interaction("record_last_seen", txn_fn)

    def count_users(self) -> Deferred[int]:
        def txn_fn(txn: Transaction) -> int:
            txn.execute("SELECT COUNT(*) FROM users")
            row = txn.fetchone()
            return 0 if row is None else int(row[0])

        return self.db.run_interaction("count_users", txn_fn)

    # -- conversations -------------------------------------------------------
    #
    # Every message goes to one conversation (a direct chat between two users, or a group) and
    # gets the conversation's next sequence number; every member gets a row in their own
    # ordered log (deliveries) with their next per-user sequence number. Both counters are
    # taken with UPDATE ... RETURNING inside the insert transaction, so commit order is
    # sequence order and readers never see a gap. Rows are locked in a fixed order
    # (conversation, then users by id) so concurrent senders cannot deadlock.

    def create_direct(self, user: str, peer: str, now_ms: int) -> Deferred[int]:
        """Ensure the direct conversation of two users exists; its id. UnknownUsers."""

        def txn_fn(txn: Transaction) -> int:
            user_id = _user_id(txn, user)
            return _ensure_direct(txn, user, user_id, peer, now_ms)

        return self.db.run_interaction("create_direct", txn_fn)

    def append_message(self, draft: Draft) -> Deferred[Appended]:
        """Store a chat message and append it to every member's log (one transaction).

        A message whose (sender, client_msg_id) is already stored is not stored again: the
        original's sequence number comes back with ``duplicate`` set.
        """
        return self.writes.submit(_append_message, draft)

    def create_group(self, creator: str, names: Sequence[str], title: str,
                     now_ms: int) -> Deferred[Appended]:
        """Create a group (creator = owner) and log its CREATED event. UnknownUsers."""

        def txn_fn(txn: Transaction) -> Appended:
            creator_id = _user_id(txn, creator)
            ids = _user_ids(txn, names)
            txn.execute(
                "INSERT INTO conversations (kind, title, creator_id, created_ms)"
                " VALUES ('group', ?, ?, ?) RETURNING id",
                (title, creator_id, now_ms),
            )
            group_id = int(_one(txn)[0])
            txn.execute_many(
                "INSERT INTO members (conversation_id, user_id, role, joined_ms)"
                " VALUES (?, ?, ?, ?)",
                [(group_id, creator_id, "owner", now_ms)]
                + [(group_id, uid, "member", now_ms) for uid in ids.values()],
            )
            event = GroupEvent(GROUP_CREATED, creator, tuple(names), title)
            return _append(txn, group_id, "group", _take_seq(txn, group_id), creator_id, creator,
                           None, 3, encode_record(event), None, None, now_ms, extra=())

        return self.writes.submit(txn_fn)

    def change_group(self, actor: str, group_id: int, action: int, names: Sequence[str],
                     title: str | None, now_ms: int) -> Deferred[Appended]:
        """Add, remove, leave, rename, promote or demote, and log the event to the members
        (and to those who were removed or left). UnknownGroup, NotAMember, NotAllowed,
        UnknownUsers.

        Owners and admins add, remove and rename; only the owner promotes and demotes, and
        admins may not remove the owner or another admin. When the owner leaves, the
        longest-standing admin (else member) becomes the owner."""

        def txn_fn(txn: Transaction) -> Appended:
            actor_id = _user_id(txn, actor)
            current_title = _lock_group(txn, group_id)
            role = _role(txn, group_id, actor_id)
            if role is None:
                raise NotAMember(group_id)
            removed: tuple[tuple[int, str], ...] = ()
            event_names = tuple(names)
            new_title = current_title
            if action == GROUP_ADDED:
                _require_admin(role)
                ids = _user_ids(txn, names)
                for uid in ids.values():
                    if _role(txn, group_id, uid) is None:
                        txn.execute(
                            "INSERT INTO members (conversation_id, user_id, role, joined_ms)"
                            " VALUES (?, ?, 'member', ?)",
                            (group_id, uid, now_ms),
                        )
            elif action in (GROUP_REMOVED, GROUP_LEFT):
                if action == GROUP_REMOVED:
                    _require_admin(role)
                    ids = _user_ids(txn, names)
                    for name, uid in ids.items():
                        target = _role(txn, group_id, uid)
                        if target == "owner" or (target == "admin" and role != "owner"):
                            raise NotAllowed(f"{name} is the group's {target}; an admin may "
                                             "not remove them")
                else:
                    ids = {actor: actor_id}
                    if role == "owner":
                        _hand_over_ownership(txn, group_id, actor_id)
                for name, uid in ids.items():
                    txn.execute(
                        "DELETE FROM members WHERE conversation_id = ? AND user_id = ?",
                        (group_id, uid),
                    )
                    if txn.rowcount:
                        removed += ((uid, name),)
                event_names = tuple(name for _, name in removed)
            elif action == GROUP_RENAMED:
                _require_admin(role)
                assert title is not None
                new_title = title
                txn.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, group_id))
            elif action in (GROUP_PROMOTED, GROUP_DEMOTED):
                if role != "owner":
                    raise NotAllowed("only the group's owner may change roles")
                ids = _user_ids(txn, names)
                for name, uid in ids.items():
                    target = _role(txn, group_id, uid)
                    if target is None or target == "owner":
                        raise NotAllowed(f"{name} is not a member whose role can change")
                    txn.execute(
                        "UPDATE members SET role = ? WHERE conversation_id = ? AND user_id = ?",
                        ("admin" if action == GROUP_PROMOTED else "member", group_id, uid),
                    )
            event = GroupEvent(action, actor, event_names, new_title)
            return _append(txn, group_id, "group", _take_seq(txn, group_id), actor_id, actor,
                           None, 3, encode_record(event), None, None, now_ms, extra=removed)

        return self.writes.submit(txn_fn)

    def prune_archive(self, cutoff_ms: int, chunk: int = 1000) -> Deferred[int]:
        """Delete archived messages older than ``cutoff_ms`` that every recipient's devices
        have acknowledged (a delivery past some device's cursor keeps its message); their
        log rows go with them. Returns how many messages were deleted."""

        def txn_fn(txn: Transaction) -> int:
            txn.execute(
                "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m"
                " WHERE m.created_ms < ? AND NOT EXISTS (SELECT 1 FROM deliveries d"
                " WHERE d.message_id = m.id AND d.user_seq > COALESCE((SELECT MIN(v.acked_seq)"
                " FROM devices v WHERE v.user_id = d.user_id), 0)) LIMIT ?)",
                (cutoff_ms, chunk),
            )
            return max(txn.rowcount, 0)

        async def prune() -> int:
            total = 0
            while True:  # in chunks, so writers are not held up for long
                deleted = await self.db.run_interaction("prune_archive", txn_fn)
                total += deleted
                if deleted < chunk:
                    return total

        return Deferred.fromCoroutine(prune())

    def read_log(self, user: str, after_seq: int, limit: int) -> Deferred[list[LogEntry]]:
        """The user's deliveries after ``after_seq``, in order (image bodies left out)."""

        def txn_fn(txn: Transaction) -> list[LogEntry]:
            txn.execute(
                "SELECT d.user_seq, c.kind, c.id, c.direct_key, m.sender_name, m.conv_seq,"
                " m.created_ms, m.client_msg_id, m.content_type,"
                " CASE WHEN m.content_type = 2 THEN NULL ELSE m.body END, m.mime, m.sha256,"
                " LENGTH(m.body), m.id"
                " FROM deliveries d JOIN messages m ON m.id = d.message_id"
                " JOIN conversations c ON c.id = m.conversation_id"
                " WHERE d.user_id = (SELECT id FROM users WHERE name = ?) AND d.user_seq > ?"
                " ORDER BY d.user_seq LIMIT ?",
                (user, after_seq, limit),
            )
            return [_log_entry(row) for row in txn.fetchall()]

        return self.db.run_interaction("read_log", txn_fn)

    def message_body(self, message_id: int) -> Deferred[bytes]:
        """One message's body (used for images, which log pages leave out)."""

        def txn_fn(txn: Transaction) -> bytes:
            txn.execute("SELECT body FROM messages WHERE id = ?", (message_id,))
            return bytes(_one(txn)[0])

        return self.db.run_interaction("message_body", txn_fn)

    def sync_position(self, user: str, device_id: bytes) -> Deferred[tuple[int, int]]:
        """(the device's acknowledged position, the end of the user's log) in one query."""

        def txn_fn(txn: Transaction) -> tuple[int, int]:
            txn.execute(
                "SELECT u.next_seq, v.acked_seq FROM users u LEFT JOIN devices v"
                " ON v.user_id = u.id AND v.device_id = ? WHERE u.name = ?",
                (device_id, user),
            )
            row = txn.fetchone()
            if row is None:
                return 0, 0
            return (0 if row[1] is None else int(row[1])), int(row[0])

        return self.db.run_interaction("sync_position", txn_fn)

    def acknowledge(self, user: str, device_id: bytes, up_to: int,
                    now_ms: int) -> Deferred[list[DeliveredReceipt]]:
        """Move the device's cursor forward to ``up_to`` (never back) and return, per
        conversation and sender, the highest conv_seq newly delivered (for receipts)."""

        def txn_fn(txn: Transaction) -> list[DeliveredReceipt]:
            user_id = _user_id(txn, user)
            txn.execute(
                "SELECT acked_seq FROM devices WHERE user_id = ? AND device_id = ?",
                (user_id, device_id),
            )
            row = txn.fetchone()
            previous = 0 if row is None else int(row[0])
            if up_to <= previous:
                return []
            txn.execute("SELECT next_seq FROM users WHERE id = ?", (user_id,))
            up_to_valid = min(up_to, int(_one(txn)[0]))
            if row is None:
                txn.execute(
                    "INSERT INTO devices (user_id, device_id, acked_seq, last_seen_ms)"
                    " VALUES (?, ?, ?, ?)",
                    (user_id, device_id, up_to_valid, now_ms),
                )
            else:
                txn.execute(
                    "UPDATE devices SET acked_seq = ?, last_seen_ms = ?"
                    " WHERE user_id = ? AND device_id = ? AND acked_seq < ?",
                    (up_to_valid, now_ms, user_id, device_id, up_to_valid),
                )
            txn.execute(
                "SELECT m.sender_name, c.kind, c.id, MAX(m.conv_seq)"
                " FROM deliveries d JOIN messages m ON m.id = d.message_id"
                " JOIN conversations c ON c.id = m.conversation_id"
                " WHERE d.user_id = ? AND d.user_seq > ? AND d.user_seq <= ?"
                " AND m.sender_name <> ? AND m.content_type <> 3"
                " GROUP BY m.sender_name, c.kind, c.id",
                (user_id, previous, up_to_valid, user),
            )
            return [
                DeliveredReceipt(str(s), 0 if k == "direct" else int(cid), int(seq))
                for s, k, cid, seq in txn.fetchall()
            ]

        return self.writes.submit(txn_fn)

    def history(self, user: str, group_id: int, peer: str | None, before_seq: int,
                limit: int) -> Deferred[tuple[list[HistoryRow], bool]]:
        """A conversation's archive, newest first, before ``before_seq`` (0 = the newest);
        only for members. UnknownGroup, NotAMember, UnknownUsers."""

        def txn_fn(txn: Transaction) -> tuple[list[HistoryRow], bool]:
            user_id = _user_id(txn, user)
            if group_id == 0:
                assert peer is not None
                _user_ids(txn, [peer])
                txn.execute("SELECT id FROM conversations WHERE direct_key = ?",
                            (_direct_key(user, peer),))
                row = txn.fetchone()
                if row is None:
                    return [], False
                conv_id = int(row[0])
            else:
                conv_id = group_id
                _group_exists(txn, conv_id)
                if _role(txn, conv_id, user_id) is None:
                    raise NotAMember(group_id)
            bound = before_seq if before_seq > 0 else 2**62
            txn.execute(
                "SELECT m.conv_seq, m.sender_name, c.direct_key, m.created_ms, m.content_type,"
                " CASE WHEN m.content_type = 2 THEN NULL ELSE m.body END, m.mime, m.sha256,"
                " LENGTH(m.body)"
                " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
                " WHERE m.conversation_id = ? AND m.conv_seq < ?"
                " ORDER BY m.conv_seq DESC LIMIT ?",
                (conv_id, bound, limit + 1),
            )
            rows = txn.fetchall()
            entries = [
                HistoryRow(int(seq), str(sender), _direct_to(key, str(sender)), int(created),
                           int(ctype), b"" if body is None else bytes(body), mime,
                           None if sha is None else bytes(sha), int(size))
                for seq, sender, key, created, ctype, body, mime, sha, size in rows[:limit]
            ]
            return entries, len(rows) > limit

        return self.db.run_interaction("history", txn_fn)

    def user_groups(self, user: str) -> Deferred[list[tuple[int, str, str, int]]]:
        """(group_id, title, role, member_count) for every group the user is in."""

        def txn_fn(txn: Transaction) -> list[tuple[int, str, str, int]]:
            txn.execute(
                "SELECT c.id, c.title, mb.role,"
                " (SELECT COUNT(*) FROM members x WHERE x.conversation_id = c.id)"
                " FROM members mb JOIN conversations c ON c.id = mb.conversation_id"
                " WHERE mb.user_id = (SELECT id FROM users WHERE name = ?)"
                " AND c.kind = 'group' ORDER BY c.id",
                (user,),
            )
            return [(int(g), str(t), str(r), int(n)) for g, t, r, n in txn.fetchall()]

        return self.db.run_interaction("user_groups", txn_fn)

    def group_members(self, user: str, group_id: int) -> Deferred[
            list[tuple[str, str, int | None]]]:
        """(name, role, last_seen_ms) of a group's members; only for members."""

        def txn_fn(txn: Transaction) -> list[tuple[str, str, int | None]]:
            user_id = _user_id(txn, user)
            _group_exists(txn, group_id)
            if _role(txn, group_id, user_id) is None:
                raise NotAMember(group_id)
            txn.execute(
                "SELECT u.name, mb.role, u.last_seen_ms FROM members mb"
                " JOIN users u ON u.id = mb.user_id WHERE mb.conversation_id = ?"
                " ORDER BY u.name",
                (group_id,),
            )
            return [(str(n), str(r), None if s is None else int(s)) for n, r, s in
                    txn.fetchall()]

        return self.db.run_interaction("group_members", txn_fn)

    def conversation_members(self, user: str, group_id: int) -> Deferred[list[str]]:
        """The names of a group's members, if ``user`` is one of them. NotAMember."""

        def txn_fn(txn: Transaction) -> list[str]:
            user_id = _user_id(txn, user)
            _group_exists(txn, group_id)
            if _role(txn, group_id, user_id) is None:
                raise NotAMember(group_id)
            txn.execute(
                "SELECT u.name FROM members mb JOIN users u ON u.id = mb.user_id"
                " WHERE mb.conversation_id = ?",
                (group_id,),
            )
            return [str(r[0]) for r in txn.fetchall()]

        return self.db.run_interaction("conversation_members", txn_fn)

    def contacts(self, user: str) -> Deferred[list[tuple[str, int | None]]]:
        """(name, last_seen_ms) of everyone who shares a conversation with ``user``."""

        def txn_fn(txn: Transaction) -> list[tuple[str, int | None]]:
            txn.execute(
                "SELECT DISTINCT u.name, u.last_seen_ms FROM members me"
                " JOIN members other ON other.conversation_id = me.conversation_id"
                " JOIN users u ON u.id = other.user_id"
                " WHERE me.user_id = (SELECT id FROM users WHERE name = ?) AND u.name <> ?"
                " ORDER BY u.name",
                (user, user),
            )
            return [(str(n), None if s is None else int(s)) for n, s in txn.fetchall()]

        return self.db.run_interaction("contacts", txn_fn)


# --- conversation records and helpers ------------------------------------------------------

GROUP_CREATED, GROUP_ADDED, GROUP_REMOVED, GROUP_LEFT, GROUP_RENAMED = 1, 2, 3, 4, 5
GROUP_PROMOTED, GROUP_DEMOTED = 6, 7


def _hand_over_ownership(txn: Transaction, group_id: int, owner_id: int) -> None:
    """The owner is leaving: the longest-standing admin, else member, becomes the owner."""
    txn.execute(
        "SELECT user_id FROM members WHERE conversation_id = ? AND user_id <> ?"
        " ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_ms, user_id LIMIT 1",
        (group_id, owner_id),
    )
    row = txn.fetchone()
    if row is not None:
        txn.execute("UPDATE members SET role = 'owner' WHERE conversation_id = ? AND user_id = ?",
                    (group_id, int(row[0])))


class UnknownUsers(StoreError):
    def __init__(self, names: Sequence[str]) -> None:
        super().__init__("unknown user: " + ", ".join(names))
        self.names = tuple(names)


class UnknownGroup(StoreError):
    def __init__(self, group_id: int) -> None:
        super().__init__(f"no group {group_id}")


class NotAMember(StoreError):
    def __init__(self, group_id: int) -> None:
        super().__init__(f"you are not a member of group {group_id}")


class NotAllowed(StoreError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Draft:
    """A chat message before it is stored. ``group_id`` 0 means a direct chat with ``to``."""

    sender: str
    group_id: int
    to: str | None
    client_msg_id: bytes | None
    content_type: int
    body: bytes
    mime: str | None
    sha256: bytes | None
    now_ms: int


@dataclass(frozen=True, slots=True)
class Appended:
    """A stored message and the log entries it made, one per recipient."""

    message_id: int
    group_id: int
    conv_seq: int
    created_ms: int
    duplicate: bool
    entry: LogEntry | None
    recipients: tuple[tuple[str, int], ...]  # (name, user_seq)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One delivery in a user's log, without the per-user sequence number."""

    group_id: int
    sender: str
    to: str | None
    conv_seq: int
    created_ms: int
    client_msg_id: bytes | None
    content_type: int
    body: bytes | None  # None for images: fetch with message_body
    mime: str | None
    sha256: bytes | None
    size: int
    message_id: int
    user_seq: int = 0


@dataclass(frozen=True, slots=True)
class HistoryRow:
    conv_seq: int
    sender: str
    to: str | None
    created_ms: int
    content_type: int
    body: bytes
    mime: str | None
    sha256: bytes | None
    size: int


@dataclass(frozen=True, slots=True)
class DeliveredReceipt:
    sender: str
    group_id: int
    conv_seq: int


def _one(txn: Transaction) -> tuple[Any, ...]:
    row = txn.fetchone()
    if row is None:
        raise StoreError("expected a row")
    return tuple(row)


def _user_id(txn: Transaction, name: str) -> int:
    txn.execute("SELECT id FROM users WHERE name = ?", (name,))
    row = txn.fetchone()
    if row is None:
        raise UnknownUsers([name])
    return int(row[0])


def _user_ids(txn: Transaction, names: Iterable[str]) -> dict[str, int]:
    """Ids of the named users, in id order; UnknownUsers naming every missing one."""
    wanted = list(dict.fromkeys(names))
    found: dict[str, int] = {}
    for i in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[i : i + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        txn.execute(f"SELECT name, id FROM users WHERE name IN ({marks})", chunk)  # noqa: S608
        found.update((str(n), int(i)) for n, i in txn.fetchall())
    missing = [n for n in wanted if n not in found]
    if missing:
        raise UnknownUsers(missing)
    return dict(sorted(found.items(), key=lambda kv: kv[1]))


def _direct_key(a: str, b: str) -> str:
    return "\n".join(sorted((a, b)))


def _direct_to(direct_key: str | None, sender: str) -> str | None:
    """For a direct chat, the recipient: the member who is not the sender."""
    if direct_key is None:
        return None
    a, b = direct_key.split("\n")
    return b if a == sender else a


def _ensure_direct(txn: Transaction, user: str, user_id: int, peer: str, now_ms: int) -> int:
    key = _direct_key(user, peer)
    txn.execute("SELECT id FROM conversations WHERE direct_key = ?", (key,))
    row = txn.fetchone()
    if row is not None:
        return int(row[0])
    peer_id = _user_ids(txn, [peer])[peer]
    txn.execute(
        "INSERT INTO conversations (kind, creator_id, created_ms, direct_key)"
        " VALUES ('direct', ?, ?, ?) ON CONFLICT (direct_key) DO NOTHING RETURNING id",
        (user_id, now_ms, key),
    )
    row = txn.fetchone()
    if row is None:  # created by a concurrent transaction that committed first
        txn.execute("SELECT id FROM conversations WHERE direct_key = ?", (key,))
        return int(_one(txn)[0])
    conv_id = int(row[0])
    txn.execute_many(
        "INSERT INTO members (conversation_id, user_id, role, joined_ms) VALUES (?, ?, ?, ?)",
        [(conv_id, uid, "member", now_ms) for uid in sorted({user_id, peer_id})],
    )
    return conv_id


def _group_exists(txn: Transaction, group_id: int) -> None:
    txn.execute("SELECT kind FROM conversations WHERE id = ?", (group_id,))
    row = txn.fetchone()
    if row is None or row[0] != "group":
        raise UnknownGroup(group_id)


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


def _role(txn: Transaction, conv_id: int, user_id: int) -> str | None:
    txn.execute("SELECT role FROM members WHERE conversation_id = ? AND user_id = ?",
                (conv_id, user_id))
    row = txn.fetchone()
    return None if row is None else str(row[0])


def _require_admin(role: str) -> None:
    if role not in ("owner", "admin"):
        raise NotAllowed("only the group's owner or admins may do that")


def _append_message(txn: Transaction, draft: Draft) -> Appended:
    """Store one chat message (a batch of one; see :func:`_append_messages`).

    Submitted to the group committer, whose consecutive runs of this function are written
    together through its ``batch`` attribute.
    """
    ok, value = _append_messages(txn, [(draft,)])[0]
    if not ok:
        raise value
    return value


def _select_in(txn: Transaction, sql: str, values: Sequence[Any], suffix: str = "") -> list[
        tuple[Any, ...]]:
    """Run ``sql`` (ending in ``IN``) for ``values`` in chunks; all rows."""
    rows: list[tuple[Any, ...]] = []
    for i in range(0, len(values), _IN_CHUNK):
        chunk = list(values[i : i + _IN_CHUNK])
        marks = ",".join("?" * len(chunk))
        txn.execute(f"{sql} ({marks}){suffix}", chunk)  # noqa: S608 - placeholders only
        rows.extend(txn.fetchall())
    return rows


def _append_messages(txn: Transaction, batch: list[tuple[Draft]]) -> list[tuple[bool, Any]]:
    """Append many messages with a fixed number of statements per batch.

    The counters of every conversation and user involved are read once (locked on
    PostgreSQL), advanced in Python in submission order, and written back once; messages go
    in with multi-row INSERTs and deliveries with one executemany. Every refusal (unknown
    user or group, not a member) is decided before anything is written for that draft.
    """
    drafts = [args[0] for args in batch]
    lock = txn.engine.for_update
    names = sorted({d.sender for d in drafts} | {d.to for d in drafts if d.to is not None})
    user_ids = {str(n): int(i) for n, i in
                _select_in(txn, "SELECT name, id FROM users WHERE name IN", names)}
    pairs = sorted({(user_ids[d.sender], d.client_msg_id) for d in drafts
                    if d.client_msg_id is not None and d.sender in user_ids})
    earlier: dict[tuple[int, bytes], tuple[int, int, int, str, int]] = {}
    for i in range(0, len(pairs), _IN_CHUNK // 2):
        chunk = pairs[i : i + _IN_CHUNK // 2]
        values = ",".join(["(?, ?)"] * len(chunk))
        # A join against VALUES walks the (sender_id, client_msg_id) index on both engines.
        txn.execute(
            f"WITH v (s, k) AS (VALUES {values}) SELECT m.sender_id, m.client_msg_id, m.id,"  # noqa: S608
            " m.conv_seq, m.created_ms, c.kind, c.id FROM v JOIN messages m"
            " ON m.sender_id = v.s AND m.client_msg_id = v.k"
            " JOIN conversations c ON c.id = m.conversation_id",
            [x for pair in chunk for x in pair],
        )
        for sid, cmid, mid, seq, created, kind, cid in txn.fetchall():
            earlier[(int(sid), bytes(cmid))] = (int(mid), int(seq), int(created), str(kind),
                                                int(cid))
    keys = sorted({_direct_key(d.sender, d.to) for d in drafts if d.group_id == 0 and d.to})
    direct = {str(k): int(i) for k, i in _select_in(
        txn, "SELECT direct_key, id FROM conversations WHERE direct_key IN", keys)}
    group_ids = sorted({d.group_id for d in drafts if d.group_id != 0})
    groups = {int(i) for (i,) in _select_in(
        txn, "SELECT id FROM conversations WHERE kind = 'group' AND id IN", group_ids)}
    members: dict[int, set[int]] = {}
    for cid, uid in _select_in(
            txn, "SELECT conversation_id, user_id FROM members WHERE conversation_id IN",
            sorted(groups)):
        members.setdefault(int(cid), set()).add(int(uid))

    results: list[tuple[bool, Any]] = []
    plan: list[tuple[int, Draft, int, int, int, str, list[int]]] = []  # (index, ...)
    seen: dict[tuple[int, bytes], int] = {}  # duplicates within this batch: index in plan
    for draft in drafts:
        sender_id = user_ids.get(draft.sender)
        if sender_id is None:
            results.append((False, UnknownUsers([draft.sender])))
            continue
        key = (sender_id, draft.client_msg_id) if draft.client_msg_id is not None else None
        if key is not None and key in earlier:
            mid, seq, created, kind, cid = earlier[key]
            results.append((True, Appended(mid, 0 if kind == "direct" else cid, seq, created,
                                           True, None, ())))
            continue
        if key is not None and key in seen:
            results.append((True, ("duplicate", seen[key])))
            continue
        if draft.group_id == 0:
            assert draft.to is not None
            peer_id = user_ids.get(draft.to)
            if peer_id is None:
                results.append((False, UnknownUsers([draft.to])))
                continue
            dkey = _direct_key(draft.sender, draft.to)
            if dkey not in direct:  # the first message of this pair
                direct[dkey] = _ensure_direct(txn, draft.sender, sender_id, draft.to,
                                              draft.now_ms)
            conv_id, kind, recipients = direct[dkey], "direct", sorted({sender_id, peer_id})
        else:
            conv_id, kind = draft.group_id, "group"
            if conv_id not in groups:
                results.append((False, UnknownGroup(conv_id)))
                continue
            if sender_id not in members.get(conv_id, ()):
                results.append((False, NotAMember(conv_id)))
                continue
            recipients = sorted(members[conv_id])
        if key is not None:
            seen[key] = len(plan)
        results.append((True, ("planned", len(plan))))
        plan.append((len(results) - 1, draft, sender_id, conv_id, 0, kind, recipients))
    if not plan:
        return [(ok, v) for ok, v in results]

    conv_ids = sorted({p[3] for p in plan})
    conv_seq = {int(i): int(n) for i, n in _select_in(
        txn, "SELECT id, next_seq FROM conversations WHERE id IN", conv_ids, lock)}
    user_list = sorted({uid for p in plan for uid in p[6]})
    user_seq = {int(i): int(n) for i, n in _select_in(
        txn, "SELECT id, next_seq FROM users WHERE id IN", user_list, lock)}
    id_to_name = {v: k for k, v in user_ids.items()}
    missing = [uid for uid in user_list if uid not in id_to_name]
    if missing:
        id_to_name.update({int(i): str(n) for i, n in _select_in(
            txn, "SELECT id, name FROM users WHERE id IN", missing)})

    rows = []
    assigned = []
    for _, draft, sender_id, conv_id, _, _, recipients in plan:
        conv_seq[conv_id] += 1
        seqs = []
        for uid in recipients:
            user_seq[uid] += 1
            seqs.append((uid, user_seq[uid]))
        assigned.append((conv_seq[conv_id], seqs))
        rows.append((conv_id, conv_seq[conv_id], sender_id, draft.sender, draft.client_msg_id,
                     draft.now_ms, draft.content_type, draft.body, draft.mime, draft.sha256))
    message_ids: dict[tuple[int, int], int] = {}
    for i in range(0, len(rows), 200):
        message_rows = rows[i : i + 200]
        values = ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(message_rows))
        txn.execute(
            "INSERT INTO messages (conversation_id, conv_seq, sender_id, sender_name,"  # noqa: S608
            " client_msg_id, created_ms, content_type, body, mime, sha256) VALUES "
            f"{values} RETURNING id, conversation_id, conv_seq",
            [v for row in message_rows for v in row],
        )
        message_ids.update({(int(c), int(q)): int(mid) for mid, c, q in txn.fetchall()})
    txn.execute_many("UPDATE conversations SET next_seq = ? WHERE id = ?",
                     [(n, i) for i, n in conv_seq.items()])
    txn.execute_many("UPDATE users SET next_seq = ? WHERE id = ?",
                     [(n, i) for i, n in user_seq.items()])
    deliveries: list[tuple[int, int, int]] = []
    appended: list[Appended] = []
    for (_, draft, _, conv_id, _, kind, _), (seq, seqs) in zip(plan, assigned, strict=True):
        mid = message_ids[(conv_id, seq)]
        deliveries.extend((uid, useq, mid) for uid, useq in seqs)
        group_id = 0 if kind == "direct" else conv_id
        entry = LogEntry(group_id, draft.sender, draft.to if kind == "direct" else None, seq,
                         draft.now_ms, draft.client_msg_id, draft.content_type,
                         draft.body if draft.content_type != 2 else None, draft.mime,
                         draft.sha256, len(draft.body), mid)
        appended.append(Appended(mid, group_id, seq, draft.now_ms, False, entry,
                                 tuple((id_to_name[uid], useq) for uid, useq in seqs)))
    txn.execute_many("INSERT INTO deliveries (user_id, user_seq, message_id) VALUES (?, ?, ?)",
                     deliveries)
    out: list[tuple[bool, Any]] = []
    for ok, value in results:
        if ok and isinstance(value, tuple):
            tag, index = value
            original = appended[index]
            if tag == "duplicate":
                value = Appended(original.message_id, original.group_id, original.conv_seq,
                                 original.created_ms, True, None, ())
            else:
                value = original
        out.append((ok, value))
    return out


_append_message.batch = _append_messages  # type: ignore[attr-defined]


def _take_seq(txn: Transaction, conv_id: int) -> int:
    txn.execute(
        "UPDATE conversations SET next_seq = next_seq + 1 WHERE id = ? RETURNING next_seq",
        (conv_id,),
    )
    return int(_one(txn)[0])


def _append(txn: Transaction, conv_id: int, kind: str, conv_seq: int, sender_id: int,
            sender: str, client_msg_id: bytes | None, content_type: int, body: bytes,
            mime: str | None, sha256: bytes | None, now_ms: int, *,
            extra: tuple[tuple[int, str], ...], to: str | None = None) -> Appended:
    """Insert a message that has its conversation sequence number, and log it to every member
    (plus ``extra`` users, e.g. those just removed), each with their next user_seq."""
    txn.execute(
        "INSERT INTO messages (conversation_id, conv_seq, sender_id, sender_name, client_msg_id,"
        " created_ms, content_type, body, mime, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " RETURNING id",
        (conv_id, conv_seq, sender_id, sender, client_msg_id, now_ms, content_type, body, mime,
         sha256),
    )
    message_id = int(_one(txn)[0])
    # Each member's next log position, all in one statement.
    txn.execute(
        "UPDATE users SET next_seq = next_seq + 1 WHERE id IN"
        " (SELECT user_id FROM members WHERE conversation_id = ?) RETURNING id, name, next_seq",
        (conv_id,),
    )
    logged = [(int(uid), str(name), int(seq)) for uid, name, seq in txn.fetchall()]
    members = {uid for uid, _, _ in logged}
    for uid, name in extra:
        if uid not in members:
            txn.execute(
                "UPDATE users SET next_seq = next_seq + 1 WHERE id = ? RETURNING next_seq",
                (uid,),
            )
            logged.append((uid, name, int(_one(txn)[0])))
    logged.sort()
    txn.execute_many(
        "INSERT INTO deliveries (user_id, user_seq, message_id) VALUES (?, ?, ?)",
        [(uid, seq, message_id) for uid, _, seq in logged],
    )
    group_id = 0 if kind == "direct" else conv_id
    entry = LogEntry(group_id, sender, to if kind == "direct" else None, conv_seq, now_ms,
                     client_msg_id, content_type, body if content_type != 2 else None, mime,
                     sha256, len(body), message_id)
    return Appended(message_id, group_id, conv_seq, now_ms, False, entry,
                    tuple((name, seq) for _, name, seq in logged))


def _log_entry(row: Sequence[Any]) -> LogEntry:
    (user_seq, kind, conv_id, direct_key, sender, conv_seq, created, cmid, ctype, body, mime,
     sha, size, mid) = row
    return LogEntry(
        group_id=0 if kind == "direct" else int(conv_id),
        sender=str(sender),
        to=_direct_to(direct_key, str(sender)),
        conv_seq=int(conv_seq),
        created_ms=int(created),
        client_msg_id=None if cmid is None else bytes(cmid),
        content_type=int(ctype),
        body=None if body is None else bytes(body),
        mime=mime,
        sha256=None if sha is None else bytes(sha),
        size=int(size),
        message_id=int(mid),
        user_seq=int(user_seq),
    )
