"""The conversation list: every direct conversation and group of a user with its last message
and unread count, and the read positions (from the user's READ requests) unread counts use.
"""

from __future__ import annotations

from typing import NamedTuple

from twisted.internet.defer import Deferred

from chatproto.storage.database import Database, Transaction
from chatproto.storage.lookups import direct_key, direct_to, require_group_member, user_id
from chatproto.wire.feature_messages import EDIT, PREVIEW_BYTES, EditBody
from chatproto.wire.messages import ContentType, RemoteProtocolError, decode_record

#: The content types that count as unread messages (not events, edits or retractions).
_COUNTED = (ContentType.TEXT, ContentType.IMAGE)


class ConversationRow(NamedTuple):
    group_id: int
    peer: str | None
    title: str
    last_seq: int
    last_sender: str | None
    last_time_ms: int
    last_content_type: int
    last_preview: str
    unread: int


def preview(content_type: int, body: bytes | None) -> str:
    """At most :data:`PREVIEW_BYTES` of a message's text (an edit's new text; none for
    images, events and retractions), cut on a character boundary."""
    if body is None:
        return ""
    if content_type == EDIT:
        try:
            body = decode_record(EditBody, body).text
        except RemoteProtocolError:
            return ""
    elif content_type != ContentType.TEXT:
        return ""
    return body[:PREVIEW_BYTES].decode("utf-8", "ignore")


class ConversationListStore:
    """Read positions and the conversation list."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def mark_read(self, user: str, group_id: int, peer: str | None, up_to: int) -> Deferred[None]:
        """Move the user's read position in the conversation forward to ``up_to`` (never back,
        never past its last message); nothing for a conversation the user is not in."""

        def txn_fn(txn: Transaction) -> None:
            me = user_id(txn, user)
            if group_id == 0:
                assert peer is not None
                txn.execute("SELECT id, next_seq FROM conversations WHERE direct_key = ?",
                            (direct_key(user, peer),))
            else:
                require_group_member(txn, group_id, me)
                txn.execute("SELECT id, next_seq FROM conversations WHERE id = ?", (group_id,))
            row = txn.fetchone()
            if row is None:
                return
            seq = min(up_to, int(row[1]))
            txn.execute(
                "INSERT INTO read_marks (user_id, conversation_id, read_seq) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id, conversation_id) DO UPDATE SET read_seq = CASE WHEN"
                " EXCLUDED.read_seq > read_marks.read_seq THEN EXCLUDED.read_seq"
                " ELSE read_marks.read_seq END",
                (me, int(row[0]), seq),
            )

        return self.db.run_interaction("mark_read", txn_fn)

    def conversations(self, user: str, limit: int) -> Deferred[list[ConversationRow]]:
        """The user's conversations, the most recently active first. Unread: messages from
        others (not from users the user blocks) after the read position, since joining."""

        def txn_fn(txn: Transaction) -> list[ConversationRow]:
            me = user_id(txn, user)
            counted = ",".join(str(t) for t in _COUNTED)
            txn.execute(
                "SELECT c.id, c.kind, c.title, c.direct_key, m.conv_seq, m.sender_name,"  # noqa: S608
                " m.created_ms, m.content_type,"
                f" CASE WHEN m.content_type IN ({ContentType.TEXT}, {EDIT}) THEN m.body END,"
                " (SELECT COUNT(*) FROM messages u WHERE u.conversation_id = c.id"
                "  AND u.conv_seq > COALESCE(r.read_seq, 0) AND u.created_ms >= me.joined_ms"
                f"  AND u.content_type IN ({counted})"
                "  AND (u.sender_id IS NULL OR u.sender_id <> me.user_id)"
                "  AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.user_id = me.user_id"
                "  AND b.blocked_id = u.sender_id))"
                " FROM members me JOIN conversations c ON c.id = me.conversation_id"
                " LEFT JOIN read_marks r ON r.user_id = me.user_id AND r.conversation_id = c.id"
                " LEFT JOIN messages m ON m.conversation_id = c.id AND m.conv_seq ="
                "  (SELECT MAX(x.conv_seq) FROM messages x WHERE x.conversation_id = c.id)"
                " WHERE me.user_id = ? AND (c.kind = 'group' OR c.direct_key IS NOT NULL)"
                " ORDER BY COALESCE(m.created_ms, c.created_ms) DESC, c.id DESC LIMIT ?",
                (me, limit),
            )
            rows = []
            for cid, kind, title, key, seq, sender, created, ctype, body, unread in (
                    txn.fetchall()):
                direct = kind == "direct"
                rows.append(ConversationRow(
                    0 if direct else int(cid), direct_to(key, user) if direct else None,
                    "" if direct else str(title), 0 if seq is None else int(seq),
                    None if sender is None else str(sender),
                    0 if created is None else int(created), 0 if ctype is None else int(ctype),
                    preview(int(ctype or 0), None if body is None else bytes(body)),
                    int(unread)))
            return rows

        return self.db.run_interaction("conversations", txn_fn)
