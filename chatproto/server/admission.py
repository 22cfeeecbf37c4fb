"""Connection admission: handshakes in progress and connections per address.

A connection asks :meth:`Admission.admit` when it opens and gets a :class:`Ticket`; the ticket
says whether the connection is refused, and is told when the handshake ends and when the
connection closes (both idempotent, so a connection cannot be counted twice or released
twice). Sign-in and registration limits are another matter (:mod:`chatproto.server.limits`).
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol as TypingProtocol


class Ticket(TypingProtocol):
    """One connection's admission."""

    #: Why the connection is refused, or None if it is admitted.
    refusal: str | None

    def handshake_done(self) -> None:
        """The handshake finished (the session started); it no longer counts as one."""
        ...

    def release(self) -> None:
        """The connection closed."""
        ...


class Admission(TypingProtocol):
    """Decides which new connections are served."""

    def admit(self, ip: str) -> Ticket:
        """Count a new connection from ``ip`` (release the ticket even if it is refused)."""
        ...

    def handshakes_in_progress(self) -> int:
        ...

    def open_connections(self) -> int:
        ...


class LocalAdmission:
    """Counts in process memory: at most ``max_handshakes`` handshakes at once, and at most
    ``max_per_ip`` connections at once from one address."""

    def __init__(self, max_handshakes: int, max_per_ip: int) -> None:
        self.max_handshakes = max_handshakes
        self.max_per_ip = max_per_ip
        self.handshakes = 0
        self.per_ip: Counter[str] = Counter()

    def admit(self, ip: str) -> LocalTicket:
        self.handshakes += 1
        self.per_ip[ip] += 1
        refusal = None
        if self.handshakes > self.max_handshakes:
            refusal = "too many handshakes in progress; try again soon"
        elif self.per_ip[ip] > self.max_per_ip:
            refusal = "too many connections from your address"
        return LocalTicket(self, ip, refusal)

    def handshakes_in_progress(self) -> int:
        return self.handshakes

    def open_connections(self) -> int:
        return sum(self.per_ip.values())


class LocalTicket:
    """A :class:`LocalAdmission` ticket."""

    __slots__ = ("_admission", "_handshaking", "_open", "ip", "refusal")

    def __init__(self, admission: LocalAdmission, ip: str, refusal: str | None) -> None:
        self._admission = admission
        self.ip = ip
        self.refusal = refusal
        self._handshaking = True
        self._open = True

    def handshake_done(self) -> None:
        if self._handshaking:
            self._handshaking = False
            self._admission.handshakes -= 1

    def release(self) -> None:
        if not self._open:
            return
        self._open = False
        self.handshake_done()
        per_ip = self._admission.per_ip
        per_ip[self.ip] -= 1
        if per_ip[self.ip] <= 0:
            del per_ip[self.ip]
