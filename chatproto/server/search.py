"""SEARCH: full-text search over the conversations the user is in, newest first, paged."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

from chatproto.server.chat import ChatHandlers
from chatproto.server.connection import Connection
from chatproto.server.feature_settings import FeatureSettings
from chatproto.server.refusals import RequestError
from chatproto.storage.search_index import SearchStore, query_words
from chatproto.wire import feature_messages as f
from chatproto.wire.errors import ErrorCode


class SearchHandlers:
    """Brings the index up to date with the log, then searches it."""

    def __init__(self, chat: ChatHandlers, settings: FeatureSettings) -> None:
        self.chat = chat
        self.settings = settings
        self._purged_ms: int | None = None
        self.dispatch = {f.Search: self.search}

    @property
    def store(self) -> SearchStore:
        """Looked up per request (a server built over a test double never needs it)."""
        return self.chat.store.features.search

    def search(self, conn: Connection, msg: f.Search) -> Deferred[Any]:
        if not 1 <= msg.limit <= f.MAX_HITS:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"limit is 1 to {f.MAX_HITS}")
        words = query_words(msg.query)
        if not words:
            raise RequestError(ErrorCode.INVALID_REQUEST, "the query has no words")
        return defer.ensureDeferred(self._search(conn, msg, words))

    async def _search(self, conn: Connection, msg: f.Search, words: list[str]) -> None:
        now = self.chat.now_ms()
        if (self._purged_ms is None
                or now - self._purged_ms >= self.settings.search_purge_interval_ms):
            self._purged_ms = now
            await self.store.purge_pruned()
        await self.store.catch_up()
        rows, more = await self.store.search(conn.name, words, msg.before_id, msg.limit)
        conn.send(f.SearchResults(msg.req, tuple(f.SearchHit(*row) for row in rows), more))
