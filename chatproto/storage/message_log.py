"""The message log: appends, each user's ordered log (deliveries), device cursors (acks),
conversation history and archive retention.

Every message goes to one conversation and every member gets a row in their own ordered
log with their next per-user sequence number (see :mod:`chatproto.storage.append_batch`).
Both counters are taken inside the insert transaction, so commit order is sequence order and
readers never see a gap. Rows are locked in a fixed order (conversation, then users by id)
so concurrent senders cannot deadlock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred, succeed

from chatproto.storage import acknowledgements, append_batch
from chatproto.storage.content_files import ContentFiles, ContentMismatch, RecentBodies
from chatproto.storage.database import Database, GroupCommitter, Transaction
from chatproto.storage.errors import StoreError
from chatproto.storage.lookups import (
    direct_key,
    direct_to,
    one,
    require_group_member,
    select_in,
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
from chatproto.wire.feature_messages import FILE
from chatproto.wire.messages import ContentType, GroupEvent, encode_record

#: A message's body, except for images (whose bodies are fetched one at a time).
_BODY_UNLESS_IMAGE = f"CASE WHEN m.content_type = {ContentType.IMAGE} THEN NULL ELSE m.body END"


class MessageLogStore:
    """Appends and reads of the message log, and the device cursors over it."""

    def __init__(self, db: Database, writes: GroupCommitter,
                 files: ContentFiles | None = None) -> None:
        self.db = db
        self.writes = writes
        #: Where image bodies go (None: in the messages table, as before migration 005).
        self.files = files
        #: The bodies of the images stored last, for deliveries that fall back to the log.
        self.recent = RecentBodies()

    def append_message(self, draft: Draft) -> Deferred[Appended]:
        """Store a chat message and append it to every member's log (one transaction).

        An image's body is first checked against its SHA-256 (ContentMismatch) and written
        to its file and synced (off the reactor, batched with the images stored meanwhile),
        so the commit, and the SendAck after it, follow the bytes reaching the disk.
        A message whose (sender, client_msg_id) is already stored is not stored again: the
        original's sequence number comes back with ``duplicate`` set. UnknownUsers,
        UnknownGroup, NotAMember.
        """
        if draft.content_type != ContentType.IMAGE:
            return self.writes.submit(append_batch.append_message, draft)
        files, body = self.files, draft.body
        if files is None:
            checked = threads.deferToThread(_checked, body, draft.sha256)

            def in_row(_: object) -> Deferred[Appended]:
                return self.writes.submit(append_batch.append_message, draft)

            return checked.addCallback(in_row).addCallback(self._keep_body, body)

        def written(digest: bytes) -> Deferred[Appended]:
            return self.writes.submit(append_batch.append_message, replace(
                draft, body=b"", file_sha256=digest, file_size=len(body)))

        d = files.store(body, draft.sha256)
        return d.addCallback(written).addCallback(self._keep_body, body)

    def _keep_body(self, appended: Appended, body: bytes) -> Appended:
        if not appended.duplicate:  # a duplicate's stored body is the original's
            self.recent.put(appended.message_id, body)
        return appended

    def read_log(self, user: str, after_seq: int, limit: int) -> Deferred[list[LogEntry]]:
        """The user's deliveries after ``after_seq``, in order (image bodies left out)."""

        def txn_fn(txn: Transaction) -> list[LogEntry]:
            txn.execute(
                "SELECT d.user_seq, c.kind, c.id, c.direct_key, m.sender_name, m.conv_seq,"  # noqa: S608
                f" m.created_ms, m.client_msg_id, m.content_type, {_BODY_UNLESS_IMAGE},"
                " m.mime, m.sha256, COALESCE(m.file_size, LENGTH(m.body)), m.id"
                " FROM deliveries d JOIN messages m ON m.id = d.message_id"
                " JOIN conversations c ON c.id = m.conversation_id"
                " WHERE d.user_id = (SELECT id FROM users WHERE name = ?) AND d.user_seq > ?"
                " ORDER BY d.user_seq LIMIT ?",
                (user, after_seq, limit),
            )
            return [_log_entry(row) for row in txn.fetchall()]

        return self.db.run_interaction("read_log", txn_fn)

    def message_body(self, message_id: int) -> Deferred[bytes]:
        """One message's body (used for images, which log pages and history leave out):
        from memory if it was stored lately, else from its file when it has one."""
        recent = self.recent.get(message_id)
        if recent is not None:
            return succeed(recent)

        def txn_fn(txn: Transaction) -> tuple[bytes, bytes | None]:
            txn.execute("SELECT body, file_sha256 FROM messages WHERE id = ?", (message_id,))
            body, digest = one(txn)
            return bytes(body), None if digest is None else bytes(digest)

        def read(row: tuple[bytes, bytes | None]) -> bytes | Deferred[bytes]:
            body, digest = row
            if digest is None:
                return body
            if self.files is None:
                raise StoreError("an image is kept as a file, and no image directory is set")
            return self.files.read(digest)

        return self.db.run_interaction("message_body", txn_fn).addCallback(read)

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
        conversation and sender, the highest conv_seq newly delivered (for receipts); the
        acks of one group commit are applied together (:mod:`acknowledgements`).
        ``now_ms`` is not stored (no device keeps a last-seen time)."""
        return self.writes.submit(acknowledgements.acknowledge, user, device_id, up_to, now_ms)

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
                f" {_BODY_UNLESS_IMAGE}, m.mime, m.sha256, COALESCE(m.file_size, LENGTH(m.body)),"
                " m.id FROM messages m JOIN conversations c ON c.id = m.conversation_id"
                " WHERE m.conversation_id = ? AND m.conv_seq < ?"
                " ORDER BY m.conv_seq DESC LIMIT ?",
                (conv_id, bound, limit + 1),
            )
            rows = txn.fetchall()
            entries = [
                HistoryRow(int(seq), str(sender), direct_to(key, str(sender)), int(created),
                           int(ctype), b"" if body is None else bytes(body), mime,
                           None if sha is None else bytes(sha), int(size), int(mid))
                for seq, sender, key, created, ctype, body, mime, sha, size, mid in rows[:limit]
            ]
            return HistoryPage(entries, len(rows) > limit)

        return self.db.run_interaction("history", txn_fn)

    def prune_archive(self, cutoff_ms: int, chunk: int = 1000) -> Deferred[int]:
        """Delete archived messages older than ``cutoff_ms`` that every recipient's devices
        have acknowledged (a delivery past some device's cursor keeps its message); their
        log rows go with them, and so do image files no message refers to any more (and
        last written before the cutoff, so a file just sent again is kept). Returns how
        many messages were deleted."""

        def txn_fn(txn: Transaction) -> tuple[int, list[bytes]]:
            txn.execute(
                "DELETE FROM messages WHERE id IN (SELECT m.id FROM messages m"
                " WHERE m.created_ms < ? AND NOT EXISTS (SELECT 1 FROM deliveries d"
                " WHERE d.message_id = m.id AND d.user_seq > COALESCE((SELECT MIN(v.acked_seq)"
                " FROM devices v WHERE v.user_id = d.user_id), 0)) LIMIT ?) RETURNING file_sha256",
                (cutoff_ms, chunk),
            )
            rows = txn.fetchall()
            files = sorted({bytes(f) for (f,) in rows if f is not None})
            kept = {bytes(f) for (f,) in select_in(
                txn, "SELECT file_sha256 FROM messages WHERE file_sha256 IN", files)}
            # A file message with the same bytes keeps them too (one directory may hold both).
            kept.update(bytes(f) for (f,) in select_in(
                txn, "SELECT sha256 FROM messages WHERE content_type = ? AND sha256 IN", files,
                leading=(FILE,)))
            return len(rows), [f for f in files if f not in kept]

        async def prune() -> int:
            self.recent.clear()  # no body of a deleted message stays in memory
            total = 0
            while True:  # in chunks, so writers are not held up for long
                deleted, orphans = await self.db.run_interaction("prune_archive", txn_fn)
                if orphans and self.files is not None:
                    await threads.deferToThread(self.files.delete_now, orphans,
                                                cutoff_ms / 1000)
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
    lock = txn.engine.for_update
    if lock:
        # The counters locked in id order, the order append batches take them in.
        others = "".join(f" OR id = {int(uid)}" for uid, _ in also_to)
        txn.execute("SELECT id FROM users WHERE id IN (SELECT user_id FROM members"  # noqa: S608
                    f" WHERE conversation_id = ?){others} ORDER BY id{lock}", (group_id,))
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


def _checked(body: bytes, sha256: bytes | None) -> None:
    """ContentMismatch unless ``body`` is the bytes ``sha256`` names (call in a thread)."""
    if sha256 is None or hashlib.sha256(body).digest() != sha256:
        raise ContentMismatch("the image does not match its SHA-256")


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
