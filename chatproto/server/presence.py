"""Presence: a user is online while at least one of their devices has a session.

When a user's first session starts, or their last one ends (last seen recorded first), every
contact (anyone sharing a conversation) gets a PresenceEvent through the router.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatproto.server.router import Routed, Router
from chatproto.storage.store import ChatStore
from chatproto.wire import messages as m

log = Logger()


class PresenceAnnouncer:
    """Attaches and detaches sessions, and tells contacts when a user comes and goes."""

    def __init__(self, store: ChatStore, router: Router, now_ms: Callable[[], int]) -> None:
        self.store = store
        self.router = router
        self.now_ms = now_ms

    def session_started(self, conn: Routed) -> None:
        if self.router.attach(conn):
            self._announce(conn.name, True, None)

    def session_ended(self, conn: Routed) -> Deferred[None]:
        """Fires once last seen is stored (if this was the user's last session)."""
        if not self.router.detach(conn):
            return defer.succeed(None)
        name = conn.name
        now = self.now_ms()
        d = self.store.record_last_seen(name, now)
        d.addCallback(lambda _: self._announce(name, False, now))
        return d

    def _announce(self, name: str, online: bool, last_seen_ms: int | None) -> None:
        event = m.encode_message(m.PresenceEvent(name, online, last_seen_ms))
        d = self.store.contacts(name)
        d.addCallback(lambda contacts: self.router.push([row[0] for row in contacts], event))
        d.addErrback(lambda f: log.failure("presence of {name}", f, name=name))
