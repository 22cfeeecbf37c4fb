"""The router of a node among several: the node's own sessions, Redis pokes, presence in Redis.

The database is the truth; the bus only pokes (Synapse's model):

- **Pokes.** Each user has a channel ``PREFIX u:NAME``; a node subscribes to the channels of
  the users it holds sessions of. After a commit, :meth:`RedisRouter.log_advanced` delivers to
  this node's sessions and publishes "the log of NAME reached N" (without the entry: the
  other node's streams read it from the database). Receipts, typing, presence and group
  events (:meth:`RedisRouter.push`) travel as their encoded message. An account change
  (password changed, account deleted, a device signed out) travels as a sign-out poke
  (:meth:`RedisRouter.sign_out_elsewhere`): every node holding sessions of that user closes
  them (those of one device only, for a device sign-out). A sign-out that finds the bus down
  is published when it is back (up to :data:`MAX_PENDING_SIGN_OUTS` of them).
- **The bounded log check.** Every :data:`LOG_CHECK_INTERVAL` seconds the node reads the
  log position of every user it holds (one query) and tells their streams (a position ahead
  of every poke :data:`POKE_GRACE` later), so a lost poke costs at most that much latency,
  never a message, even with Redis down.
- **Presence.** Each session is a member ``NODE/N/DEVICE-HEX`` of the sorted set
  ``PREFIX p:NAME`` scored by its expiry (now + the TTL, :data:`PRESENCE_TTL` by default),
  refreshed every third of it. A user is online while a member has not expired (and a
  device while one of its members has: the device list spans the nodes). Every node
  sweeps expired members (of a node that died) with one atomic script: the node whose
  sweep removes a user's last member records their last seen (the dead node's last
  heartbeat) and announces them offline.

When Redis is down each node serves its own sessions: online answers are this node's,
pushes reach this node's sessions, and cross-node messages arrive through the log check.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import msgpack
from twisted.internet import defer, task
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatproto.server.bus import BusAddress, RedisBus
from chatproto.server.metrics import NodeStats
from chatproto.server.router import LocalRouter, Routed
from chatproto.storage.cluster import advance_last_seen, log_heads
from chatproto.storage.database import Database
from chatproto.storage.store import LogEntry

log = Logger()

#: Seconds between two checks of the log position of every user this node holds.
LOG_CHECK_INTERVAL = 1.0
#: Seconds a log position the check found ahead of every poke waits before the streams are
#: told (and read the log): the poke in flight usually arrives first, with the entry.
POKE_GRACE = 0.05
#: Seconds a session stays online in Redis without a heartbeat (the default; ``--presence-ttl``).
PRESENCE_TTL = 15.0
#: Heartbeats (which also sweep expired sessions) per TTL.
HEARTBEATS_PER_TTL = 3
#: Seconds an online query waits for Redis before answering from this node's sessions.
BUS_TIMEOUT = 2.0
#: Users per heartbeat script.
HEARTBEAT_BATCH = 200
#: Expired sessions removed per sweep script run.
SWEEP_BATCH = 200

#: Poke kinds.
POKE_LOG = 1
POKE_PUSH = 2
POKE_SIGN_OUT = 3
#: Sign-outs kept while the bus is down, published when it is back (the oldest go first).
MAX_PENDING_SIGN_OUTS = 10_000
#: Largest body a log poke carries with its entry (larger ones, and images, are read from
#: the database by the receiving stream).
MAX_POKE_BODY = 16 * 1024

# KEYS: the user's set, the global set. ARGV: member, expiry ms, now ms, user, ttl ms.
# Returns the user's live sessions after adding this one (1: the user's first anywhere).
_ARRIVE = """
redis.call('zadd', KEYS[1], ARGV[2], ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[5])
redis.call('zadd', KEYS[2], ARGV[2], ARGV[4] .. '\\0' .. ARGV[1])
return redis.call('zcount', KEYS[1], ARGV[3], '+inf')
"""

# KEYS: the user's set, the global set. ARGV: member, now ms, user.
# Returns the user's live sessions left (0: that was the last one anywhere).
_LEAVE = """
redis.call('zrem', KEYS[1], ARGV[1])
redis.call('zrem', KEYS[2], ARGV[3] .. '\\0' .. ARGV[1])
return redis.call('zcount', KEYS[1], ARGV[2], '+inf')
"""

# KEYS: the global set. ARGV: expiry ms, now ms, ttl ms, prefix, then per user: name, count,
# that many members. Returns the users that had no live session before (swept while this
# node could not reach Redis, or Redis lost its data).
_HEARTBEAT = """
local back = {}
local i = 5
while i <= #ARGV do
  local user = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local key = ARGV[4] .. 'p:' .. user
  local before = redis.call('zcount', key, ARGV[2], '+inf')
  for j = i + 2, i + 1 + n do
    redis.call('zadd', key, ARGV[1], ARGV[j])
    redis.call('zadd', KEYS[1], ARGV[1], user .. '\\0' .. ARGV[j])
  end
  redis.call('pexpire', key, ARGV[3])
  if before == 0 then table.insert(back, user) end
  i = i + 2 + n
