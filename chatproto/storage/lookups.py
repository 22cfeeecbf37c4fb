"""Look-ups every domain store shares, run inside a transaction: user ids by name, rows for an
``IN`` list in chunks, direct conversations by their key, group membership."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from chatproto.storage.database import Transaction
from chatproto.storage.errors import NotAMember, StoreError, UnknownGroup, UnknownUsers
from chatproto.storage.group_rules import Role

#: Max names per ``IN (...)`` list (SQLite's old variable limit is 999).
IN_CHUNK = 500


def one(txn: Transaction) -> tuple[Any, ...]:
    """The row the last statement must have returned."""
    row = txn.fetchone()
    if row is None:
        raise StoreError("expected a row")
    return tuple(row)


def select_in(txn: Transaction, sql: str, values: Sequence[Any], suffix: str = "", *,
              leading: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` (ending in ``IN``) for ``values`` in chunks; all rows. ``leading`` are
    the parameters of the placeholders before the ``IN``."""
    rows: list[tuple[Any, ...]] = []
    for i in range(0, len(values), IN_CHUNK):
        chunk = list(values[i : i + IN_CHUNK])
        marks = ",".join("?" * len(chunk))
        txn.execute(f"{sql} ({marks}){suffix}", [*leading, *chunk])  # noqa: S608 - placeholders
        rows.extend(txn.fetchall())
    return rows


def user_id(txn: Transaction, name: str) -> int:
    txn.execute("SELECT id FROM users WHERE name = ?", (name,))
    row = txn.fetchone()
    if row is None:
        raise UnknownUsers([name])
    return int(row[0])


def user_ids(txn: Transaction, names: Iterable[str]) -> dict[str, int]:
    """Ids of the named users, in id order; UnknownUsers naming every missing one."""
    wanted = list(dict.fromkeys(names))
    found = {str(n): int(i) for n, i in
             select_in(txn, "SELECT name, id FROM users WHERE name IN", wanted)}
    missing = [n for n in wanted if n not in found]
    if missing:
        raise UnknownUsers(missing)
    return dict(sorted(found.items(), key=lambda kv: kv[1]))


def direct_key(a: str, b: str) -> str:
    """The unique key of the direct conversation of two users."""
    return "\n".join(sorted((a, b)))


def direct_to(key: str | None, sender: str) -> str | None:
    """For a direct chat, the recipient: the member who is not the sender."""
    if key is None:
        return None
    a, b = key.split("\n")
    return b if a == sender else a


def ensure_direct(txn: Transaction, user: str, user_id_: int, peer: str, now_ms: int) -> int:
    """The id of the direct conversation of ``user`` and ``peer``, created if needed."""
    key = direct_key(user, peer)
    txn.execute("SELECT id FROM conversations WHERE direct_key = ?", (key,))
    row = txn.fetchone()
    if row is not None:
        return int(row[0])
    peer_id = user_ids(txn, [peer])[peer]
    txn.execute(
        "INSERT INTO conversations (kind, created_ms, direct_key)"
        " VALUES ('direct', ?, ?) ON CONFLICT (direct_key) DO NOTHING RETURNING id",
        (now_ms, key),
    )
    row = txn.fetchone()
    if row is None:  # created by a concurrent transaction that committed first
        txn.execute("SELECT id FROM conversations WHERE direct_key = ?", (key,))
        return int(one(txn)[0])
    conv_id = int(row[0])
    txn.execute_many(
        "INSERT INTO members (conversation_id, user_id, role, joined_ms) VALUES (?, ?, ?, ?)",
        [(conv_id, uid, Role.MEMBER.value, now_ms) for uid in sorted({user_id_, peer_id})],
    )
    return conv_id


def member_role(txn: Transaction, conv_id: int, user_id_: int) -> Role | None:
    """The user's role in the conversation; None if not a member."""
    txn.execute("SELECT role FROM members WHERE conversation_id = ? AND user_id = ?",
                (conv_id, user_id_))
    row = txn.fetchone()
    return None if row is None else Role(row[0])


def require_group_member(txn: Transaction, group_id: int, user_id_: int) -> None:
    """UnknownGroup unless the group exists, then NotAMember unless the user is in it."""
    txn.execute("SELECT kind FROM conversations WHERE id = ?", (group_id,))
    row = txn.fetchone()
    if row is None or row[0] != "group":
        raise UnknownGroup(group_id)
    if member_role(txn, group_id, user_id_) is None:
        raise NotAMember(group_id)
