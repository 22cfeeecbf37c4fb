"""The chat server application: accounts, login, sessions; and the twistd service around it."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry
from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import Site

from chatproto.server.admission import Admission, LocalAdmission
from chatproto.server.bus import BusAddress
from chatproto.server.chat import ChatHandlers
from chatproto.server.connection import Connection, Link, RequestHandler
from chatproto.server.feature_handlers import FeatureHandlers
from chatproto.server.feature_settings import FeatureSettings
from chatproto.server.identity import identity_fingerprint
from chatproto.server.limits import LimitSettings
from chatproto.server.login import Authenticator
from chatproto.server.metrics import NodeCollector, ServerStats, StoreObserver, metrics_resource
from chatproto.server.passwords import PasswordHasher
from chatproto.server.presence import PresenceAnnouncer
from chatproto.server.protocol import ChatServerFactory
from chatproto.server.redis_router import PRESENCE_TTL, RedisRouter
from chatproto.server.router import LocalRouter, Router
from chatproto.server.web import WebSettings
from chatproto.storage.content_files import ContentFiles, default_image_directory
from chatproto.storage.database import Database
from chatproto.storage.store import ChatStore
from chatproto.wire import messages as m
from chatproto.wire.handshake import SUPPORTED_VERSIONS

log = Logger()

#: How often the archive retention runs (seconds).
PRUNE_INTERVAL = 3600.0
#: Seconds a thread may hold the GIL while another waits (CPython's default is 0.005).
SWITCH_INTERVAL = 0.0005
#: CPython's generation-0 threshold while serving (its default is 700). Every message makes a
#: few hundred short-lived objects, so at 700 the cyclic collector ran every few messages and
#: took about a quarter of the CPU; the per-message objects have no cycles and go by refcount.
GC_GEN0_THRESHOLD = 50_000
#: Seconds the server waits at stop for its connections to close.
STOP_TIMEOUT = 5.0

class ChatServer:
    """Everything the connections share: identity, store, limits, the router of sessions.

    It builds one :class:`Connection` per transport connection (:meth:`open_connection`), and
    ends them all before the database closes (:meth:`stop`).
    """

    def __init__(
        self,
        *,
        reactor: Any,
        identity: Ed25519PrivateKey,
        store: ChatStore,
        hasher: PasswordHasher,
        limits: LimitSettings | None = None,
        router: Router | None = None,
        admission: Admission | None = None,
        versions: Sequence[int] = SUPPORTED_VERSIONS,
        features: FeatureSettings | None = None,
    ) -> None:
        self.clock = reactor
        #: The protocol versions the handshake accepts (``(2,)`` refuses version 1 clients).
        self.versions = tuple(versions)
        self.identity = identity
        self.fingerprint = identity_fingerprint(identity)
        self.store = store
        self.hasher = hasher
        self.limits = limits or LimitSettings()
        self.router: Router = router or LocalRouter()
        self.admission: Admission = admission or LocalAdmission(
            self.limits.max_handshakes, self.limits.max_connections_per_ip)
        self.stats = ServerStats()
        self.auth = Authenticator(clock=reactor, store=store, hasher=hasher, limits=self.limits,
                                  stats=self.stats)
        self.presence = PresenceAnnouncer(store, self.router, self.now_ms)
        self.chat = ChatHandlers(store, self.router, self.now_ms)
        self.features = FeatureHandlers(self.chat, hasher, features)
        self.requests: Mapping[type[m.Message], RequestHandler] = {
            **self.chat.dispatch, **self.features.dispatch}
        #: Open connections, to end them all at stop (every delivery goes through the router).
        self.open: set[Connection] = set()

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def open_connection(self, link: Link) -> Connection:
        self.stats.connections += 1
        conn = Connection(self, link)
        self.open.add(conn)
        return conn

    def connection_closed(self, conn: Connection) -> None:
        self.open.discard(conn)

    def stop(self, timeout: float = STOP_TIMEOUT) -> Deferred[Any]:
        """End every session (answering the requests in flight, recording last seen), close
        every connection; fires when none of them needs the database any more and their
        transports are closed (or after ``timeout`` seconds for a peer that does not read)."""
        d = defer.DeferredList([conn.shutdown() for conn in list(self.open)],
                               consumeErrors=True)
        d.addTimeout(timeout, self.clock, onTimeoutCancel=lambda result, _: None)
        return d

    # --- live state for the metrics ------------------------------------------------------------

    def open_connections(self) -> int:
        return self.admission.open_connections()

    def handshakes_in_progress(self) -> int:
        return self.admission.handshakes_in_progress()

    def users_online(self) -> int:
        return self.router.online_count()

    def queued_writes(self) -> int:
        return self.store.writes.queued


class ChatService(service.MultiService):
    """Opens the database in startService, then listens; stopping ends the sessions before
    the database closes.

    Args:
        reactor: the reactor.
        database: the (not yet started) database.
        identity: the server identity key.
        endpoints: the server endpoints to listen on.
        hasher: the Argon2id hasher.
        limits: the limits.
        metrics_endpoint: where to serve Prometheus metrics (None: nowhere).
        retention_days: archive retention (0: forever).
        web: the web client's listeners (``--listen-web``), if any.
        versions: the protocol versions accepted (``--refuse-v1``: only 2).
        bus: the Redis bus (``--bus``): this process is one node of several.
        node: this node's name (``--node-name``), with ``bus``.
        presence_ttl: seconds the sessions of a dead node stay online (``--presence-ttl``).
        features: the everyday features' settings (edit window, file size, name hold, the
            file directory).
        image_dir: where image bodies go (``--image-dir``; None: ``$CHATPROTO_IMAGE_DIR``, else
            beside a SQLite file, else in the database).
    """

    def __init__(self, reactor: Any, database: Database, identity: Ed25519PrivateKey,
                 endpoints: list[Any], hasher: PasswordHasher, limits: LimitSettings,
                 metrics_endpoint: Any = None, retention_days: float = 0,
                 web: WebSettings | None = None,
                 versions: Sequence[int] = SUPPORTED_VERSIONS,
                 bus: BusAddress | None = None, node: str = "",
                 presence_ttl: float = PRESENCE_TTL,
                 features: FeatureSettings | None = None,
                 image_dir: str | None = None) -> None:
        super().__init__()
        self.retention_days = retention_days
        self._pruning: task.LoopingCall | None = None
        #: The collector's thresholds before start-up tuned them (restored at stop).
        self._gc_threshold: tuple[int, int, int] | None = None
        #: The most recent prune (tests wait for it), and how many each run deleted.
        self.last_prune: Deferred[int] | None = None
        self.pruned: list[int] = []
        self.reactor = reactor
        self.database = database
        self.hasher = hasher
        images = (Path(image_dir) if image_dir
                  else default_image_directory(database.engine, os.environ))
        files = None if images is None else ContentFiles(images)
        #: The router of a node among several (None: this process serves everybody).
        self.cluster = (RedisRouter(reactor, bus, node, database, presence_ttl=presence_ttl)
                        if bus is not None
                        else None)
        self.server = ChatServer(reactor=reactor, identity=identity,
                                 store=ChatStore(database, files=files), hasher=hasher,
                                 limits=limits, versions=versions, router=self.cluster,
                                 features=features)
        if self.cluster is not None:
            self.server.features.accounts.join(self.cluster)
        self.factory = ChatServerFactory(self.server)
        #: (what, endpoint, factory) for every listener, opened once the database is ready.
        self.endpoints: list[tuple[str, Any, Any]] = [
            ("chat", ep, self.factory) for ep in endpoints]
        if web is not None:
            site = web.site(self.factory)
            self.endpoints.extend(("web", ep, site) for ep in web.endpoints)
        if metrics_endpoint is not None:
            registry = CollectorRegistry()
            observer = StoreObserver(registry)
            database.on_transaction = observer.transaction
            self.server.store.writes.on_batch = observer.batch
            if self.cluster is not None:
                bus_ = self.cluster.bus
                registry.register(NodeCollector(self.cluster.node, self.cluster.stats,
                                                self.server, lambda: bus_.reconnects))
            site = Site(metrics_resource(self.server.stats, self.server, registry))
            self.endpoints.append(("metrics", metrics_endpoint, site))
        #: The listening ports, once listening.
        self.ports: list[Any] = []
        self.ready: Deferred[None] = Deferred()

    def startService(self) -> None:
        service.Service.startService(self)
        # The database threads release the GIL for every SQL statement and must win it back
        # from the reactor thread; with the default 5 ms switch interval they queue behind it.
        sys.setswitchinterval(SWITCH_INTERVAL)
        log.info("server identity fingerprint: {fp}", fp=self.server.fingerprint)
        self.hasher.start()
        d = defer.ensureDeferred(self._start())

        def fatal(f: Any) -> None:
            log.failure("could not start the chat server", f)
            self.reactor.stop()
            self.ready.errback(f)

        d.addCallbacks(lambda _: self.ready.callback(None), fatal)

    async def _start(self) -> None:
        await self.database.start()
        log.info("database ready: {db}", db=self.database.engine.describe())
        if self.cluster is not None:
            self.cluster.start()
        for what, endpoint, factory in self.endpoints:
            port = await endpoint.listen(factory)
            self.ports.append(port)
            log.info("listening on {address} ({what})", address=describe_address(port.getHost()),
                     what=what)
        for child in self:
            child.startService()
        self._tune_gc()
        if self.retention_days > 0:
            self._pruning = task.LoopingCall(self.prune_archive)
            self._pruning.clock = self.reactor
            self._pruning.start(PRUNE_INTERVAL, now=True)

    def _tune_gc(self) -> None:
        """Move everything made at start-up (modules, the schema, the keys) out of the cyclic
        collector's sight (``gc.freeze``), and collect young objects less often. Undone at
        stop, so a process that goes on (the tests) gets its settings back."""
        threshold = self._gc_threshold = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, *threshold[1:])

    def _restore_gc(self) -> None:
        threshold, self._gc_threshold = self._gc_threshold, None
        if threshold is not None:
            gc.set_threshold(*threshold)
            gc.unfreeze()

    def prune_archive(self) -> Deferred[int]:
        """Delete archived messages older than the retention period (already delivered)."""
        cutoff = self.server.now_ms() - int(self.retention_days * 86_400_000)
        d = self.server.store.prune_archive(cutoff)
        self.last_prune = d

        def report(deleted: int) -> int:
            self.pruned.append(deleted)
            if deleted:
                log.info("archive retention: deleted {n} messages", n=deleted)
                # Files no archived message refers to any more go too.
                self.server.features.files.prune().addErrback(
                    lambda f: log.failure("removing the files of deleted messages", f))
            return deleted

        def failed(f: Any) -> None:
            log.failure("archive retention failed", f)

        d.addCallbacks(report, failed)
        return d

    def stopService(self) -> Deferred[None]:
        """Stop listening, end every session (last seen recorded), then close the database."""
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self._pruning is not None and self._pruning.running:
            self._pruning.stop()
        try:
            ports, self.ports = self.ports, []
            await defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports],
                                     consumeErrors=True)
            await defer.maybeDeferred(super().stopService)
            await self.server.stop()
            if self.last_prune is not None and not self.last_prune.called:
                await self.last_prune
            if self.cluster is not None:
                await self.cluster.stop()
        finally:
            self.hasher.stop()
            self.database.close()
            self._restore_gc()


def describe_address(address: Any) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of a listening port, else its repr."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None or port is None:
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
