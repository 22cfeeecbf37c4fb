"""The Authenticator's decisions over the real store and limits (SQLite and PostgreSQL): attempts
reserved before hashing, registration checks before hashing, normalised passwords, rehashing,
the trusted address, and the failed sign-in log line."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from chatproto.server.limits import LimitSettings, address_key
from chatproto.server.login import Authenticator, Decision
from chatproto.server.metrics import ServerStats
from chatproto.server.passwords import (
    Argon2Parameters,
    HasherBusy,
    PasswordHasher,
    Priority,
    hash_password,
    phc_parameters,
    verify_password,
)
from chatproto.storage.database import Database
from chatproto.storage.store import ChatStore
from chatproto.wire.errors import ErrorCode
from chatproto.wire.handshake import CredentialsReceived
from tests.server.conftest import EPOCH, FAST

PASSWORD = "correct horse battery"
DEVICE = b"d" * 16


def signin(name: str, password: str = PASSWORD) -> CredentialsReceived:
    return CredentialsReceived(False, name, password, DEVICE)


def register(name: str, password: str = PASSWORD) -> CredentialsReceived:
    return CredentialsReceived(True, name, password, DEVICE)


class GatedHasher:
    """Hashes with FAST at once, but holds each verify's answer until the test opens the gate
    (so many attempts are in flight at the same moment). Counts the work asked of it."""

    params = FAST

    def __init__(self) -> None:
        self.verifies = 0
        self.hashes: list[Priority] = []
        self.held: list[tuple[Deferred[bool], bool]] = []
        self.gated = False
        self.busy = False
        self.on_verify: Callable[[], None] = lambda: None

    def verify(self, password: str, phc: str | None, *, key: str | None = None) -> Deferred[bool]:
        if self.busy:
            return defer.fail(HasherBusy(key))
        self.verifies += 1
        result = phc is not None and verify_password(password, phc)
        d: Deferred[bool] = Deferred()
        if self.gated:
            self.held.append((d, result))
            self.on_verify()
        else:
            d.callback(result)
        return d

    def hash(self, password: str, *, key: str | None = None,
             priority: Priority = Priority.REGISTER) -> Deferred[str]:
        if self.busy:
            return defer.fail(HasherBusy(key))
        self.hashes.append(priority)
        return defer.succeed(hash_password(password, FAST))

    def needs_rehash(self, phc: str) -> bool:
        return phc_parameters(phc) != FAST

    def open_gate(self) -> None:
        held, self.held = self.held, []
        self.gated = False
        for d, result in held:
            d.callback(result)


@dataclass
class World:
    auth: Authenticator
    store: ChatStore
    hasher: GatedHasher
    clock: Clock
    settings: LimitSettings

    def decide(self, creds: CredentialsReceived, ip: str = "192.0.2.1") -> Deferred[Decision]:
        return self.auth.authenticate(creds, ip)

    async def add_user(self, name: str, password: str = PASSWORD,
                       params: Argon2Parameters = FAST) -> str:
        phc = hash_password(password, params)
        await self.store.create_user(name, phc, 1)
        return phc


def make_world(db: Database, hasher: Any = None, **settings: Any) -> World:
    clock = Clock()
    clock.advance(EPOCH)
    limits = LimitSettings(**settings)
    store = ChatStore(db)
    hasher = hasher or GatedHasher()
    auth = Authenticator(clock=clock, store=store, hasher=hasher, limits=limits,
                         stats=ServerStats())
    return World(auth, store, hasher, clock, limits)


async def at_once(w: World, attempts: list[tuple[CredentialsReceived, str]]) -> list[Decision]:
    """Start every attempt; open the hasher's gate only when each one either waits for its
    password check or has been decided without one; return the decisions."""
    w.hasher.gated = True
    everyone_waits: Deferred[None] = Deferred()
    decided = 0

    def check() -> None:
        if len(w.hasher.held) + decided == len(attempts) and not everyone_waits.called:
            everyone_waits.callback(None)

    def one_decided(decision: Decision) -> Decision:
        nonlocal decided
        decided += 1
        check()
        return decision

    w.hasher.on_verify = check
    ds = [w.decide(creds, ip).addCallback(one_decided) for creds, ip in attempts]
    await everyone_waits
    w.hasher.open_gate()
    return list(await defer.gatherResults(ds))


@pytest_twisted.ensureDeferred
async def test_simultaneous_guesses_on_one_account(database: Database) -> None:
    """60 wrong-password sign-ins for one account at the same moment (from 60 addresses) get
    at most the account limit's number of password checks; every other one is TRY_LATER."""
    w = make_world(database)
    await w.add_user("alice")
    decisions = await at_once(w, [(signin("alice", "wrong guess"), f"198.51.100.{i}")
                                  for i in range(60)])
    assert w.hasher.verifies == w.settings.account_failures
    codes = [d.code for d in decisions]
    assert codes.count(ErrorCode.AUTH_FAILED) == w.settings.account_failures
    assert codes.count(ErrorCode.TRY_LATER) == 60 - w.settings.account_failures
    assert all(d.retry_after_ms > 0 for d in decisions if d.code == ErrorCode.TRY_LATER)


