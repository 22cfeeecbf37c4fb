"""Who is signed in where, and every delivery to them: an interface, and the in-process router.

Every message the server pushes to a signed-in user (log entries, receipts, typing, presence,
group events) goes through a :class:`Router`; nothing else loops over connections. A node
of a multi-node deployment (``--bus``) uses
:class:`~chatproto.server.redis_router.RedisRouter` instead of :class:`LocalRouter` without
touching the connection or chat code: log advances are only pokes ("the log of X reached
N"), a stream that sees a gap re-reads the log from the database, and presence answers
(``online``, ``arrive``, ``leave``) come as Deferreds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, KeysView
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.defer import Deferred

from chatproto.storage.store import LogEntry


class Routed(TypingProtocol):
    """What the router needs of a signed-in connection."""

    @property
    def name(self) -> str:
        """The signed-in user."""
        ...

    def push(self, payload: bytes) -> None:
        """Send an already encoded message (encoded once for every recipient)."""
        ...

    def log_advanced(self, user_seq: int, entry: LogEntry | None, body: bytes | None) -> None:
        """The user's log reached ``user_seq``; ``entry`` and ``body`` are that entry when the
        router has them (in process), else None (the stream reads the log)."""
        ...


class Router(TypingProtocol):
    """Tracks the signed-in sessions of every user (several devices each) and reaches them."""

    def attach(self, conn: Routed) -> bool:
        """Add a session; True if it is the user's first (the user came online)."""
        ...

    def detach(self, conn: Routed) -> bool:
        """Remove a session; True if it was the user's last (the user went offline)."""
        ...

    def arrive(self, conn: Routed) -> Deferred[bool]:
        """Attach, then fire True if that was the user's first session on ANY node."""
        ...

    def leave(self, conn: Routed) -> Deferred[bool]:
        """Detach, then fire True if that was the user's last session on ANY node."""
        ...

    def presence_changes(self, came_online: Callable[[str], None],
                         went_offline: Callable[[str, int], None]) -> None:
        """Where to report changes no session of this node caused: a user whose sessions
        expired with a dead node went offline (name, last seen ms), or came back online."""
        ...

    def push(self, names: Iterable[str], payload: bytes) -> None:
        """Send an encoded message to every session of every user in ``names``."""
        ...

    def log_advanced(self, name: str, user_seq: int, entry: LogEntry | None,
                     body: bytes | None) -> None:
        """Tell the user's delivery streams that their log reached ``user_seq``."""
        ...

    def online(self, names: Iterable[str]) -> Deferred[frozenset[str]]:
        """Which of ``names`` have at least one session (on any node)."""
        ...

    def online_count(self) -> int:
        """Users with at least one session on this node (metrics)."""
        ...

    def sessions(self, name: str) -> tuple[Routed, ...]:
        """The user's sessions on this node (account changes sign some of them out)."""
        ...


class LocalRouter:
    """The in-process router: a dict of name to that user's connections."""

    def __init__(self) -> None:
        self._sessions: dict[str, list[Routed]] = {}

    def attach(self, conn: Routed) -> bool:
        conns = self._sessions.setdefault(conn.name, [])
        conns.append(conn)
        return len(conns) == 1

    def detach(self, conn: Routed) -> bool:
        conns = self._sessions.get(conn.name)
        if not conns or conn not in conns:
            return False
        conns.remove(conn)
        if conns:
            return False
        del self._sessions[conn.name]
        return True

    def arrive(self, conn: Routed) -> Deferred[bool]:
        return defer.succeed(self.attach(conn))

    def leave(self, conn: Routed) -> Deferred[bool]:
        return defer.succeed(self.detach(conn))

    def presence_changes(self, came_online: Callable[[str], None],
                         went_offline: Callable[[str, int], None]) -> None:
        """In one process every change comes from attach and detach: nothing to report."""

    def names(self) -> list[str]:
        """The users with a session here."""
        return list(self._sessions)

    def names_set(self) -> KeysView[str]:
        """The users with a session here (a live view)."""
        return self._sessions.keys()

    def push(self, names: Iterable[str], payload: bytes) -> None:
        sessions = self._sessions
        for name in names:
            # A copy: a connection that fails while sending may detach at once.
            for conn in tuple(sessions.get(name, ())):
                conn.push(payload)

    def log_advanced(self, name: str, user_seq: int, entry: LogEntry | None,
                     body: bytes | None) -> None:
        for conn in tuple(self._sessions.get(name, ())):
            conn.log_advanced(user_seq, entry, body)

    def online(self, names: Iterable[str]) -> Deferred[frozenset[str]]:
        sessions = self._sessions
        return defer.succeed(frozenset(name for name in names if name in sessions))

    def online_count(self) -> int:
        return len(self._sessions)

    def sessions(self, name: str) -> tuple[Routed, ...]:
        return tuple(self._sessions.get(name, ()))
