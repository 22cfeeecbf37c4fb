"""An in-memory LoginLimits for the synchronous adapter tests (test_protocol.py).

The real limits keep their counters in the database (DatabaseLoginLimits); this double keeps
the same rules in a dict and answers with fired Deferreds, so a test needs no reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

from chatproto.server.limits import REGISTRATIONS_PER_NAME, LimitSettings, address_key


class MemoryLoginLimits:
    """The rules of DatabaseLoginLimits over a dict of (scope, key) -> [window end, count]."""

    def __init__(self, clock: Any, settings: LimitSettings) -> None:
        self.clock = clock
        self.settings = settings
        self.counters: dict[tuple[str, str], list[float]] = {}

    def _reserve(self, wanted: list[tuple[str, str, float, float]]) -> Deferred[int]:
        now = self.clock.seconds()
        waits = []
        for scope, key, limit, _ in wanted:
            end, count = self.counters.get((scope, key), [0.0, 0])
            if end > now and count >= limit:
                waits.append(max(1, int((end - now) * 1000)))
        if waits:
            return defer.succeed(max(waits))
        for scope, key, _, window in wanted:
            entry = self.counters.get((scope, key))
            if entry is None or entry[0] <= now:
                self.counters[(scope, key)] = [now + window, 1]
            else:
                entry[1] += 1
        return defer.succeed(0)

    def _release(self, scope: str, key: str) -> None:
        entry = self.counters.get((scope, key))
        if entry is not None and entry[1] > 0:
            entry[1] -= 1

    def reserve_signin(self, name: str, ip: str, trusted_ip: str | None) -> Deferred[int]:
        s = self.settings
        trusted = trusted_ip is not None and address_key(trusted_ip) == address_key(ip)
        return self._reserve([
            ("account", name, float("inf") if trusted else s.account_failures, s.account_window),
            ("ip", address_key(ip), s.ip_failures, s.ip_window)])

    def signin_succeeded(self, name: str, ip: str) -> Deferred[None]:
        self._release("ip", address_key(ip))
        self.counters.pop(("account", name), None)
        return defer.succeed(None)

    def signin_unchecked(self, name: str, ip: str) -> Deferred[None]:
        self._release("account", name)
        self._release("ip", address_key(ip))
        return defer.succeed(None)

    def reserve_registration(self, name: str, ip: str) -> Deferred[int]:
        s = self.settings
        return self._reserve([
            ("register-ip", address_key(ip), s.registrations_per_ip, s.registration_window),
            ("register-name", name, REGISTRATIONS_PER_NAME, s.registration_window)])
