"""The message log: appends, each user's ordered log (deliveries), device cursors (acks),
conversation history and archive retention.

Every message goes to one conversation and every member gets a row in their own ordered
log with their next per-user sequence number (see :mod:`chatproto.storage.append_batch`).
Both counters are taken inside the insert transaction, so commit order is sequence order and
readers never see a gap. Rows are locked in a fixed order (conversation, then users by id)
so concurrent senders cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from chatproto.storage import append_batch
from chatproto.storage.database import Database, GroupCommitter, Transaction
from chatproto.storage.lookups import (
    direct_key,
    direct_to,
    one,
    require_group_member,
    user_id,
    user_ids,
)
from chatproto.storage.records import (
    Appended,
    DeliveredReceipt,
    Draft,
    HistoryPage,
    HistoryRow,
    LogEntry,
    SyncPosition,
)
from chatproto.wire.messages import ContentType, GroupEvent, encode_record

#: A message's body, except for images (whose bodies are fetched one at a time).
_BODY_UNLESS_IMAGE = f"CASE WHEN m.content_type = {ContentType.IMAGE} THEN NULL ELSE m.body END"


class MessageLogStore:
    """Appends and reads of the message log, and the device cursors over it."""

    def __init__(self, db: Database, writes: GroupCommitter) -> None:
        self.db = db
        self.writes = writes

    def append_message(self, draft: Draft) -> Deferred[Appended]:
        """Store a chat message and append it to every member's log (one transaction).

        A message whose (sender, client_msg_id) is already stored is not stored again: the
        original's sequence number comes back with ``duplicate`` set. UnknownUsers,
        UnknownGroup, NotAMember.
        """
        return self.writes.submit(append_batch.append_message, draft)

    def read_log(self, user: str, after_seq: int, limit: int) -> Deferred[list[LogEntry]]:
        """The user's deliveries after ``after_seq``, in order (image bodies left out)."""

        def txn_fn(txn: Transaction) -> list[LogEntry]:
            txn.execute(
                "SELECT d.user_seq, c.kind, c.id, c.direct_key, m.sender_name, m.conv_seq,"  # noqa: S608
                f" m.created_ms, m.client_msg_id, m.content_type, {_BODY_UNLESS_IMAGE},"
                " m.mime, m.sha256, LENGTH(m.body), m.id"
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
            return bytes(one(txn)[0])

        return self.db.run_interaction("message_body", txn_fn)

    def sync_position(self, user: str, device_id: bytes) -> Deferred[SyncPosition]:
        """(the device's acknowledged position, the end of the user's log) in one query."""

        def txn_fn(txn: Transaction) -> SyncPosition:
            txn.execute(
                "SELECT u.next_seq, v.acked_seq FROM users u LEFT JOIN devices v"
                " ON v.user_id = u.id AND v.device_id = ? WHERE u.name = ?",
                (device_id, user),
            )
            row = txn.fetchone()
            if row is None:
                return SyncPosition(0, 0)
            return SyncPosition(0 if row[1] is None else int(row[1]), int(row[0]))

        return self.db.run_interaction("sync_position", txn_fn)

    def acknowledge(self, user: str, device_id: bytes, up_to: int,
                    now_ms: int) -> Deferred[list[DeliveredReceipt]]:
        """Move the device's cursor forward to ``up_to`` (never back) and return, per
        conversation and sender, the highest conv_seq newly delivered (for receipts).
        ``now_ms`` is not stored (no device keeps a last-seen time)."""

        def txn_fn(txn: Transaction) -> list[DeliveredReceipt]:
            user_id_ = user_id(txn, user)
            txn.execute(
                "SELECT acked_seq FROM devices WHERE user_id = ? AND device_id = ?",
                (user_id_, device_id),
            )
            row = txn.fetchone()
            previous = 0 if row is None else int(row[0])
            if up_to <= previous:
                return []
            txn.execute("SELECT next_seq FROM users WHERE id = ?", (user_id_,))
            up_to_valid = min(up_to, int(one(txn)[0]))
            if row is None:
                txn.execute(
                    "INSERT INTO devices (user_id, device_id, acked_seq) VALUES (?, ?, ?)",
                    (user_id_, device_id, up_to_valid),
                )
            else:
                txn.execute(
                    "UPDATE devices SET acked_seq = ?"
                    " WHERE user_id = ? AND device_id = ? AND acked_seq < ?",
                    (up_to_valid, user_id_, device_id, up_to_valid),
                )
            txn.execute(
                "SELECT m.sender_name, c.kind, c.id, MAX(m.conv_seq)"
                " FROM deliveries d JOIN messages m ON m.id = d.message_id"
                " JOIN conversations c ON c.id = m.conversation_id"
                " WHERE d.user_id = ? AND d.user_seq > ? AND d.user_seq <= ?"
                " AND m.sender_name <> ? AND m.content_type <> ?"
                " GROUP BY m.sender_name, c.kind, c.id",
                (user_id_, previous, up_to_valid, user, ContentType.EVENT),
            )
            return [
                DeliveredReceipt(str(s), 0 if k == "direct" else int(cid), int(seq))
                for s, k, cid, seq in txn.fetchall()
            ]

        return self.writes.submit(txn_fn)

    def history(self, user: str, group_id: int, peer: str | None, before_seq: int,
                limit: int) -> Deferred[HistoryPage]:
        """A conversation's archive, newest first, before ``before_seq`` (0 = the newest);
        only for members, who see all of it, from before they joined too.
        UnknownGroup, NotAMember, UnknownUsers."""

        def txn_fn(txn: Transaction) -> HistoryPage:
            user_id_ = user_id(txn, user)
            if group_id == 0:
                assert peer is not None
                txn.execute("SELECT id FROM conversations WHERE direct_key = ?",
                            (direct_key(user, peer),))
                row = txn.fetchone()
                if row is None:
                    user_ids(txn, [peer])  # UnknownUsers (a deleted peer's chat stays)
                    return HistoryPage([], False)
                conv_id = int(row[0])
            else:
                conv_id = group_id
                require_group_member(txn, conv_id, user_id_)
            bound = before_seq if before_seq > 0 else 2**62
            txn.execute(
                "SELECT m.conv_seq, m.sender_name, c.direct_key, m.created_ms, m.content_type,"  # noqa: S608
                f" {_BODY_UNLESS_IMAGE}, m.mime, m.sha256, LENGTH(m.body)"
                " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
                " WHERE m.conversation_id = ? AND m.conv_seq < ?"
                " ORDER BY m.conv_seq DESC LIMIT ?",
                (conv_id, bound, limit + 1),
            )
            rows = txn.fetchall()
            entries = [
                HistoryRow(int(seq), str(sender), direct_to(key, str(sender)), int(created),
                           int(ctype), b"" if body is None else bytes(body), mime,
                           None if sha is None else bytes(sha), int(size))
                for seq, sender, key, created, ctype, body, mime, sha, size in rows[:limit]
            ]
            return HistoryPage(entries, len(rows) > limit)

        return self.db.run_interaction("history", txn_fn)

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


def append_group_event(txn: Transaction, group_id: int, actor_id: int, event: GroupEvent,
                       now_ms: int, *, also_to: Sequence[tuple[int, str]] = ()) -> Appended:
    """Log a group event (a message of content type EVENT from ``actor_id``) with the group's
    next sequence number, to every member plus ``also_to`` (id, name), e.g. those just
    removed, each with their next user_seq."""
    txn.execute(
        "UPDATE conversations SET next_seq = next_seq + 1 WHERE id = ? RETURNING next_seq",
        (group_id,),
    )
    conv_seq = int(one(txn)[0])
    body = encode_record(event)
    txn.execute(
        "INSERT INTO messages (conversation_id, conv_seq, sender_id, sender_name, client_msg_id,"
        " created_ms, content_type, body) VALUES (?, ?, ?, ?, NULL, ?, ?, ?) RETURNING id",
        (group_id, conv_seq, actor_id, event.actor, now_ms, ContentType.EVENT, body),
    )
    message_id = int(one(txn)[0])
    # Each member's next log position, all in one statement.
    txn.execute(
        "UPDATE users SET next_seq = next_seq + 1 WHERE id IN"
        " (SELECT user_id FROM members WHERE conversation_id = ?) RETURNING id, name, next_seq",
        (group_id,),
    )
    logged = [(int(uid), str(name), int(seq)) for uid, name, seq in txn.fetchall()]
    members = {uid for uid, _, _ in logged}
    for uid, name in also_to:
        if uid not in members:
            txn.execute(
                "UPDATE users SET next_seq = next_seq + 1 WHERE id = ? RETURNING next_seq",
                (uid,),
            )
            logged.append((uid, name, int(one(txn)[0])))
    logged.sort()
    txn.execute_many(
        "INSERT INTO deliveries (user_id, user_seq, message_id) VALUES (?, ?, ?)",
        [(uid, seq, message_id) for uid, _, seq in logged],
    )
    entry = LogEntry(group_id, event.actor, None, conv_seq, now_ms, None, ContentType.EVENT,
                     body, None, None, len(body), message_id)
    return Appended(message_id, group_id, conv_seq, now_ms, False, entry,
                    tuple((name, seq) for _, name, seq in logged))


def _log_entry(row: Sequence[Any]) -> LogEntry:
    (user_seq, kind, conv_id, key, sender, conv_seq, created, cmid, ctype, body, mime,
     sha, size, mid) = row
    return LogEntry(
        group_id=0 if kind == "direct" else int(conv_id),
        sender=str(sender),
        to=direct_to(key, str(sender)),
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
