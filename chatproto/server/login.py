"""Sign-in and registration decisions: password checks, login limits, reserved names.

The connection asks :meth:`Authenticator.authenticate` for a :class:`Decision` once the
handshake has the credentials; nothing here knows about transports or frames.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatproto.server.limits import DatabaseLoginLimits, LimitSettings, LoginLimits, address_key
from chatproto.server.metrics import ServerStats
from chatproto.server.passwords import (
    HasherBusy,
    PasswordHasher,
    Priority,
    password_policy_error,
)
from chatproto.storage.login_failures import LoginFailureStore
from chatproto.storage.store import ChatStore, NameTaken
from chatproto.wire.errors import ErrorCode
from chatproto.wire.handshake import CredentialsReceived

log = Logger()

#: Names nobody may register: they would impersonate the service in a chat window.
RESERVED_NAMES = frozenset({"admin", "root", "server", "system", "chatproto"})

#: The one line logged per failed sign-in, for operators and fail2ban (never the password).
FAILED_SIGNIN_FORMAT = "chatproto: failed sign-in for {name} from {ip}: {code}"
#: Milliseconds a client waits when its address has too many password hashes queued.
HASHER_BUSY_RETRY_MS = 1000


@dataclass(frozen=True)
class Decision:
    """The answer to a Signin or register."""

    ok: bool
    code: ErrorCode = ErrorCode.AUTH_FAILED
    reason: str = ""
    retry_after_ms: int = 0


ACCEPT = Decision(True)
#: One answer for an unknown user and a wrong password: nothing tells them apart.
SIGNIN_FAILED = Decision(False, ErrorCode.AUTH_FAILED, "wrong name or password")
HASHER_BUSY = Decision(False, ErrorCode.TRY_LATER, "too many sign-ins from your address; "
                       "try again in a moment", HASHER_BUSY_RETRY_MS)


class Authenticator:
    """Decides sign-ins and registrations, and records successful logins.

    Every attempt is counted by the login limits *before* its password is hashed, so
    attempts sent at the same moment cannot all be checked.

    Args:
        failures: the database counters and the rehash write (default: over
            ``store.db``).
        login_limits: the limits (default: :class:`DatabaseLoginLimits` over ``failures``).
    """

    def __init__(self, *, clock: Any, store: ChatStore, hasher: PasswordHasher,
                 limits: LimitSettings, stats: ServerStats,
                 failures: LoginFailureStore | None = None,
                 login_limits: LoginLimits | None = None) -> None:
        self.clock = clock
        self.store = store
        self.hasher = hasher
        self.stats = stats
        self.settings = limits
        if failures is not None:
            self.failures = failures
        if login_limits is not None:
            self.login_limits = login_limits

    # Built on first use (unless given), so a store double with no database can run with
    # other limits set on the instance (tests/server/test_protocol.py does).
    @cached_property
    def failures(self) -> LoginFailureStore:
        return LoginFailureStore(self.store.db)

    @cached_property
    def login_limits(self) -> LoginLimits:
        return DatabaseLoginLimits(self.failures, self.settings, self.clock.seconds)

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def authenticate(self, creds: CredentialsReceived, ip: str) -> Deferred[Decision]:
        if creds.register:
            d = defer.ensureDeferred(self._register(creds, ip))
            d.addCallback(self._count, self.stats.registrations, "refused")
        else:
            d = defer.ensureDeferred(self._signin(creds, ip))
            d.addCallback(self._count, self.stats.logins, "failed")
        return d

    def record_login(self, name: str, ip: str) -> Deferred[None]:
        """The test message verified: remember when and from where the user signed in.

        Only this sets the address the account's failure limit spares; registering does not.
        """
        return self.store.record_login(name, ip, self.now_ms())

    @staticmethod
    def _count(decision: Decision, counts: Counter[str], refused: str) -> Decision:
        if decision.ok:
            counts["ok"] += 1
        elif decision.code == ErrorCode.TRY_LATER:
            counts["limited"] += 1
        else:
            counts[refused] += 1
        return decision

    def _failed(self, creds: CredentialsReceived, ip: str, decision: Decision) -> Decision:
        log.info(FAILED_SIGNIN_FORMAT, name=creds.name, ip=ip, code=decision.code.name)
        return decision

    async def _signin(self, creds: CredentialsReceived, ip: str) -> Decision:
        # The same queries and the same Argon2id work whether or not the user exists.
        phc, trusted_ip = await self.store.get_login(creds.name)
        wait_ms = await self.login_limits.reserve_signin(creds.name, ip, trusted_ip)
        if wait_ms > 0:
            return self._failed(creds, ip, Decision(
                False, ErrorCode.TRY_LATER, "too many failed sign-ins; try later", wait_ms))
        try:
            ok = await self.hasher.verify(creds.password, phc, key=address_key(ip))
        except BaseException as exc:
            await self.login_limits.signin_unchecked(creds.name, ip)
            if isinstance(exc, HasherBusy):
                return HASHER_BUSY
            raise
        if not ok:
            return self._failed(creds, ip, SIGNIN_FAILED)  # the reservation stays: a failure
        await self.login_limits.signin_succeeded(creds.name, ip)
        if phc is not None and self.hasher.needs_rehash(phc):
            await self._rehash(creds, phc)
        return ACCEPT

    async def _rehash(self, creds: CredentialsReceived, phc: str) -> None:
        """Hash the password again with the server's parameters (an account made by the admin
        tool with other costs would otherwise answer faster than the rest)."""
        try:
            new_phc = await self.hasher.hash(creds.password, priority=Priority.SIGNIN)
            await self.failures.replace_password_hash(creds.name, phc, new_phc)
        except Exception:
            log.failure("could not store the rehashed password of {name}", name=creds.name)

    async def _register(self, creds: CredentialsReceived, ip: str) -> Decision:
        # Every attempt counts, and nothing is hashed before the cheap checks have passed.
        wait_ms = await self.login_limits.reserve_registration(creds.name, ip)
        if wait_ms > 0:
            return Decision(False, ErrorCode.TRY_LATER, "too many registrations; try later",
                            wait_ms)
        if creds.name in RESERVED_NAMES:
            return Decision(False, ErrorCode.INVALID_NAME, "that name is reserved")
        problem = password_policy_error(creds.password)
        if problem is not None:
            return Decision(False, ErrorCode.INVALID_PASSWORD, problem)
        existing, _ = await self.store.get_login(creds.name)
        if existing is not None:
            return Decision(False, ErrorCode.NAME_TAKEN, "that name is taken")
        try:
            phc = await self.hasher.hash(creds.password, key=address_key(ip))
        except HasherBusy:
            return HASHER_BUSY
        try:
            await self.store.create_user(creds.name, phc, self.now_ms())
        except NameTaken:
            return Decision(False, ErrorCode.NAME_TAKEN, "that name is taken")
        log.info("registered {name} from {ip}", name=creds.name, ip=ip)
        return ACCEPT
