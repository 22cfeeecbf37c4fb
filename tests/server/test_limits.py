"""The login limits over the real database (SQLite and PostgreSQL), on a task.Clock, and the
address keys they count under."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from chatproto.server.limits import (
    REGISTRATIONS_PER_NAME,
    DatabaseLoginLimits,
    LimitSettings,
    address_key,
)
from chatproto.storage.database import Database
from chatproto.storage.login_failures import LoginFailureStore
from tests.server.conftest import EPOCH


@pytest.mark.parametrize(("ip", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("fe80::1%eth0", "fe80::/64"),
    ("not an address", "not an address"),
])
def test_address_key(ip: str, key: str) -> None:
    """IPv4 addresses count alone (also mapped into IPv6); IPv6 addresses count per /64."""
    assert address_key(ip) == key


class Limits:
    """DatabaseLoginLimits over a started database and a Clock."""

    def __init__(self, db: Database, clock: Clock, purge_interval: float = 600,
                 **settings: float) -> None:
        self.store = LoginFailureStore(db)
        self.limits = DatabaseLoginLimits(
            self.store, LimitSettings(**settings), clock.seconds,  # type: ignore[arg-type]
            purge_interval=purge_interval)


def clock() -> Clock:
    c = Clock()
    c.advance(EPOCH)
    return c


@pytest_twisted.ensureDeferred
async def test_account_limit_spares_the_trusted_address(database: Database) -> None:
    """Account failures limit sign-ins from anywhere except the account's last good address
    (compared by /64 for IPv6); the wait is the rest of the window; a success clears the
    account's failures."""
    lim = Limits(database, clock(), account_failures=2, ip_failures=100).limits
    assert await lim.reserve_signin("alice", "203.0.113.1", None) == 0
    assert await lim.reserve_signin("alice", "203.0.113.2", "10.0.0.1") == 0
    assert await lim.reserve_signin("alice", "203.0.113.3", None) == 900_000
    assert await lim.reserve_signin("alice", "203.0.113.3", "10.0.0.1") == 900_000
    assert await lim.reserve_signin("alice", "10.0.0.1", "10.0.0.1") == 0
    assert await lim.reserve_signin("alice", "2001:db8::99", "2001:db8::1") == 0
    await lim.signin_succeeded("alice", "10.0.0.1")
    assert await lim.reserve_signin("alice", "203.0.113.3", None) == 0


@pytest_twisted.ensureDeferred
async def test_address_limit_applies_from_the_trusted_address_too(database: Database) -> None:
    """The per-address limit counts every account, the trusted address included, and ends
    with its window."""
    c = clock()
    lim = Limits(database, c, ip_failures=2, ip_window=30).limits
    assert await lim.reserve_signin("a", "198.51.100.4", None) == 0
    assert await lim.reserve_signin("b", "198.51.100.4", None) == 0
    assert await lim.reserve_signin("c", "198.51.100.4", "198.51.100.4") == 30_000
    c.advance(30)
    assert await lim.reserve_signin("c", "198.51.100.4", "198.51.100.4") == 0


@pytest_twisted.ensureDeferred
async def test_ipv6_neighbours_share_one_address_limit(database: Database) -> None:
    """Every address of one IPv6 /64 counts against one per-address limit; the next /64 has
    its own."""
    lim = Limits(database, clock(), ip_failures=2, account_failures=100).limits
    assert await lim.reserve_signin("a", "2001:db8:0:1::1", None) == 0
    assert await lim.reserve_signin("b", "2001:db8:0:1:ffff::2", None) == 0
    assert await lim.reserve_signin("c", "2001:db8:0:1:1234:5678:9abc:def0", None) > 0
    assert await lim.reserve_signin("c", "2001:db8:0:2::1", None) == 0


@pytest_twisted.ensureDeferred
async def test_success_releases_its_reservation(database: Database) -> None:
    """A reservation is released on success (a good sign-in is not a failure of its address)
    and when the password was never checked; a failure keeps it."""
    lim = Limits(database, clock(), ip_failures=2, account_failures=2).limits
    for _ in range(5):
        assert await lim.reserve_signin("alice", "192.0.2.5", None) == 0
        await lim.signin_succeeded("alice", "192.0.2.5")
    assert await lim.reserve_signin("bob", "192.0.2.5", None) == 0
    await lim.signin_unchecked("bob", "192.0.2.5")
    assert await lim.reserve_signin("bob", "192.0.2.5", None) == 0  # a failure: kept
    assert await lim.reserve_signin("bob", "192.0.2.5", None) == 0
    assert await lim.reserve_signin("carol", "192.0.2.5", None) > 0


@pytest_twisted.ensureDeferred
async def test_limits_survive_a_restart_and_are_shared(database_uri: str) -> None:
    """Counters live in the database: a new limits object (a restarted server) on the same
    data still refuses, and so does another process's (another pool on the same data)."""
    c = clock()
    first = Database.from_uri(database_uri)
    await first.start()
    try:
        lim = Limits(first, c, account_failures=3).limits
        for _ in range(3):
            assert await lim.reserve_signin("alice", "192.0.2.9", None) == 0
    finally:
        first.close()
    dbs = [Database.from_uri(database_uri) for _ in range(2)]
    for db in dbs:
        await db.start()
    try:
        for db in dbs:
            again = Limits(db, c, account_failures=3).limits
            assert await again.reserve_signin("alice", "192.0.2.10", None) == 900_000
            assert await again.reserve_registration("newname", "192.0.2.10") == 0
    finally:
        for db in dbs:
            db.close()


@pytest_twisted.ensureDeferred
async def test_every_registration_attempt_counts_per_address_and_name(
        database: Database) -> None:
    """Each registration attempt counts (not only the successful ones), per address and per
    name from any address."""
    c = clock()
    lim = Limits(database, c, registrations_per_ip=3, registration_window=3600).limits
    for i in range(3):
        assert await lim.reserve_registration(f"name{i}", "192.0.2.20") == 0
    assert await lim.reserve_registration("name9", "192.0.2.20") == 3_600_000
    for i in range(REGISTRATIONS_PER_NAME):
        assert await lim.reserve_registration("wanted", f"198.51.100.{i}") == 0
    assert await lim.reserve_registration("wanted", "198.51.100.200") == 3_600_000
    assert await lim.reserve_registration("other", "198.51.100.200") == 0
    c.advance(3600)
    assert await lim.reserve_registration("wanted", "192.0.2.20") == 0


@pytest_twisted.ensureDeferred
async def test_ended_windows_are_deleted_before_a_later_reservation(
        database: Database) -> None:
    """The table does not grow with every name ever tried: once per purge interval, ended
    windows are deleted (running ones kept)."""
    c = clock()
    t = Limits(database, c, purge_interval=100, account_window=60, ip_window=60)
    for i in range(20):
        assert await t.limits.reserve_signin(f"user{i}", f"192.0.2.{i}", None) == 0
    c.advance(150)
    assert await t.limits.reserve_signin("late", "192.0.2.200", None) == 0
    assert await t.store.purge(int(c.seconds() * 1000)) == 0  # only "late" is left, running
    assert await t.store.count(int(c.seconds() * 1000), "account", "late") == 1
