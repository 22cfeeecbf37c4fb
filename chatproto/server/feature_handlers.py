"""The request handlers of the everyday features, as one table merged into the server's."""

from __future__ import annotations

from chatproto.server.accounts import AccountHandlers
from chatproto.server.blocking import BlockHandlers
from chatproto.server.chat import ChatHandlers
from chatproto.server.connection import RequestHandler
from chatproto.server.conversation_list import ConversationListHandlers
from chatproto.server.edits import EditHandlers
from chatproto.server.feature_settings import FeatureSettings
from chatproto.server.files import FileHandlers
from chatproto.server.passwords import PasswordHasher
from chatproto.server.search import SearchHandlers
from chatproto.wire import messages as m


class FeatureHandlers:
    """Edits, the conversation list (and READ, which stores read positions), search,
    accounts, blocking and files. ``dispatch`` is merged over ``ChatHandlers.dispatch``."""

    def __init__(self, chat: ChatHandlers, hasher: PasswordHasher,
                 settings: FeatureSettings | None = None) -> None:
        self.settings = settings = settings or FeatureSettings()
        self.edits = EditHandlers(chat, settings)
        self.conversation_list = ConversationListHandlers(chat)
        self.search = SearchHandlers(chat, settings)
        self.accounts = AccountHandlers(chat, hasher, settings)
        self.blocks = BlockHandlers(chat)
        self.files = FileHandlers(chat, settings)
        self.dispatch: dict[type[m.Message], RequestHandler] = {}
        for part in (self.edits, self.conversation_list, self.search, self.accounts,
                     self.blocks, self.files):
            self.dispatch.update(part.dispatch)  # type: ignore[arg-type]
