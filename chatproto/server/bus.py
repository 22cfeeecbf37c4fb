"""The bus between nodes: two Redis connections (commands, subscriptions) kept up with backoff.

The bus only carries pokes; the database is the truth. Every call here is fire and forget
when Redis is down: :meth:`RedisBus.publish` returns False, :meth:`RedisBus.run_script`
returns None, and the callers fall back to what the node knows (its own sessions, the bounded
log check). Nothing waits for Redis to come back.

The Redis client is txredisapi (pinned in setup.cfg): it runs on the Twisted reactor and
reconnects through ``ClientService`` with an exponential backoff (1 s growing to
:data:`MAX_RECONNECT_DELAY`). Values travel as bytes (``charset=None``).

txredisapi parses replies with hiredis (redis-py's C reader, also pinned) when it can import
it, and we require that: its pure-Python parser hands over one bulk reply per reactor
iteration (it pauses the socket and re-queues the rest of the buffer with ``callLater(0)``),
so a burst of pokes queued behind a busy reactor took hundreds of milliseconds to drain.
With hiredis every reply in a read is handled in that read.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import txredisapi
from twisted.internet import defer, endpoints
from twisted.internet.defer import Deferred
from twisted.logger import Logger

log = Logger()

#: Longest wait between two reconnection attempts (seconds).
MAX_RECONNECT_DELAY = 5.0
#: Channels named per SUBSCRIBE command when re-subscribing after a reconnect.
SUBSCRIBE_BATCH = 500
#: Longest node name (it travels in every poke).
MAX_NODE_NAME = 64


def default_node_name() -> str:
    """``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def check_node_name(name: str) -> str:
    """The name, if it is 1..64 printable characters without spaces (else ValueError)."""
    if not name or len(name) > MAX_NODE_NAME or not name.isprintable() or " " in name:
        raise ValueError(f"a node name is 1 to {MAX_NODE_NAME} printable characters without "
                         "spaces")
    return name


@dataclass(frozen=True)
class BusAddress:
    """Where the bus is: ``redis://[:PASSWORD@]HOST:PORT/DB?prefix=P``.

    ``prefix`` (default ``chat:``) starts every key and channel, so several deployments (or
    test runs) can share one Redis; pub/sub channels are global in Redis, whatever the DB.
    """

    host: str
    port: int
    db: int
    prefix: bytes
    #: Redis AUTH password (never logged).
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> BusAddress:
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError("the bus is redis://[:PASSWORD@]HOST[:PORT][/DB][?prefix=P]")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError(f"bad port in {url!r}") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the Redis database is a number, not {path!r}")
        query = parse_qs(parts.query)
        unknown = set(query) - {"prefix"}
        if unknown:
            raise ValueError(f"unknown bus parameter(s): {', '.join(sorted(unknown))}")
        prefix = query.get("prefix", ["chat:"])[-1]
        if not prefix or len(prefix) > 64 or not prefix.isprintable():
            raise ValueError("the bus prefix is 1 to 64 printable characters")
        if parts.username:
            raise ValueError("Redis ACL user names are not supported: redis://:PASSWORD@HOST")
        return cls(parts.hostname or "127.0.0.1", port, int(path or 0), prefix.encode(),
                   parts.password)


class _Commands(txredisapi.RedisFactory):
    """The command connection's factory; tells the bus when it is usable and when lost."""

    maxDelay = MAX_RECONNECT_DELAY

    def __init__(self, bus: RedisBus) -> None:
        super().__init__(f"{bus.address.host}:{bus.address.port}", bus.address.db, 1,
                         isLazy=True, charset=None, convertNumbers=False,
                         password=bus.address.password)
        self.bus = bus

    def addConnection(self, conn: Any) -> None:
        super().addConnection(conn)
        if conn in self.pool:
            self.bus._commands_up(conn)

    def delConnection(self, conn: Any) -> None:
        super().delConnection(conn)
        self.bus._commands_down(conn)


