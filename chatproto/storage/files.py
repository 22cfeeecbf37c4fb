"""File messages in the database: which file a user may fetch (the bytes are in the
content-addressed :class:`~chatproto.storage.content_files.ContentFiles`), and which stored
bodies the archive still refers to."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from chatproto.storage.database import Database, Transaction
from chatproto.storage.errors import UnknownMessage
from chatproto.storage.lookups import direct_key, require_group_member, user_id
from chatproto.wire.feature_messages import FILE, FileInfo
from chatproto.wire.messages import RemoteProtocolError, decode_record


class FileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def file_info(self, user: str, group_id: int, peer: str | None,
                  conv_seq: int) -> Deferred[FileInfo]:
        """The file of message ``conv_seq`` of a conversation the user is in (not
        retracted). UnknownMessage, UnknownGroup, NotAMember."""

        def txn_fn(txn: Transaction) -> FileInfo:
            me = user_id(txn, user)
            if group_id == 0:
                assert peer is not None
                txn.execute(
                    "SELECT c.id FROM conversations c JOIN members me ON me.conversation_id ="
                    " c.id AND me.user_id = ? WHERE c.direct_key = ?",
                    (me, direct_key(user, peer)))
                row = txn.fetchone()
                if row is None:
                    raise UnknownMessage(0, conv_seq)
                conv_id = int(row[0])
            else:
                require_group_member(txn, group_id, me)
                conv_id = group_id
            txn.execute(
                "SELECT m.body FROM messages m WHERE m.conversation_id = ? AND m.conv_seq = ?"
                " AND m.content_type = ? AND NOT EXISTS (SELECT 1 FROM retractions r"
                " WHERE r.conversation_id = m.conversation_id AND r.conv_seq = m.conv_seq)",
                (conv_id, conv_seq, FILE))
            row = txn.fetchone()
            if row is None:
                raise UnknownMessage(group_id, conv_seq)
            try:
                return decode_record(FileInfo, bytes(row[0]))
            except RemoteProtocolError:
                raise UnknownMessage(group_id, conv_seq) from None

        return self.db.run_interaction("file_info", txn_fn)

    def referenced_files(self) -> Deferred[set[bytes]]:
        """The SHA-256 of every file some archived message refers to, and of every image kept
        as a file (the file and image directories may be one)."""

        def txn_fn(txn: Transaction) -> set[bytes]:
            txn.execute("SELECT sha256 FROM messages WHERE content_type = ?"
                        " AND sha256 IS NOT NULL UNION"
                        " SELECT file_sha256 FROM messages WHERE file_sha256 IS NOT NULL", (FILE,))
            return {bytes(row[0]) for row in txn.fetchall()}

        return self.db.run_interaction("referenced_files", txn_fn)
