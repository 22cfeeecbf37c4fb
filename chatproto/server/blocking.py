"""BLOCK, UNBLOCK and BLOCK_LIST. What a block does is enforced by the store: a blocked user's
direct messages and new direct conversations are refused as for an unknown user, and
presence is hidden both ways; clients hide the blocked user's group messages."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from chatproto.server.chat import ChatHandlers
from chatproto.server.connection import Connection
from chatproto.server.refusals import RequestError, request_error
from chatproto.storage.blocks import BlockStore
from chatproto.wire import feature_messages as f
from chatproto.wire import messages as m
from chatproto.wire.errors import ErrorCode


class BlockHandlers:
    def __init__(self, chat: ChatHandlers) -> None:
        self.chat = chat
        self.dispatch = {f.Block: self.block, f.Unblock: self.unblock,
                         f.BlockList: self.block_list}

    @property
    def store(self) -> BlockStore:
        """Looked up per request (a server built over a test double never needs it)."""
        return self.chat.store.features.blocks

    def block(self, conn: Connection, msg: f.Block) -> Deferred[Any]:
        if msg.name == conn.name:
            raise RequestError(ErrorCode.INVALID_REQUEST, "you cannot block yourself")
        d = self.store.block(conn.name, msg.name, self.chat.now_ms())
        d.addErrback(request_error)
        d.addCallback(lambda _: conn.send(m.Ok(msg.req)))
        return d

    def unblock(self, conn: Connection, msg: f.Unblock) -> Deferred[Any]:
        d = self.store.unblock(conn.name, msg.name)
        d.addCallback(lambda _: conn.send(m.Ok(msg.req)))
        return d

    def block_list(self, conn: Connection, msg: f.BlockList) -> Deferred[Any]:
        d = self.store.blocked(conn.name)
        d.addCallback(lambda names: conn.send(
            f.BlockedNames(msg.req, tuple(names[: m.MAX_NAMES]))))
        return d
