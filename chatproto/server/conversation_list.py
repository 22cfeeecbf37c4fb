"""CONVERSATION_LIST, and the read positions its unread counts come from (each READ a user
sends also moves their stored read position)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatproto.server.chat import ChatHandlers
from chatproto.server.connection import Connection
from chatproto.storage.conversation_list import ConversationListStore, ConversationRow
from chatproto.storage.errors import StoreError
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m

log = Logger()


def _mark_failed(f: Failure, name: str) -> None:
    """A refusal (not a member, unknown user) is READ's own answer; anything else is logged."""
    if not f.check(StoreError):
        log.failure("storing the read position of {name}", f, name=name)


class ConversationListHandlers:
    """The conversation list; READ stores the read position, then does what it always did."""

    def __init__(self, chat: ChatHandlers) -> None:
        self.chat = chat
        self.dispatch = {f.ConversationList: self.conversation_list, m.Read: self.read}

    @property
    def store(self) -> ConversationListStore:
        """Looked up per request (a server built over a test double never needs it)."""
        return self.chat.store.features.conversation_list

    def read(self, conn: Connection, msg: m.Read) -> Deferred[Any]:
        # The receipt goes out whatever happens to the stored position. (A store without
        # the feature stores, a test double of the chat flows, keeps no read positions.)
        features = getattr(self.chat.store, "features", None)
        if features is not None:
            d = features.conversation_list.mark_read(conn.name, msg.group_id, msg.peer,
                                                     msg.up_to)
            d.addErrback(_mark_failed, conn.name)
        return self.chat.read(conn, msg)

    def conversation_list(self, conn: Connection, msg: f.ConversationList) -> Deferred[Any]:
        d = self.store.conversations(conn.name, f.MAX_CONVERSATIONS)

        def answer(rows: list[ConversationRow]) -> None:
            conn.send(f.Conversations(msg.req, tuple(f.ConversationInfo(*row) for row in rows)))

        d.addCallback(answer)
        return d