class _Subscriber(txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
        self.factory.bus._message(channel, message)


class _Subscriptions(txredisapi.RedisFactory):
    protocol = _Subscriber
    maxDelay = MAX_RECONNECT_DELAY

    def __init__(self, bus: RedisBus) -> None:
        super().__init__(None, None, 1, isLazy=True, charset=None, convertNumbers=False,
                         password=bus.address.password)
        self.bus = bus

    def addConnection(self, conn: Any) -> None:
        super().addConnection(conn)
        if conn in self.pool:
            self.bus._subscriber_up(conn)

    def delConnection(self, conn: Any) -> None:
        super().delConnection(conn)
        self.bus._subscriber_down(conn)


class RedisBus:
    """Publishes, subscribes and runs scripts on Redis; survives Redis restarts.

    Args:
        reactor: the reactor (for the connections).
        address: where Redis is.
        on_message: called with (channel, message) for every message on a subscribed channel.
        on_up: called each time both connections are (again) usable.
    """

    def __init__(self, reactor: Any, address: BusAddress,
                 on_message: Callable[[bytes, bytes], None],
                 on_up: Callable[[], None] = lambda: None) -> None:
        self.reactor = reactor
        self.address = address
        self.on_message = on_message
        self.on_up = on_up
        self.channels: set[bytes] = set()
        self._commands: Any = None
        self._subscriber: Any = None
        self._factories: list[Any] = []
        #: Times a connection came back after it was lost (the first connection excluded).
        self.reconnects = 0
        self._was_up = {"commands": False, "subscriber": False}

    @property
    def connected(self) -> bool:
        return self._commands is not None and self._subscriber is not None

    def start(self) -> None:
        """Connect both (and keep reconnecting); returns at once. RuntimeError if txredisapi
        parses replies without hiredis (see the module's note)."""
        if txredisapi.hiredis is None:
            raise RuntimeError("the bus needs hiredis (pip install hiredis): txredisapi's own "
                               "parser handles one reply per reactor turn")
        endpoint = endpoints.TCP4ClientEndpoint(self.reactor, self.address.host,
                                                self.address.port, timeout=5)
        for factory in (_Commands(self), _Subscriptions(self)):
            factory.startConnecting(endpoint)
            self._factories.append(factory)

    def stop(self) -> Deferred[Any]:
        factories, self._factories = self._factories, []
        self._commands = self._subscriber = None
        return defer.DeferredList([f.disconnect() for f in factories], consumeErrors=True)

    # --- commands ------------------------------------------------------------------------------

    def publish(self, channel: bytes, message: bytes) -> bool:
        """Publish if the bus is up (False: dropped; the log check makes up for it)."""
        conn = self._commands
        if conn is None:
            return False
        try:
            d = conn.publish(channel, message)
        except txredisapi.ConnectionError:
            return False
        d.addErrback(lambda f: None)  # a poke lost with its connection: the log check
        return True

    def run_script(self, script: str, keys: Sequence[bytes],
                   args: Sequence[bytes | int | str]) -> Deferred[Any] | None:
        """EVAL ``script`` (None if the bus is down)."""
        conn = self._commands
        if conn is None:
            return None
        try:
            d: Deferred[Any] = conn.eval(script, list(keys), list(args))
        except txredisapi.ConnectionError:
            return None
        return d

    # --- subscriptions -------------------------------------------------------------------------

    def subscribe(self, channel: bytes) -> None:
        if channel in self.channels:
            return
        self.channels.add(channel)
        self._send_subscription("SUBSCRIBE", [channel])

    def unsubscribe(self, channel: bytes) -> None:
        if channel not in self.channels:
            return
        self.channels.discard(channel)
        self._send_subscription("UNSUBSCRIBE", [channel])

    def _send_subscription(self, command: str, channels: list[bytes]) -> None:
        conn = self._subscriber
        if conn is None:  # done on reconnect
            return
        try:
            d = conn.execute_command(command, *channels, apply_timeout=False)
        except txredisapi.ConnectionError:
            return
        d.addErrback(lambda f: None)

    def _message(self, channel: bytes, message: bytes) -> None:
        try:
            self.on_message(channel, message)
        except Exception:
            log.failure("handling a bus message on {channel!r}", channel=channel)

    # --- connection state ----------------------------------------------------------------------

    def _commands_up(self, conn: Any) -> None:
        self._commands = conn
        self._came_up("commands")

    def _commands_down(self, conn: Any) -> None:
        if self._commands is conn:
            self._commands = None
            log.warn("bus: lost the Redis command connection; reconnecting")

    def _subscriber_up(self, conn: Any) -> None:
        self._subscriber = conn
        channels = sorted(self.channels)
        for i in range(0, len(channels), SUBSCRIBE_BATCH):
            self._send_subscription("SUBSCRIBE", channels[i:i + SUBSCRIBE_BATCH])
        self._came_up("subscriber")

    def _subscriber_down(self, conn: Any) -> None:
        if self._subscriber is conn:
            self._subscriber = None
            log.warn("bus: lost the Redis subscriber connection; reconnecting")

    def _came_up(self, which: str) -> None:
        if self._was_up[which]:
            self.reconnects += 1
        self._was_up[which] = True
        if self.connected:
            log.info("bus: connected to Redis at {host}:{port}", host=self.address.host,
                     port=self.address.port)
            self.on_up()