@pytest_twisted.ensureDeferred
async def test_simultaneous_guesses_from_one_address(database: Database) -> None:
    """60 sign-ins for 60 accounts from one address at the same moment get at most the
    per-address limit's number of password checks."""
    w = make_world(database, ip_failures=12)
    decisions = await at_once(w, [(signin(f"user{i}", "wrong guess"), "203.0.113.9")
                                  for i in range(60)])
    assert w.hasher.verifies == 12
    assert [d.code for d in decisions].count(ErrorCode.TRY_LATER) == 48


@pytest_twisted.ensureDeferred
async def test_a_success_releases_its_reservation(database: Database) -> None:
    """Good sign-ins do not use up the address's failure budget; wrong ones do."""
    w = make_world(database, ip_failures=3)
    await w.add_user("alice")
    for _ in range(10):
        assert (await w.decide(signin("alice"))).ok
    for _ in range(3):
        assert (await w.decide(signin("alice", "wrong guess"))).code == ErrorCode.AUTH_FAILED
    assert (await w.decide(signin("alice"))).code == ErrorCode.TRY_LATER


@pytest_twisted.ensureDeferred
async def test_unknown_user_and_wrong_password_do_the_same_work(database: Database) -> None:
    """An unknown name and a wrong password: one password check each, no hash, the same
    decision."""
    w = make_world(database)
    await w.add_user("alice")
    wrong = await w.decide(signin("alice", "wrong guess"))
    unknown = await w.decide(signin("nobody", "wrong guess"))
    assert wrong == unknown
    assert w.hasher.verifies == 2 and w.hasher.hashes == []


@pytest_twisted.ensureDeferred
async def test_register_in_nfc_sign_in_in_nfd(database: Database) -> None:
    """A password registered in NFC signs in when typed in NFD (and the other way round),
    with the real Argon2id hasher."""
    from twisted.internet import reactor

    hasher = PasswordHasher(reactor, FAST)
    hasher.start()
    try:
        w = make_world(database, hasher=hasher)
        nfc = "s\u00e9same \u00f6ffne dich"
        nfd = unicodedata.normalize("NFD", nfc)
        assert nfc != nfd
        assert (await w.decide(register("alice", nfc))).ok
        assert (await w.decide(signin("alice", nfd))).ok
        assert (await w.decide(register("bob", nfd))).ok
        assert (await w.decide(signin("bob", nfc))).ok
        assert not (await w.decide(signin("bob", nfc + "!"))).ok
    finally:
        hasher.stop()


@pytest_twisted.ensureDeferred
async def test_registration_attempts_are_limited_before_hashing(database: Database) -> None:
    """Enumerating names by registering them from one address: NAME_TAKEN without hashing
    anything, and every attempt counts, so TRY_LATER after registrations_per_ip attempts."""
    w = make_world(database, registrations_per_ip=10)
    for i in range(60):
        await w.store.create_user(f"user{i}", "$argon2id$not-used", 1)
    decisions = [await w.decide(register(f"user{i}"), "192.0.2.50") for i in range(60)]
    codes = [d.code for d in decisions]
    assert codes[:10] == [ErrorCode.NAME_TAKEN] * 10
    assert codes[10:] == [ErrorCode.TRY_LATER] * 50
    assert w.hasher.hashes == []
    assert (await w.decide(register("fresh"), "192.0.2.50")).code == ErrorCode.TRY_LATER


