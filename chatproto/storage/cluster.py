"""The queries of a node in a multi-node deployment (see chatproto.server.redis_router).

Kept apart from the per-domain stores: only the Redis router uses them.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred

from chatproto.storage.database import Database, Transaction

#: Names per query of :func:`log_heads`.
HEADS_PAGE = 500


def log_heads(db: Database, names: Sequence[str]) -> Deferred[dict[str, int]]:
    """The end of each user's log (its last ``user_seq``), in one transaction."""

    def txn_fn(txn: Transaction) -> dict[str, int]:
        heads: dict[str, int] = {}
        for i in range(0, len(names), HEADS_PAGE):
            page = names[i:i + HEADS_PAGE]
            marks = ", ".join("?" * len(page))
            txn.execute(f"SELECT name, next_seq FROM users WHERE name IN ({marks})",  # noqa: S608
                        tuple(page))
            heads.update((str(name), int(seq)) for name, seq in txn.fetchall())
        return heads

    return db.run_interaction("log_heads", txn_fn)


def advance_last_seen(db: Database, name: str, seen_ms: int) -> Deferred[None]:
    """Record last seen unless a later one is stored already (another node may have recorded
    a later sign-out before this node found a dead node's expired session)."""

    def txn_fn(txn: Transaction) -> None:
        txn.execute("UPDATE users SET last_seen_ms = ? WHERE name = ?"
                    " AND (last_seen_ms IS NULL OR last_seen_ms < ?)", (seen_ms, name, seen_ms))

    return db.run_interaction("advance_last_seen", txn_fn)
