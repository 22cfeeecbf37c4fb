"""Rate limits and connection caps, on an injected clock (tests use task.Clock)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Window:
    start: float
    count: int


class WindowLimiter:
    """At most ``limit`` events per key in a fixed window of ``window`` seconds.

    A key's window starts at its first event and ends ``window`` seconds later, so a limit
    always expires: nobody is locked out for longer than one window without new events.
    """

    def __init__(self, now: Callable[[], float], limit: int, window: float,
                 max_keys: int = 100_000) -> None:
        self._now = now
        self.limit = limit
        self.window = window
        self._max_keys = max_keys
        self._windows: dict[str, _Window] = {}

    def _current(self, key: str) -> _Window | None:
        w = self._windows.get(key)
        if w is not None and self._now() - w.start >= self.window:
            del self._windows[key]
            return None
        return w

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may act again; 0 if it may act now."""
        w = self._current(key)
        if w is None or w.count < self.limit:
            return 0.0
        return max(0.0, w.start + self.window - self._now())

    def hit(self, key: str) -> None:
        """Count one event for ``key``."""
        w = self._current(key)
        if w is None:
            if len(self._windows) >= self._max_keys:
                self._expire()
            self._windows[key] = _Window(self._now(), 1)
        else:
            w.count += 1

    def reset(self, key: str) -> None:
        self._windows.pop(key, None)

    def _expire(self) -> None:
        now = self._now()
        for key in [k for k, w in self._windows.items() if now - w.start >= self.window]:
            del self._windows[key]
        if len(self._windows) >= self._max_keys:  # still full: forget the oldest half
            oldest = sorted(self._windows, key=lambda k: self._windows[k].start)
            for key in oldest[: len(oldest) // 2]:
                del self._windows[key]


@dataclass
class LimitSettings:
    """Every limit the server enforces; the tap's options set them."""

    handshake_timeout: float = 10.0
    idle_timeout: float = 5.0
    max_handshakes: int = 256
    max_connections_per_ip: int = 64
    max_attempts: int = 5
    account_failures: int = 10
    account_window: float = 900.0
    ip_failures: int = 50
    ip_window: float = 900.0
    registrations_per_ip: int = 10
    registration_window: float = 3600.0
    ping_interval: float = 30.0
    ping_timeout: float = 10.0
    max_image_bytes: int = 10 * 1024 * 1024


class LoginLimits:
    """Failed-login limits per account and per IP, and registrations per IP.

    An account's failure limit does not apply from the address the account last signed in
    from successfully, so an attacker elsewhere cannot lock its owner out; and every limit
    ends with its window.
    """

    def __init__(self, now: Callable[[], float], settings: LimitSettings) -> None:
        self.account = WindowLimiter(now, settings.account_failures, settings.account_window)
        self.ip = WindowLimiter(now, settings.ip_failures, settings.ip_window)
        self.registrations = WindowLimiter(
            now, settings.registrations_per_ip, settings.registration_window
        )

    def signin_retry_after(self, name: str, ip: str, trusted_ip: str | None) -> float:
        wait = self.ip.retry_after(ip)
        if trusted_ip != ip:
            wait = max(wait, self.account.retry_after(name))
        return wait

    def signin_failed(self, name: str, ip: str) -> None:
        self.account.hit(name)
        self.ip.hit(ip)

    def signin_succeeded(self, name: str) -> None:
        self.account.reset(name)