@pytest_twisted.ensureDeferred
async def test_registration_is_limited_per_name_from_any_address(database: Database) -> None:
    """One name tried from many addresses is limited too."""
    w = make_world(database)
    codes = [(await w.decide(register("wanted", "short"), f"198.51.100.{i}")).code
             for i in range(8)]
    assert codes[:5] == [ErrorCode.INVALID_PASSWORD] * 5
    assert codes[5:] == [ErrorCode.TRY_LATER] * 3


@pytest_twisted.ensureDeferred
async def test_cheap_registration_checks_come_before_hashing(database: Database) -> None:
    """Reserved names, policy failures and taken names are refused without a hash; a new
    account is hashed once, at registration priority."""
    w = make_world(database)
    await w.add_user("alice")
    assert (await w.decide(register("admin"))).code == ErrorCode.INVALID_NAME
    assert (await w.decide(register("bob", "short"))).code == ErrorCode.INVALID_PASSWORD
    assert (await w.decide(register("alice"))).code == ErrorCode.NAME_TAKEN
    assert w.hasher.hashes == []
    assert (await w.decide(register("bob"))).ok
    assert w.hasher.hashes == [Priority.REGISTER]


@pytest_twisted.ensureDeferred
async def test_hasher_busy_is_try_later_and_releases_the_reservation(
        database: Database) -> None:
    """When the address has too many hashes queued, a sign-in is TRY_LATER and its
    reservation is given back (the password was never checked); a registration is
    TRY_LATER too and creates nothing."""
    w = make_world(database)
    w.hasher.busy = True
    decision = await w.decide(signin("alice"), "192.0.2.77")
    assert decision.code == ErrorCode.TRY_LATER and decision.retry_after_ms > 0
    now_ms = w.auth.now_ms()
    assert await w.auth.failures.count(now_ms, "account", "alice") == 0
    assert await w.auth.failures.count(now_ms, "ip", address_key("192.0.2.77")) == 0
    refused = await w.decide(register("newcomer"), "192.0.2.77")
    assert refused.code == ErrorCode.TRY_LATER and refused.retry_after_ms > 0
    assert await w.store.get_user("newcomer") is None


@pytest_twisted.ensureDeferred
async def test_sign_in_rehashes_with_the_servers_parameters(database: Database) -> None:
    """An account hashed with other parameters (e.g. by the admin tool) is rehashed with the
    server's at its next good sign-in; a wrong password changes nothing."""
    w = make_world(database)
    old = await w.add_user("alice", params=Argon2Parameters(memory_kib=128, iterations=1))
    assert not (await w.decide(signin("alice", "wrong guess"))).ok
    assert await w.store.get_password_hash("alice") == old
    assert (await w.decide(signin("alice"))).ok
    new = await w.store.get_password_hash("alice")
    assert new is not None and new != old
    assert phc_parameters(new) == FAST and verify_password(PASSWORD, new)
    assert w.hasher.hashes == [Priority.SIGNIN]
    assert (await w.decide(signin("alice"))).ok
    assert w.hasher.hashes == [Priority.SIGNIN]  # once only


@pytest_twisted.ensureDeferred
async def test_registering_does_not_trust_the_address(database: Database) -> None:
    """D12: registering is not a sign-in. An account registered from an address (and never
    signed in) has no trusted address: when someone elsewhere has locked it, the registering
    address is refused too. Only a completed sign-in (record_login) makes an address trusted."""
    w = make_world(database, account_failures=3)
    home = "192.0.2.60"
    assert (await w.decide(register("alice"), home)).ok
    user = await w.store.get_user("alice")
    assert user is not None and user.last_login_ip is None
    for i in range(3):
        await w.decide(signin("alice", "wrong guess"), f"203.0.113.{i}")
    assert (await w.decide(signin("alice"), home)).code == ErrorCode.TRY_LATER
    await w.auth.record_login("alice", home)  # as after an earlier completed sign-in
    assert (await w.decide(signin("alice"), home)).ok


