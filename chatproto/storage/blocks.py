"""Blocking: who blocks whom. The block list is read by the append (a blocked sender's direct
messages are refused as if the blocker did not exist), by direct-conversation creation and by
the presence look-ups (:meth:`ConversationStore.contacts`)."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from chatproto.storage.database import Database, Transaction
from chatproto.storage.lookups import user_id, user_ids


def blocked_by(txn: Transaction, blocker_name: str, blocked_id: int) -> bool:
    """Whether the named user blocks the user ``blocked_id`` (False for an unknown name)."""
    txn.execute(
        "SELECT 1 FROM blocks b JOIN users u ON u.id = b.user_id"
        " WHERE u.name = ? AND b.blocked_id = ?",
        (blocker_name, blocked_id),
    )
    return txn.fetchone() is not None


class BlockStore:
    """Each user's block list."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def block(self, user: str, name: str, now_ms: int) -> Deferred[None]:
        """Block ``name`` (again: no change). UnknownUsers."""

        def txn_fn(txn: Transaction) -> None:
            me = user_id(txn, user)
            other = user_ids(txn, [name])[name]
            txn.execute(
                "INSERT INTO blocks (user_id, blocked_id, created_ms) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (me, other, now_ms),
            )

        return self.db.run_interaction("block", txn_fn)

    def unblock(self, user: str, name: str) -> Deferred[bool]:
        """Unblock ``name``; False if it was not blocked (or does not exist)."""

        def txn_fn(txn: Transaction) -> bool:
            txn.execute(
                "DELETE FROM blocks WHERE user_id = ? AND blocked_id ="
                " (SELECT id FROM users WHERE name = ?)",
                (user_id(txn, user), name),
            )
            return txn.rowcount > 0

        return self.db.run_interaction("unblock", txn_fn)

    def blocked(self, user: str) -> Deferred[list[str]]:
        """The names ``user`` blocks, in name order."""

        def txn_fn(txn: Transaction) -> list[str]:
            txn.execute(
                "SELECT u.name FROM blocks b JOIN users u ON u.id = b.blocked_id"
                " WHERE b.user_id = ? ORDER BY u.name",
                (user_id(txn, user),),
            )
            return [str(row[0]) for row in txn.fetchall()]

        return self.db.run_interaction("blocked", txn_fn)
