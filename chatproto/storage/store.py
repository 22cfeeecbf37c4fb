"""The chat store: the one object the server talks to about stored state.

:class:`ChatStore` is a thin facade over one store per domain, the way Synapse builds its
``DataStore``: :class:`~chatproto.storage.users.UserStore` (users and accounts),
:class:`~chatproto.storage.conversations.ConversationStore` (direct chats, groups, members)
and :class:`~chatproto.storage.message_log.MessageLogStore` (the message log, deliveries,
acknowledgements, history, retention). Each method is one interaction (or one operation of
the group committer); the records and refusals they use are re-exported here.
"""

from __future__ import annotations

from chatproto.storage.content_files import ContentFiles
from chatproto.storage.conversations import ConversationStore
from chatproto.storage.database import Database, GroupCommitter
from chatproto.storage.errors import (
    NameTaken,
    NotAllowed,
    NotAMember,
    StoreError,
    UnknownGroup,
    UnknownMessage,
    UnknownUsers,
)
from chatproto.storage.feature_stores import FeatureStores
from chatproto.storage.message_log import MessageLogStore
from chatproto.storage.records import (
    Appended,
    Contact,
    DeliveredReceipt,
    Draft,
    GroupSummary,
    HistoryPage,
    HistoryRow,
    LogEntry,
    Login,
    MemberRow,
    SyncPosition,
    UserRecord,
)
from chatproto.storage.users import UserStore

__all__ = [
    "Appended", "ChatStore", "Contact", "DeliveredReceipt", "Draft", "GroupSummary",
    "HistoryPage", "HistoryRow", "LogEntry", "Login", "MemberRow", "NameTaken", "NotAMember",
    "NotAllowed", "StoreError", "SyncPosition", "UnknownGroup", "UnknownMessage", "UnknownUsers",
    "UserRecord",
]



class ChatStore:
    """Every query the server makes, over a started :class:`Database`.

    The domain stores are attributes (``users``, ``conversations``, ``log``); the facade's
    methods are theirs; ``files`` is where image bodies go (None: in the database). Chat
    writes (messages, acks, membership changes) go through one group committer, ``writes``,
    so they share transactions under load.
    """

    def __init__(self, db: Database, *, max_batch: int = 256,
                 files: ContentFiles | None = None) -> None:
        self.db = db
        self.writes = GroupCommitter(db, max_batch=max_batch, isolated=(StoreError,))
        self.users = users = UserStore(db)
        self.conversations = conversations = ConversationStore(db, self.writes)
        self.log = log = MessageLogStore(db, self.writes, files)
        self.features = FeatureStores(db)

        self.create_user = users.create_user
        self.get_login = users.get_login
        self.get_password_hash = users.get_password_hash
        self.set_password_hash = users.set_password_hash
        self.delete_user = users.delete_user
        self.list_users = users.list_users
        self.get_user = users.get_user
        self.record_login = users.record_login
        self.record_last_seen = users.record_last_seen

        self.create_direct = conversations.create_direct
        self.direct_exists = conversations.direct_exists
        self.create_group = conversations.create_group
        self.change_group = conversations.change_group
        self.user_groups = conversations.user_groups
        self.group_members = conversations.group_members
        self.conversation_members = conversations.conversation_members
        self.contacts = conversations.contacts

        self.append_message = log.append_message
        self.read_log = log.read_log
        self.message_body = log.message_body
        self.sync_position = log.sync_position
        self.acknowledge = log.acknowledge
        self.history = log.history
        self.prune_archive = log.prune_archive
