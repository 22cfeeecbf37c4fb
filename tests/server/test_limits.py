"""WindowLimiter and LoginLimits on a fake clock."""

from __future__ import annotations

from chatproto.server.limits import LimitSettings, LoginLimits, WindowLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limit_reached_then_window_ends() -> None:
    """``limit`` hits are allowed; then retry_after is the rest of the window; at its end
    the key may act again."""
    t = FakeTime()
    lim = WindowLimiter(t, limit=3, window=60)
    for _ in range(3):
        assert lim.retry_after("k") == 0
        lim.hit("k")
    t.now += 10
    assert lim.retry_after("k") == 50
    assert lim.retry_after("other") == 0
    t.now += 50
    assert lim.retry_after("k") == 0


def test_reset_forgets_a_key() -> None:
    """reset() clears a key's count at once."""
    t = FakeTime()
    lim = WindowLimiter(t, limit=1, window=60)
    lim.hit("k")
    assert lim.retry_after("k") > 0
    lim.reset("k")
    assert lim.retry_after("k") == 0


def test_key_table_is_bounded() -> None:
    """With max_keys keys tracked, expired windows are dropped first, then the oldest half;
    the table never grows past max_keys."""
    t = FakeTime()
    lim = WindowLimiter(t, limit=1, window=60, max_keys=4)
    for i in range(4):
        lim.hit(f"k{i}")
        t.now += 1
    lim.hit("new")
    assert len(lim._windows) <= 4
    assert lim.retry_after("new") > 0
    t.now += 100
    for i in range(10):
        lim.hit(f"x{i}")
        assert len(lim._windows) <= 4


def test_login_limits_account_and_trusted_ip() -> None:
    """Account failures limit sign-ins from anywhere except the account's last good IP; a
    success resets the account's count."""
    t = FakeTime()
    limits = LoginLimits(t, LimitSettings(account_failures=2, ip_failures=100))
    limits.signin_failed("alice", "6.6.6.6")
    limits.signin_failed("alice", "6.6.6.7")
    assert limits.signin_retry_after("alice", "6.6.6.8", trusted_ip="10.0.0.1") > 0
    assert limits.signin_retry_after("alice", "6.6.6.8", trusted_ip=None) > 0
    assert limits.signin_retry_after("alice", "10.0.0.1", trusted_ip="10.0.0.1") == 0
    limits.signin_succeeded("alice")
    assert limits.signin_retry_after("alice", "6.6.6.8", trusted_ip=None) == 0


def test_login_limits_per_ip_applies_even_from_trusted_ip() -> None:
    """The per-IP limit applies to every account, the trusted address included."""
    t = FakeTime()
    limits = LoginLimits(t, LimitSettings(ip_failures=2, ip_window=30))
    limits.signin_failed("a", "1.2.3.4")
    limits.signin_failed("b", "1.2.3.4")
    assert limits.signin_retry_after("c", "1.2.3.4", trusted_ip="1.2.3.4") == 30
    t.now += 30
    assert limits.signin_retry_after("c", "1.2.3.4", trusted_ip="1.2.3.4") == 0
