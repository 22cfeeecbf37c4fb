"""Rate limits and connection caps, on an injected clock (tests use task.Clock).

The login limits (failed sign-ins per account and per address, registration attempts per
address and per name) sit behind :class:`LoginLimits`. :class:`DatabaseLoginLimits` keeps
their counters in the database, so a restart does not reset them and server processes that
share a database share them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatproto.storage.login_failures import UNLIMITED, Counter, LoginFailureStore
from chatproto.wire.handshake import DEFAULT_MAX_ATTEMPTS

log = Logger()

_IPV6_NETWORK_MASK = ~((1 << 64) - 1)


def address_key(ip: str) -> str:
    """The key the per-address limits count under: an IPv4 address itself (also when mapped
    into IPv6), an IPv6 address's /64 (one subscriber usually holds a whole /64)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return f"{ipaddress.IPv6Address(int(addr) & _IPV6_NETWORK_MASK)}/64"
    return str(addr)


@dataclass
class LimitSettings:
    """Every limit the server enforces; the tap's options set them."""

    handshake_timeout: float = 10.0
    idle_timeout: float = 5.0
    max_handshakes: int = 256
    max_connections_per_ip: int = 64
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    #: Sign-in attempts per account per window that may fail (counted when they start).
    account_failures: int = 10
    account_window: float = 900.0
    #: The same per client address (an IPv4 address, an IPv6 /64).
    ip_failures: int = 50
    ip_window: float = 900.0
    #: Registration attempts (whatever their outcome) per client address per window.
    registrations_per_ip: int = 10
    registration_window: float = 3600.0
    ping_interval: float = 30.0
    ping_timeout: float = 10.0
    max_image_bytes: int = 10 * 1024 * 1024
    #: Requests of one connection waiting for an answer (the database) before the server
    #: stops reading from it; it reads again below this number.
    max_requests_in_flight: int = 32
    #: Bytes the server may still write to a connection whose transport buffer is above its
    #: high-water mark (the rest of an image being delivered, answers, receipts, typing);
    #: beyond them it is aborted at once. At least max_image_bytes + 1 MiB (the tap checks).
    max_write_backlog: int = 16 * 1024 * 1024
    #: Seconds a connection's transport buffer may stay above its high-water mark (the peer
    #: reads nothing, or too slowly) before the connection is aborted, buffers released.
    write_stall_timeout: float = 60.0
    #: Chat messages per second one connection may send, on average (0: no limit) ...
    message_rate: float = 200.0
    #: ... and at once after a pause (the token bucket's size).
    message_burst: int = 1000


class LoginLimits(Protocol):
    """The login limits: reserve an attempt before its password is hashed.

    A reservation fires 0 when the attempt may go ahead (it is counted already), or the
    milliseconds until a window ends when a limit applies (nothing was counted).
    """

    def reserve_signin(self, name: str, ip: str, trusted_ip: str | None) -> Deferred[int]:
        """Count a sign-in attempt on the account and the address; the account's limit does
        not apply from ``trusted_ip`` (where the account last signed in)."""

    def signin_succeeded(self, name: str, ip: str) -> Deferred[None]:
        """The password was right: release the address's reservation and clear the
        account's failures."""

    def signin_unchecked(self, name: str, ip: str) -> Deferred[None]:
        """The password was never checked (the hasher refused the job): release both."""

    def reserve_registration(self, name: str, ip: str) -> Deferred[int]:
        """Count a registration attempt (whatever its outcome) on the address and the name."""


#: Registration attempts per name in one registration window (from any address).
REGISTRATIONS_PER_NAME = 5
#: Seconds between deletions of ended windows from the database.
PURGE_INTERVAL = 600.0


class DatabaseLoginLimits:
    """:class:`LoginLimits` with the counters in the database (table ``login_failures``).

    Memory does not grow with the number of names or addresses tried: nothing is held in
    the process, and a window is deleted only after it has ended (at most every
    ``purge_interval`` seconds, before a reservation).
    """

    def __init__(self, store: LoginFailureStore, settings: LimitSettings,
                 now: Callable[[], float], *,
                 registrations_per_name: int = REGISTRATIONS_PER_NAME,
                 purge_interval: float = PURGE_INTERVAL) -> None:
        self.store = store
        self.settings = settings
        self._now = now
        self.registrations_per_name = registrations_per_name
        self.purge_interval = purge_interval
        self._next_purge = now() + purge_interval

    def _now_ms(self) -> int:
        return int(self._now() * 1000)

    def _reserve(self, counters: list[Counter]) -> Deferred[int]:
        now_ms = self._now_ms()
        if self._now() < self._next_purge:
            return self.store.reserve(now_ms, counters)
        self._next_purge = self._now() + self.purge_interval
        d = self.store.purge(now_ms)
        d.addErrback(lambda f: log.failure("could not delete ended login-limit windows", f))
        d.addCallback(lambda _: self.store.reserve(now_ms, counters))
        return d

    def reserve_signin(self, name: str, ip: str, trusted_ip: str | None) -> Deferred[int]:
        s = self.settings
        address = address_key(ip)
        trusted = trusted_ip is not None and address_key(trusted_ip) == address
        return self._reserve([
            Counter("account", name, UNLIMITED if trusted else s.account_failures,
                    _ms(s.account_window)),
            Counter("ip", address, s.ip_failures, _ms(s.ip_window)),
        ])

    def signin_succeeded(self, name: str, ip: str) -> Deferred[None]:
        return self.store.release(self._now_ms(), [("ip", address_key(ip))],
                                  forget=[("account", name)])

    def signin_unchecked(self, name: str, ip: str) -> Deferred[None]:
        return self.store.release(self._now_ms(), [("account", name), ("ip", address_key(ip))])

    def reserve_registration(self, name: str, ip: str) -> Deferred[int]:
        s = self.settings
        window = _ms(s.registration_window)
        return self._reserve([
            Counter("register-ip", address_key(ip), s.registrations_per_ip, window),
            Counter("register-name", name, self.registrations_per_name, window),
        ])


class TokenBucket:
    """A token bucket on an injected clock: ``rate`` tokens per second, at most ``burst``
    held; it starts full. ``rate`` 0 means no limit."""

    __slots__ = ("_now", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._now = now
        self._tokens = float(self.burst)
        self._stamp = now()

    def take(self) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there is one (nothing
        is taken then)."""
        if self.rate <= 0:
            return 0.0
        now = self._now()
        tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        # A microsecond's grace: clock readings near 1.7e9 s are rounded to about 0.2 us, and
        # a client that waited as long as it was told must get its token.
        if tokens + self.rate * 1e-6 >= 1.0:
            self._tokens = max(0.0, tokens - 1.0)
            return 0.0
        self._tokens = tokens
        return (1.0 - tokens) / self.rate


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
