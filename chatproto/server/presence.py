"""Presence: a user is online while at least one of their devices has a session.

When a user's first session starts, or their last one ends (last seen recorded first), every
contact (anyone sharing a conversation) gets a PresenceEvent through the router. With several
nodes "first" and "last" are across all of them (the router answers), and the router also
reports users whose sessions vanished with a dead node.
"""

from __future__ import annotations

from collections.abc import Callable

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
        router.presence_changes(self.came_online, self.went_offline)

    def session_started(self, conn: Routed) -> None:
        name = conn.name
        self.router.arrive(conn).addCallback(
            lambda first: self._announce(name, True, None) if first else None)

    def session_ended(self, conn: Routed) -> Deferred[None]:
        """Fires once last seen is stored (if this was the user's last session anywhere)."""
        name = conn.name
        now = self.now_ms()

        def ended(last: bool) -> Deferred[None] | None:
            if not last:
                return None
            d = self.store.record_last_seen(name, now)
            d.addCallback(lambda _: self._announce(name, False, now))
            return d

        d: Deferred[None] = self.router.leave(conn).addCallback(ended)
        return d

    def came_online(self, name: str) -> None:
        """A user is back online without a new session here (the router found out)."""
        self._announce(name, True, None)

    def went_offline(self, name: str, last_seen_ms: int) -> None:
        """A user's last session ended with a node that died (last seen already stored)."""
        self._announce(name, False, last_seen_ms)

    def _announce(self, name: str, online: bool, last_seen_ms: int | None) -> None:
        event = m.encode_message(m.PresenceEvent(name, online, last_seen_ms))
        d = self.store.contacts(name)
        d.addCallback(lambda contacts: self.router.push([row[0] for row in contacts], event))
        d.addErrback(lambda f: log.failure("presence of {name}", f, name=name))
