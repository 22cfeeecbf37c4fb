"""Full-text search over the conversations a user is in.

SQLite uses an FTS5 table, PostgreSQL a ``tsvector`` column with a GIN index (schema 006).
The index follows the message log rather than the write path: each search first indexes the
messages appended since the last one (in message id order, so an edit or retraction always
comes after the text it changes: an edit replaces the indexed text, a retraction removes it).
The chat-message append therefore costs nothing more.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from twisted.internet.defer import Deferred

from chatproto.storage.database import Database, Transaction
from chatproto.storage.lookups import direct_to, one, user_id
from chatproto.wire.feature_messages import EDIT, RETRACT, EditBody, RetractBody
from chatproto.wire.messages import ContentType, RemoteProtocolError, decode_record

#: Messages indexed per transaction while catching up.
INDEX_CHUNK = 2000
#: The longest query, in words (each must occur).
MAX_QUERY_WORDS = 16


class SearchRow(NamedTuple):
    hit_id: int
    group_id: int
    peer: str | None
    conv_seq: int
    sender: str
    created_ms: int
    text: bytes


def query_words(query: str) -> list[str]:
    """The words of a query (at most :data:`MAX_QUERY_WORDS`); empty if it has none."""
    return query.split()[:MAX_QUERY_WORDS]


def _fts5_query(words: list[str]) -> str:
    """Each word as an FTS5 string (so no word is read as an operator); all must occur."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


class SearchStore:
    """The search index and queries over it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._postgres = db.engine.name == "postgres"

    def catch_up(self) -> Deferred[int]:
        """Index every message appended since the last call; how many were read."""

        async def run() -> int:
            total = 0
            while True:
                done = await self.db.run_interaction("index_messages", self._index_chunk)
                total += done
                if done < INDEX_CHUNK:
                    return total

        return Deferred.fromCoroutine(run())

    def _index_chunk(self, txn: Transaction) -> int:
        lock = " FOR UPDATE" if self._postgres else ""
        txn.execute(f"SELECT last_message_id FROM search_progress WHERE id = 1{lock}")  # noqa: S608
        last = int(one(txn)[0])
        txn.execute(
            "SELECT id, conversation_id, content_type, body FROM messages"
            " WHERE id > ? AND content_type IN (?, ?, ?) ORDER BY id LIMIT ?",
            (last, ContentType.TEXT, EDIT, RETRACT, INDEX_CHUNK),
        )
        rows = txn.fetchall()
        for message_id, conv_id, content_type, body in rows:
            self._index_one(txn, int(message_id), int(conv_id), int(content_type), bytes(body))
        if rows:
            txn.execute("UPDATE search_progress SET last_message_id = ? WHERE id = 1",
                        (int(rows[-1][0]),))
        return len(rows)

    def _index_one(self, txn: Transaction, message_id: int, conv_id: int, content_type: int,
                   body: bytes) -> None:
        if content_type == ContentType.TEXT:
            self._put(txn, message_id, body.decode("utf-8", "replace"), new=True)
            return
        try:
            change: EditBody | RetractBody = (
                decode_record(EditBody, body) if content_type == EDIT
                else decode_record(RetractBody, body))
        except RemoteProtocolError:
            return  # not written by this server: nothing to index
        txn.execute("SELECT id FROM messages WHERE conversation_id = ? AND conv_seq = ?",
                    (conv_id, change.target_seq))
        row = txn.fetchone()
        if row is None:
            return
        target = int(row[0])
        if isinstance(change, EditBody):
            self._put(txn, target, change.text.decode("utf-8", "replace"), new=False)
        elif self._postgres:
            txn.execute("DELETE FROM message_search WHERE message_id = ?", (target,))
        else:
            txn.execute("DELETE FROM message_search WHERE rowid = ?", (target,))

    def _put(self, txn: Transaction, message_id: int, text: str, *, new: bool) -> None:
        if self._postgres:
            if new:
                txn.execute(
                    "INSERT INTO message_search (message_id, text, document)"
                    " VALUES (?, ?, to_tsvector('simple', ?)) ON CONFLICT (message_id) DO"
                    " UPDATE SET text = EXCLUDED.text, document = EXCLUDED.document",
                    (message_id, text, text),
                )
            else:  # an edit of a message still indexed (not retracted)
                txn.execute(
                    "UPDATE message_search SET text = ?, document = to_tsvector('simple', ?)"
                    " WHERE message_id = ?",
                    (text, text, message_id),
                )
        elif new:
            txn.execute("INSERT INTO message_search (rowid, text) VALUES (?, ?)",
                        (message_id, text))
        else:
            txn.execute("UPDATE message_search SET text = ? WHERE rowid = ?", (text, message_id))

    def purge_pruned(self) -> Deferred[int]:
        """Drop the index rows of messages the archive retention deleted (PostgreSQL's rows
        go with their message; SQLite's FTS5 table has no foreign keys)."""

        def txn_fn(txn: Transaction) -> int:
            if self._postgres:
                return 0
            txn.execute("DELETE FROM message_search WHERE rowid NOT IN (SELECT id FROM messages)")
            return max(txn.rowcount, 0)

        return self.db.run_interaction("purge_search_index", txn_fn)

    def search(self, user: str, words: list[str], before_id: int,
               limit: int) -> Deferred[tuple[list[SearchRow], bool]]:
        """Messages with every word, newest first, from the conversations the user is a
        member of (not from users they block), before hit ``before_id`` (0 = the newest);
        and whether there are more."""

        def txn_fn(txn: Transaction) -> tuple[list[SearchRow], bool]:
            me = user_id(txn, user)
            bound = before_id if before_id > 0 else 2**62
            params: tuple[Any, ...]
            if self._postgres:
                match = "s.document @@ plainto_tsquery('simple', ?)"
                key = "s.message_id"
                params = (" ".join(words),)
            else:
                match = "message_search MATCH ?"
                key = "s.rowid"
                params = (_fts5_query(words),)
            txn.execute(
                f"SELECT {key}, c.kind, c.id, c.direct_key, m.conv_seq, m.sender_name,"  # noqa: S608
                " m.created_ms, s.text FROM message_search s"
                f" JOIN messages m ON m.id = {key}"
                " JOIN conversations c ON c.id = m.conversation_id"
                " JOIN members me ON me.conversation_id = m.conversation_id AND me.user_id = ?"
                f" WHERE {match} AND {key} < ?"
                " AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.user_id = ?"
                " AND b.blocked_id = m.sender_id)"
                f" ORDER BY {key} DESC LIMIT ?",
                (me, *params, bound, me, limit + 1),
            )
            rows = txn.fetchall()
            hits = [
                SearchRow(int(mid), 0 if kind == "direct" else int(cid),
                          _peer(key_, user), int(seq), str(sender), int(created),
                          str(text).encode("utf-8"))
                for mid, kind, cid, key_, seq, sender, created, text in rows[:limit]
            ]
            return hits, len(rows) > limit

        return self.db.run_interaction("search", txn_fn)


def _peer(key: str | None, user: str) -> str | None:
    return None if key is None else direct_to(key, user)

