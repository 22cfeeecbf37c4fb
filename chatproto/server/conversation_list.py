"""CONVERSATION_LIST, and the read positions its unread counts come from (each READ a user
sends also moves their stored read position)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from chatproto.server.chat import ChatHandlers
from chatproto.server.connection import Connection
from chatproto.storage.conversation_list import ConversationListStore, ConversationRow
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m


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
        # The receipt goes out whatever happens to the stored position.
        self.store.mark_read(conn.name, msg.group_id, msg.peer, msg.up_to).addErrback(
            lambda _: None)
        return self.chat.read(conn, msg)

    def conversation_list(self, conn: Connection, msg: f.ConversationList) -> Deferred[Any]:
        d = self.store.conversations(conn.name, f.MAX_CONVERSATIONS)

        def answer(rows: list[ConversationRow]) -> None:
            conn.send(f.Conversations(msg.req, tuple(f.ConversationInfo(*row) for row in rows)))

        d.addCallback(answer)
        return d
