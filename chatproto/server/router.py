"""Who is online where: an interface, and the in-process implementation.

A multi-node deployment replaces :class:`LocalRouter` (for example with PostgreSQL and Redis
pub/sub) without touching the protocol code, which only uses :class:`Router`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol as TypingProtocol


class Connection(TypingProtocol):
    """What the router needs of a signed-in connection."""

    name: str | None
    closed: bool


class Router(TypingProtocol):
    """Tracks the signed-in sessions of every user (several devices each)."""

    def attach(self, name: str, conn: Connection) -> bool:
        """Add a session; True if it is the user's first (the user came online)."""
        ...

    def detach(self, name: str, conn: Connection) -> bool:
        """Remove a session; True if it was the user's last (the user went offline)."""
        ...

    def connections(self, name: str) -> Iterable[Connection]:
        """The user's sessions on this node."""
        ...

    def is_online(self, name: str) -> bool:
        """Whether the user has at least one session."""
        ...

    def online_count(self) -> int:
        """Users with at least one session."""
        ...


class LocalRouter:
    """The in-process router: a dict of name to the set of that user's connections."""

    def __init__(self) -> None:
        self._sessions: dict[str, list[Connection]] = {}

    def attach(self, name: str, conn: Connection) -> bool:
        conns = self._sessions.setdefault(name, [])
        conns.append(conn)
        return len(conns) == 1

    def detach(self, name: str, conn: Connection) -> bool:
        conns = self._sessions.get(name)
        if not conns or conn not in conns:
            return False
        conns.remove(conn)
        if conns:
            return False
        del self._sessions[name]
        return True

    def connections(self, name: str) -> Iterable[Connection]:
        return tuple(self._sessions.get(name, ()))

    def is_online(self, name: str) -> bool:
        return name in self._sessions

    def online_count(self) -> int:
        return len(self._sessions)