end
return back
"""

# KEYS: the global set. ARGV: now ms, ttl ms, prefix, batch.
# Removes expired sessions; returns name, last heartbeat ms for each user left without any.
_SWEEP = """
local expired = redis.call('zrangebyscore', KEYS[1], '-inf', '(' .. ARGV[1], 'WITHSCORES',
                           'LIMIT', 0, tonumber(ARGV[4]))
local gone = {}
for i = 1, #expired, 2 do
  local entry = expired[i]
  local sep = string.find(entry, '\\0', 1, true)
  redis.call('zrem', KEYS[1], entry)
  if sep then
    local user = string.sub(entry, 1, sep - 1)
    local key = ARGV[3] .. 'p:' .. user
    redis.call('zrem', key, string.sub(entry, sep + 1))
    if redis.call('zcount', key, ARGV[1], '+inf') == 0 then
      table.insert(gone, user)
      table.insert(gone, tostring(math.floor(tonumber(expired[i + 1]) - tonumber(ARGV[2]))))
    end
  end
end
return gone
"""

# KEYS: the user's set. ARGV: now ms. Returns the user's live sessions.
_MEMBERS = """
return redis.call('zrangebyscore', KEYS[1], ARGV[1], '+inf')
"""

# KEYS: users' sets. ARGV: now ms. Returns each user's live session count.
_ONLINE = """
local counts = {}
for i = 1, #KEYS do counts[i] = redis.call('zcount', KEYS[i], ARGV[1], '+inf') end
return counts
"""


def _entry_fields(entry: LogEntry) -> list[Any]:
    """A committed log entry as it travels in a poke (its body travels beside it)."""
    return [entry.group_id, entry.sender, entry.to, entry.conv_seq, entry.created_ms,
            entry.client_msg_id, entry.content_type, entry.mime, entry.sha256, entry.size,
            entry.message_id]


def _entry(fields: Any, user_seq: int) -> LogEntry | None:
    """The entry of a poke (None if it has none or it is malformed: the stream reads the
    log instead)."""
    if not isinstance(fields, list) or len(fields) != 11:
        return None
    try:
        (group_id, sender, to, conv_seq, created_ms, client_msg_id, content_type, mime,
         sha256, size, message_id) = fields
        return LogEntry(int(group_id), str(sender), None if to is None else str(to),
                        int(conv_seq), int(created_ms), client_msg_id, int(content_type), b"",
                        mime, sha256, int(size), int(message_id), user_seq)
    except (TypeError, ValueError):
        return None


def heartbeat_interval(ttl_ms: int) -> float:
    """Seconds between heartbeats for a TTL."""
    return ttl_ms / 1000 / HEARTBEATS_PER_TTL


class RedisRouter:
    """Implements :class:`~chatproto.server.router.Router` for one node of many.

    Args:
        reactor: the reactor (clock and connections).
        address: the Redis bus.
        node: this node's name (in every poke, in logs and metrics).
        database: the database (log positions, last seen).
        stats: the per-node counters.
        presence_ttl: seconds a session of a dead node stays online.
        clock: the time and timers (default: the reactor).
    """

    def __init__(self, reactor: Any, address: BusAddress, node: str, database: Database,
                 stats: NodeStats | None = None, presence_ttl: float = PRESENCE_TTL,
                 clock: Any = None) -> None:
        self.clock = clock if clock is not None else reactor
        self.ttl_ms = int(presence_ttl * 1000)
        self.node = node
        self.database = database
        self.stats = stats or NodeStats()
        self.local = LocalRouter()
        self.prefix = address.prefix
        self.bus = RedisBus(reactor, address, self._message, self._bus_up)
        self._node_bytes = node.encode()
        self._members: dict[Routed, bytes] = {}
        self._ids = itertools.count(1)
        #: The highest log position this node has heard of, per user it holds.
        self._heads: dict[str, int] = {}
        self._checking = False
        self._loops: list[task.LoopingCall] = []
        #: Log-check notices waiting out POKE_GRACE, by user (cancelled by :meth:`stop`).
        self._graces: dict[str, Any] = {}
        self.came_online: Callable[[str], None] = lambda name: None
        self.went_offline: Callable[[str, int], None] = lambda name, seen_ms: None
        self.signed_out: Callable[[str, bytes | None, str], None] = (
            lambda name, device_id, reason: None)
        #: (channel, poke) of the sign-outs made while the bus was down.
        self._pending_sign_outs: deque[tuple[bytes, bytes]] = deque(
            maxlen=MAX_PENDING_SIGN_OUTS)

    # --- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect to Redis (in the background) and start the heartbeat and the log check."""
        log.info("node {node}: joining the bus at {host}:{port}", node=self.node,
                 host=self.bus.address.host, port=self.bus.address.port)
        self.bus.start()
        for fn, interval in ((self.check_logs, LOG_CHECK_INTERVAL),
                             (self.heartbeat, heartbeat_interval(self.ttl_ms))):
            loop = task.LoopingCall(fn)
            loop.clock = self.clock
            loop.start(interval, now=False).addErrback(
                lambda f: log.failure("node {node}: a periodic task failed", f, node=self.node))
            self._loops.append(loop)

    def stop(self) -> Deferred[Any]:
        for call in self._graces.values():
            call.cancel()
        self._graces = {}
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        return self.bus.stop()

    def presence_changes(self, came_online: Callable[[str], None],
                         went_offline: Callable[[str, int], None]) -> None:
        self.came_online = came_online
        self.went_offline = went_offline

    def sign_outs(self, signed_out: Callable[[str, bytes | None, str], None]) -> None:
        """Who closes this node's sessions when another node signs a user out: called with
        (name, device id or None for every device, reason)."""
        self.signed_out = signed_out

    def _now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def _key(self, name: str) -> bytes:
        return self.prefix + b"p:" + name.encode()

    def _channel(self, name: str) -> bytes:
        return self.prefix + b"u:" + name.encode()

    @property
    def _sessions_key(self) -> bytes:
        return self.prefix + b"sessions"

    # --- sessions ------------------------------------------------------------------------------

    def attach(self, conn: Routed) -> bool:
        first = self.local.attach(conn)
        device = getattr(conn, "device_id", b"") or b""
        self._members[conn] = (self._node_bytes + b"/" + str(next(self._ids)).encode() + b"/"
                               + device.hex().encode())
        if first:
            self.bus.subscribe(self._channel(conn.name))
        return first

    def detach(self, conn: Routed) -> bool:
        last = self.local.detach(conn)
        self._members.pop(conn, None)
        if last:
            self.bus.unsubscribe(self._channel(conn.name))
            self._heads.pop(conn.name, None)
        return last

    def arrive(self, conn: Routed) -> Deferred[bool]:
        first_here = self.attach(conn)
        now = self._now_ms()
        d = self.bus.run_script(_ARRIVE, [self._key(conn.name), self._sessions_key], [
            self._members[conn], now + self.ttl_ms, now, conn.name,
            self.ttl_ms])
        if d is None:
            return defer.succeed(first_here)
        return self._answer(d.addCallback(lambda count: int(count) == 1), first_here)

    def leave(self, conn: Routed) -> Deferred[bool]:
        member = self._members.get(conn)
        last_here = self.detach(conn)
        if member is None:
            return defer.succeed(False)
        d = self.bus.run_script(_LEAVE, [self._key(conn.name), self._sessions_key],
                                [member, self._now_ms(), conn.name])
        if d is None:
            return defer.succeed(last_here)
        return self._answer(d.addCallback(lambda count: int(count) == 0), last_here)

    def _answer(self, d: Deferred[Any], fallback: Any) -> Deferred[Any]:
        """``d``'s result, or ``fallback`` if Redis fails or is slower than BUS_TIMEOUT."""
        d.addTimeout(BUS_TIMEOUT, self.clock)

        def failed(f: Any) -> Any:
            log.warn("node {node}: Redis did not answer ({why}); answering from this node",
                     node=self.node, why=f.getErrorMessage())
            return fallback

        return d.addErrback(failed)

    # --- delivery ------------------------------------------------------------------------------

    def sessions(self, name: str) -> tuple[Routed, ...]:
        """The user's sessions on THIS node (the other nodes' are reached by
        :meth:`sign_out_elsewhere`)."""
        return self.local.sessions(name)

    def sign_out_elsewhere(self, name: str, device_id: bytes | None, reason: str) -> None:
        """Have every other node close the user's sessions (of ``device_id`` only, if given),
        telling them ``reason``; this node closes its own."""
        poke = msgpack.packb([POKE_SIGN_OUT, self.node, device_id, reason])
        if self.bus.publish(self._channel(name), poke):
            self.stats.pokes_sent += 1
        else:
            log.warn("node {node}: the bus is down; signing {name} out on the other nodes "
                     "once it is back", node=self.node, name=name)
            self._pending_sign_outs.append((self._channel(name), poke))

    def _publish_pending_sign_outs(self) -> None:
        while self._pending_sign_outs:
            channel, poke = self._pending_sign_outs[0]
            if not self.bus.publish(channel, poke):
                return
            self._pending_sign_outs.popleft()
            self.stats.pokes_sent += 1

    def push(self, names: Iterable[str], payload: bytes) -> None:
        names = list(names)
        self.local.push(names, payload)
        poke = msgpack.packb([POKE_PUSH, self.node, payload])
        for name in names:
            if self.bus.publish(self._channel(name), poke):
                self.stats.pokes_sent += 1

    def log_advanced(self, name: str, user_seq: int, entry: LogEntry | None,
                     body: bytes | None) -> None:
        self._heard(name, user_seq)
        self.local.log_advanced(name, user_seq, entry, body)
        fields = None
        if (entry is not None and body is not None and entry.body is not None
                and len(body) <= MAX_POKE_BODY):
            fields = _entry_fields(entry)
        else:
            body = None
        poke = msgpack.packb([POKE_LOG, self.node, user_seq, self._now_ms(), fields, body])
        if self.bus.publish(self._channel(name), poke):
            self.stats.pokes_sent += 1

    def _heard(self, name: str, user_seq: int) -> None:
        if name in self._heads and user_seq > self._heads[name]:
            self._heads[name] = user_seq

    def _message(self, channel: bytes, message: bytes) -> None:
        start = self.prefix + b"u:"
        if not channel.startswith(start):
            return
        name = channel[len(start):].decode()
        poke = msgpack.unpackb(message)
        if not isinstance(poke, list) or len(poke) < 3 or poke[1] == self.node:
            return  # ours: delivered here already
        self.stats.pokes_received += 1
        if poke[0] == POKE_LOG and len(poke) == 6:
            self.stats.observe_latency((self._now_ms() - int(poke[3])) / 1000)
            self._heard(name, int(poke[2]))
            entry = _entry(poke[4], int(poke[2]))
            body = poke[5] if entry is not None and isinstance(poke[5], bytes) else None
            self.local.log_advanced(name, int(poke[2]), entry if body else None, body)
        elif poke[0] == POKE_PUSH and isinstance(poke[2], bytes):
            self.local.push((name,), poke[2])
        elif (poke[0] == POKE_SIGN_OUT and len(poke) == 4 and isinstance(poke[3], str)
              and (poke[2] is None or isinstance(poke[2], bytes))):
            self.signed_out(name, poke[2], poke[3])

    def _tell_head(self, name: str) -> None:
        del self._graces[name]
        head = self._heads.get(name)
        if head is not None:  # still held here: tell the highest position known now
            self.local.log_advanced(name, head, None, None)

    def check_logs(self) -> Deferred[Any] | None:
        """Tell every stream of this node its user's log position (the bounded check)."""
        if self._checking:
            return None
        names = self.local.names()
        if not names:
            return None
        for name in names:
            self._heads.setdefault(name, 0)
        self._checking = True
        d = log_heads(self.database, names)

        def tell(heads: dict[str, int]) -> None:
            for name, head in heads.items():
                if name not in self._heads:
                    continue  # left meanwhile
                if head > self._heads[name]:
                    # Further than any poke said: most often a poke still on its way, which
                    # carries the entry. The streams hear of it POKE_GRACE later, by when
                    # that poke has made the notice moot (no read), or has been lost.
                    self._heads[name] = head
                    self.stats.catch_up_reads += 1
                    if name not in self._graces:
                        self._graces[name] = self.clock.callLater(POKE_GRACE,
                                                                  self._tell_head, name)
                else:
                    self.local.log_advanced(name, head, None, None)

        def done(result: object) -> None:
            self._checking = False

        d.addCallback(tell)
        d.addErrback(lambda f: log.warn("node {node}: log check failed: {why}",
                                        node=self.node, why=f.getErrorMessage()))
        d.addBoth(done)
        return d

    # --- presence ------------------------------------------------------------------------------

    def online(self, names: Iterable[str]) -> Deferred[frozenset[str]]:
        names = list(dict.fromkeys(names))
        here = self.local.names_set()
        local = frozenset(n for n in names if n in here)
        others = [n for n in names if n not in here]
        if not others:
            return defer.succeed(local)
        d = self.bus.run_script(_ONLINE, [self._key(n) for n in others], [self._now_ms()])
        if d is None:
            return defer.succeed(local)
        d.addCallback(lambda counts: local | frozenset(
            n for n, count in zip(others, counts, strict=True) if int(count) > 0))
        return self._answer(d, local)

    def online_count(self) -> int:
        return self.local.online_count()

    def devices_online(self, name: str) -> Deferred[frozenset[bytes]]:
        """The devices of ``name`` with a live session on any node (this node's only, if
        Redis does not answer)."""
        here = frozenset(d for d in (getattr(conn, "device_id", b"")
                                     for conn in self.local.sessions(name)) if d)
        d = self.bus.run_script(_MEMBERS, [self._key(name)], [self._now_ms()])
        if d is None:
            return defer.succeed(here)

        def parse(members: list[bytes]) -> frozenset[bytes]:
            devices = set(here)
            for member in members:
                try:
                    device = bytes.fromhex(member.rsplit(b"/", 1)[1].decode())
                except (IndexError, ValueError):
                    continue
                if device:
                    devices.add(device)
            return frozenset(devices)

        d.addCallback(parse)
        return self._answer(d, here)

    def heartbeat(self) -> Deferred[Any] | None:
        """Refresh this node's sessions in Redis, then sweep expired ones (any node's)."""
        if not self.bus.connected:
            return None
        now = self._now_ms()
        ttl = self.ttl_ms
        by_user: dict[str, list[bytes]] = {}
        for conn, member in self._members.items():
            by_user.setdefault(conn.name, []).append(member)
        users = sorted(by_user)
        runs = []
        for i in range(0, len(users), HEARTBEAT_BATCH):
            args: list[bytes | int | str] = [now + ttl, now, ttl, self.prefix]
            for name in users[i:i + HEARTBEAT_BATCH]:
                args.extend((name, len(by_user[name]), *by_user[name]))
            d = self.bus.run_script(_HEARTBEAT, [self._sessions_key], args)
            if d is not None:
                runs.append(d.addCallback(self._back_online))
        sweep = self.bus.run_script(_SWEEP, [self._sessions_key],
                                    [now, ttl, self.prefix, SWEEP_BATCH])
        if sweep is not None:
            runs.append(sweep.addCallback(self._swept))
        return defer.DeferredList(runs, consumeErrors=True)

    def _back_online(self, names: list[bytes]) -> None:
        for raw in names:
            name = raw.decode()
            if name in self.local.names_set():
                self.came_online(name)

    def _swept(self, gone: list[bytes]) -> None:
        last_seen: dict[str, int] = {}
        for raw, seen in zip(gone[::2], gone[1::2], strict=True):
            name = raw.decode()
            last_seen[name] = max(last_seen.get(name, 0), int(seen))
        here = self.local.names_set()
        for name, seen_ms in last_seen.items():
            if name not in here:  # else the next heartbeat puts this node's sessions back
                self._gone(name, seen_ms)

    def _gone(self, name: str, seen_ms: int) -> None:
        log.info("node {node}: {name} went offline with a node (last seen {seen})",
                 node=self.node, name=name, seen=seen_ms)
        d = advance_last_seen(self.database, name, seen_ms)
        d.addCallback(lambda _: self.went_offline(name, seen_ms))
        d.addErrback(lambda f: log.failure("recording last seen", f))

    def _bus_up(self) -> None:
        """(Re)connected: put this node's sessions back at once (Redis may have restarted),
        and publish the sign-outs made meanwhile."""
        self.heartbeat()
        self._publish_pending_sign_outs()
