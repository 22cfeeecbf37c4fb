"""The stores of the everyday features, one attribute each on ``ChatStore.features``."""

from __future__ import annotations

from chatproto.storage.accounts import AccountStore
from chatproto.storage.blocks import BlockStore
from chatproto.storage.conversation_list import ConversationListStore
from chatproto.storage.database import Database
from chatproto.storage.edits import EditStore
from chatproto.storage.files import FileStore
from chatproto.storage.search_index import SearchStore


class FeatureStores:
    """Edits, search, accounts, blocking and the conversation list, over one database."""

    def __init__(self, db: Database) -> None:
        self.edits = EditStore(db)
        self.search = SearchStore(db)
        self.accounts = AccountStore(db)
        self.blocks = BlockStore(db)
        self.conversation_list = ConversationListStore(db)
        self.files = FileStore(db)
