"""The chat server application: accounts, login, sessions; and the twistd service around it."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry
from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import Site

from chatproto.server.chat import ChatHandlers
from chatproto.server.identity import identity_fingerprint
from chatproto.server.limits import LimitSettings
from chatproto.server.login import Authenticator, Decision
from chatproto.server.metrics import ServerStats, StoreObserver, metrics_resource
from chatproto.server.passwords import PasswordHasher
from chatproto.server.protocol import ChatServerFactory, ChatServerProtocol
from chatproto.server.router import LocalRouter, Router
from chatproto.server.web import WebSettings
from chatproto.storage.database import Database
from chatproto.storage.store import ChatStore
from chatproto.wire.errors import ErrorCode
from chatproto.wire.handshake import CredentialsReceived

log = Logger()

#: How often the archive retention runs (seconds).
PRUNE_INTERVAL = 3600.0
#: Seconds a thread may hold the GIL while another waits (CPython's default is 0.005).
SWITCH_INTERVAL = 0.0005

class ChatServer:
    """Everything the connections share: identity, store, limits, the router of sessions."""

    def __init__(
        self,
        *,
        reactor: Any,
        identity: Ed25519PrivateKey,
        store: ChatStore,
        hasher: PasswordHasher,
        limits: LimitSettings | None = None,
        router: Router | None = None,
    ) -> None:
        self.clock = reactor
        self.identity = identity
        self.fingerprint = identity_fingerprint(identity)
        self.store = store
        self.hasher = hasher
        self.limits = limits or LimitSettings()
        self.router = router or LocalRouter()
        self.connections_per_ip: Counter[str] = Counter()
        self.handshakes = 0
        self.stats = ServerStats()
        self.auth = Authenticator(clock=reactor, store=store, hasher=hasher, limits=self.limits,
                                  stats=self.stats)
        self.chat = ChatHandlers(self)

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def metrics_error(self, code: ErrorCode) -> None:
        self.stats.errors[code.name] += 1

    # --- connections ---------------------------------------------------------------------------

    def connection_opened(self, conn: ChatServerProtocol) -> str | None:
        """Count a new connection; a reason string means refuse it."""
        conn.handlers = self.chat.for_connection(conn)
        self.stats.connections += 1
        self.connections_per_ip[conn.ip] += 1
        self.handshakes += 1
        if self.handshakes > self.limits.max_handshakes:
            return "too many handshakes in progress; try again soon"
        if self.connections_per_ip[conn.ip] > self.limits.max_connections_per_ip:
            return "too many connections from your address"
        return None

    def connection_closed(self, conn: ChatServerProtocol) -> None:
        self.connections_per_ip[conn.ip] -= 1
        if self.connections_per_ip[conn.ip] <= 0:
            del self.connections_per_ip[conn.ip]
        if conn.session is None:
            self.handshakes -= 1
        elif conn.name is not None:
            self.chat.session_ended(conn)

    # --- the handshake decisions ---------------------------------------------------------------

    def authenticate(self, creds: CredentialsReceived, ip: str) -> Deferred[Decision]:
        return self.auth.authenticate(creds, ip)

    def login(self, conn: ChatServerProtocol) -> Deferred[None]:
        """The test message verified: record the login, then the session starts."""
        assert conn.name is not None
        return self.auth.record_login(conn.name, conn.ip)

    def session_started(self, conn: ChatServerProtocol) -> None:
        self.handshakes -= 1
        self.stats.handshakes_completed += 1
        log.info("{name} signed in from {ip}", name=conn.name, ip=conn.ip)
        self.chat.session_started(conn)

    def quit(self, conn: ChatServerProtocol) -> Deferred[None]:
        """Quit: the user goes offline now (later messages are stored), last seen recorded."""
        return self.chat.session_ended(conn)


class ChatService(service.MultiService):
    """Opens the database in startService, then starts the listeners.

    Args:
        reactor: the reactor.
        database: the (not yet started) database.
        identity: the server identity key.
        endpoints: the server endpoints to listen on.
        hasher: the Argon2id hasher.
        limits: the limits.
        web: the web client's listeners (``--listen-web``), if any.
    """

    def __init__(self, reactor: Any, database: Database, identity: Ed25519PrivateKey,
                 endpoints: list[Any], hasher: PasswordHasher, limits: LimitSettings,
                 metrics_endpoint: Any = None, retention_days: float = 0,
                 web: WebSettings | None = None) -> None:
        super().__init__()
        self.retention_days = retention_days
        self._pruning: task.LoopingCall | None = None
        #: The most recent prune (tests wait for it), and how many each run deleted.
        self.last_prune: Deferred[int] | None = None
        self.pruned: list[int] = []
        self.reactor = reactor
        self.database = database
        self.hasher = hasher
        self.server = ChatServer(reactor=reactor, identity=identity,
                                 store=ChatStore(database), hasher=hasher, limits=limits)
        self.factory = ChatServerFactory(self.server)
        self.listeners = [StreamServerEndpointService(ep, self.factory) for ep in endpoints]
        if web is not None:
            self.listeners.extend(web.services(self.factory))
        if metrics_endpoint is not None:
            registry = CollectorRegistry()
            observer = StoreObserver(registry)
            database.on_transaction = observer.transaction
            self.server.store.writes.on_batch = observer.batch
            site = Site(metrics_resource(self.server, registry))
            self.listeners.append(StreamServerEndpointService(metrics_endpoint, site))
        for listener in self.listeners:
            listener._raiseSynchronously = True
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        service.Service.startService(self)
        # The database threads release the GIL for every SQL statement and must win it back
        # from the reactor thread; with the default 5 ms switch interval they queue behind it.
        sys.setswitchinterval(SWITCH_INTERVAL)
        log.info("server identity fingerprint: {fp}", fp=self.server.fingerprint)
        self.hasher.start()
        d = self.database.start()

        def listen(_: object) -> None:
            log.info("database ready: {db}", db=self.database.engine.describe())
            for listener in self.listeners:
                listener.setServiceParent(self)
            if self.retention_days > 0:
                self._pruning = task.LoopingCall(self.prune_archive)
                self._pruning.clock = self.reactor
                self._pruning.start(PRUNE_INTERVAL, now=True)

        def fatal(f: Any) -> None:
            log.failure("could not start the chat server", f)
            self.reactor.stop()
            self.ready.errback(f)

        d.addCallback(listen)
        d.addCallbacks(lambda _: self.ready.callback(None), fatal)

    def prune_archive(self) -> Deferred[int]:
        """Delete archived messages older than the retention period (already delivered)."""
        cutoff = self.server.now_ms() - int(self.retention_days * 86_400_000)
        d = self.server.store.prune_archive(cutoff)
        self.last_prune = d

        def report(deleted: int) -> int:
            self.pruned.append(deleted)
            if deleted:
                log.info("archive retention: deleted {n} messages", n=deleted)
            return deleted

        def failed(f: Any) -> None:
            log.failure("archive retention failed", f)

        d.addCallbacks(report, failed)
        return d

    def stopService(self) -> Deferred[None]:
        if self._pruning is not None and self._pruning.running:
            self._pruning.stop()
        d = defer.maybeDeferred(super().stopService)

        def close(_: object) -> None:
            self.hasher.stop()
            self.database.close()

        d.addBoth(close)
        return d
