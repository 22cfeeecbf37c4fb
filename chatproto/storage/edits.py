"""Edits and retractions: which message a change may refer to, and which are retracted.

An edit or a retraction is itself a log entry (appended like any chat message, so offline
devices, resume and multi-device need nothing special); this store decides whether the user
may make it and remembers retractions, so that a retracted message cannot be edited and
search leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred

from chatproto.storage.database import Database, Transaction
from chatproto.storage.errors import NotAllowed, UnknownMessage
from chatproto.storage.group_rules import Role
from chatproto.storage.lookups import direct_key, member_role, require_group_member, user_id
from chatproto.wire.feature_messages import FILE
from chatproto.wire.messages import ContentType

#: What may be retracted (EDIT and RETRACT entries, and group events, may not).
RETRACTABLE = (ContentType.TEXT, ContentType.IMAGE, FILE)


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """An edit (``edit``) or a retraction by ``user`` of entry ``target_seq`` of a
    conversation (a group id, or 0 and the peer of a direct conversation)."""

    user: str
    group_id: int
    peer: str | None
    target_seq: int
    edit: bool
    now_ms: int
    edit_window_ms: int


class EditStore:
    """Checks edits and retractions, and records retractions."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def check_change(self, change: ChangeRequest) -> Deferred[int]:
        """The conversation id if the change is allowed. The sender may edit a text within
        the window and retract any time; a group's owner and admins may retract anything in
        it. UnknownMessage (no such message, or not one the user may change), NotAllowed
        (the edit window has closed), UnknownGroup, NotAMember."""

        def txn_fn(txn: Transaction) -> int:
            me = user_id(txn, change.user)
            if change.group_id == 0:
                assert change.peer is not None
                txn.execute("SELECT id FROM conversations WHERE direct_key = ?",
                            (direct_key(change.user, change.peer),))
                row = txn.fetchone()
                if row is None:
                    raise UnknownMessage(0, change.target_seq)
                conv_id = int(row[0])
            else:
                conv_id = change.group_id
                require_group_member(txn, conv_id, me)
            txn.execute(
                "SELECT m.sender_id, m.content_type, m.created_ms, r.conv_seq"
                " FROM messages m LEFT JOIN retractions r ON r.conversation_id ="
                " m.conversation_id AND r.conv_seq = m.conv_seq"
                " WHERE m.conversation_id = ? AND m.conv_seq = ?",
                (conv_id, change.target_seq),
            )
            row = txn.fetchone()
            if row is None or row[3] is not None:
                raise UnknownMessage(change.group_id, change.target_seq)
            sender_id, content_type, created_ms = row[0], int(row[1]), int(row[2])
            own = sender_id is not None and int(sender_id) == me
            if change.edit:
                if not own or content_type != ContentType.TEXT:
                    raise UnknownMessage(change.group_id, change.target_seq)
                if change.now_ms - created_ms > change.edit_window_ms:
                    raise NotAllowed("the time to edit this message has passed")
                return conv_id
            if content_type not in RETRACTABLE:
                raise UnknownMessage(change.group_id, change.target_seq)
            if not own:
                role = member_role(txn, conv_id, me) if change.group_id else None
                if role not in (Role.OWNER, Role.ADMIN):
                    raise UnknownMessage(change.group_id, change.target_seq)
            return conv_id

        return self.db.run_interaction("check_change", txn_fn)

    def record_retraction(self, conv_id: int, conv_seq: int) -> Deferred[None]:
        """Remember that the message is retracted (and drop it from the search index)."""

        def txn_fn(txn: Transaction) -> None:
            txn.execute(
                "INSERT INTO retractions (conversation_id, conv_seq) VALUES (?, ?)"
                " ON CONFLICT DO NOTHING",
                (conv_id, conv_seq),
            )

        return self.db.run_interaction("record_retraction", txn_fn)
