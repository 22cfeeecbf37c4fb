"""Sign-in and registration decisions: password checks, login limits, reserved names.

The connection asks :meth:`Authenticator.authenticate` for a :class:`Decision` once the
handshake has the credentials; nothing here knows about transports or frames.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatproto.server.limits import LimitSettings, LoginLimits
from chatproto.server.metrics import ServerStats
from chatproto.server.passwords import PasswordHasher, password_policy_error
from chatproto.storage.store import ChatStore, NameTaken
from chatproto.wire.errors import ErrorCode
from chatproto.wire.handshake import CredentialsReceived

log = Logger()

#: Names nobody may register: they would impersonate the service in a chat window.
RESERVED_NAMES = frozenset({"admin", "root", "server", "system", "chatproto"})


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


class Authenticator:
    """Decides sign-ins and registrations, and records successful logins."""

    def __init__(self, *, clock: Any, store: ChatStore, hasher: PasswordHasher,
                 limits: LimitSettings, stats: ServerStats) -> None:
        self.clock = clock
        self.store = store
        self.hasher = hasher
        self.stats = stats
        self.login_limits = LoginLimits(clock.seconds, limits)

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
        """The test message verified: remember when and from where the user signed in."""
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

    async def _signin(self, creds: CredentialsReceived, ip: str) -> Decision:
        # The same queries and the same Argon2id work whether or not the user exists.
        phc, trusted_ip = await self.store.get_login(creds.name)
        wait = self.login_limits.signin_retry_after(creds.name, ip, trusted_ip)
        if wait > 0:
            return Decision(False, ErrorCode.TRY_LATER, "too many failed sign-ins; try later",
                            int(wait * 1000) + 1)
        if not await self.hasher.verify(creds.password, phc):
            self.login_limits.signin_failed(creds.name, ip)
            return SIGNIN_FAILED
        self.login_limits.signin_succeeded(creds.name)
        return ACCEPT

    async def _register(self, creds: CredentialsReceived, ip: str) -> Decision:
        wait = self.login_limits.registrations.retry_after(ip)
        if wait > 0:
            return Decision(False, ErrorCode.TRY_LATER, "too many registrations; try later",
                            int(wait * 1000) + 1)
        if creds.name in RESERVED_NAMES:
            return Decision(False, ErrorCode.INVALID_NAME, "that name is reserved")
        problem = password_policy_error(creds.password)
        if problem is not None:
            return Decision(False, ErrorCode.INVALID_PASSWORD, problem)
        phc = await self.hasher.hash(creds.password)
        try:
            await self.store.create_user(creds.name, phc, self.now_ms())
        except NameTaken:
            return Decision(False, ErrorCode.NAME_TAKEN, "that name is taken")
        self.login_limits.registrations.hit(ip)
        log.info("registered {name} from {ip}", name=creds.name, ip=ip)
        return ACCEPT