@pytest_twisted.ensureDeferred
async def test_failed_sign_ins_are_logged_in_one_line(database: Database) -> None:
    """Each failed sign-in logs one line with the name, the address and the reason code (and
    never the password); good sign-ins log no such line."""
    w = make_world(database, account_failures=2, ip_failures=100)
    await w.add_user("alice")
    lines: list[str] = []
    everything: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        text = formatEvent(event)
        everything.append(text + repr(event))
        if "failed sign-in" in text:
            lines.append(text)

    globalLogPublisher.addObserver(observer)
    try:
        await w.decide(signin("alice", "Secret-guess-1"), "203.0.113.5")
        await w.decide(signin("nobody", "Secret-guess-2"), "2001:db8::5")
        await w.decide(signin("alice", "Secret-guess-3"), "203.0.113.5")
        await w.decide(signin("alice", "Secret-guess-4"), "203.0.113.5")
        await w.decide(signin("alice"), "203.0.113.6")
    finally:
        globalLogPublisher.removeObserver(observer)
    assert lines == [
        "chatproto: failed sign-in for alice from 203.0.113.5: AUTH_FAILED",
        "chatproto: failed sign-in for nobody from 2001:db8::5: AUTH_FAILED",
        "chatproto: failed sign-in for alice from 203.0.113.5: AUTH_FAILED",
        "chatproto: failed sign-in for alice from 203.0.113.5: TRY_LATER",
        "chatproto: failed sign-in for alice from 203.0.113.6: TRY_LATER",
    ]
    assert not any("Secret-guess" in text or PASSWORD in text for text in everything)


@pytest.mark.parametrize("line", [
    "2026-12-01T14:28:59+0000 [chatproto.server.login#info] chatproto: failed sign-in for "
    "alice from 203.0.113.5: AUTH_FAILED",
    "2026-12-01T14:28:59+0000 [chatproto.server.login#info] chatproto: failed sign-in for "
    "a.b-c_d from 2001:db8::5: TRY_LATER",
])
def test_the_fail2ban_expression_matches_the_line(line: str) -> None:
    """The failregex given to operators (with fail2ban's <HOST> as a plain address group)
    finds the name and the address in a twistd log line."""
    import re

    failregex = r"chatproto: failed sign-in for \S+ from <HOST>: [A-Z_]+$"
    match = re.search(failregex.replace("<HOST>", r"(?P<host>[0-9A-Fa-f.:]+)"), line)
    assert match is not None
    assert match.group("host") in ("203.0.113.5", "2001:db8::5")


@pytest_twisted.ensureDeferred
async def test_sixty_connections_guessing_at_once_over_tcp(
        loopback: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end (real TCP, store, Argon2id hasher): 60 connections send a wrong-password
    Signin for one account at the same moment. At most the account limit's number of
    password checks happen; every other answer is TRY_LATER."""
    from chatproto.server import passwords
    from tests.server.wireclient import connect

    lb = loopback
    await lb.store.create_user("alice", hash_password(PASSWORD, FAST), 1)
    checked: list[str] = []  # appended from the hashing threads (list.append is atomic)

    def counting_verify(password: str, phc: str) -> bool:
        checked.append(phc)
        return verify_password(password, phc)

    monkeypatch.setattr(passwords, "verify_password", counting_verify)
    clients = [await connect(lb.reactor, lb.port) for _ in range(60)]
    for client in clients:
        await client.trust()
    answers = await defer.gatherResults([
        defer.ensureDeferred(client.signin("alice", "wrong guess")) for client in clients])
    for client in clients:
        await client.close()
    checks = len(checked)
    assert 0 < checks <= lb.server.limits.account_failures
    codes = [answer.code for answer in answers]
    assert codes.count(ErrorCode.AUTH_FAILED) == checks
    assert codes.count(ErrorCode.TRY_LATER) == 60 - checks
