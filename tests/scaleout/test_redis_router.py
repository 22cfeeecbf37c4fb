"""The Redis router in process: two routers (two "nodes") on the machine's Redis under a
prefix of their own, a SQLite database for the log positions, and fake sessions."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import defer, task
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred

from chatproto.server.bus import BusAddress
from chatproto.server.redis_router import MAX_POKE_BODY, POKE_GRACE, RedisRouter
from chatproto.storage.database import Database
from chatproto.storage.store import ChatStore, Draft, LogEntry
from chatproto.wire import messages as m
from tests.faults.servers import free_port
from tests.services import require_redis

WAIT = 10.0


class FakeSession:
    """A signed-in connection as the router sees it: records what reaches it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pushed: list[bytes] = []
        self.advanced: list[tuple[int, Any, Any]] = []
        self._waiting: list[tuple[Any, Deferred[None]]] = []

    def push(self, payload: bytes) -> None:
        self.pushed.append(payload)
        self._check()

    def log_advanced(self, user_seq: int, entry: Any, body: bytes | None) -> None:
        self.advanced.append((user_seq, entry, body))
        self._check()

    def _check(self) -> None:
        waiting, self._waiting = self._waiting, []
        for predicate, d in waiting:
            if predicate():
                d.callback(None)
            else:
                self._waiting.append((predicate, d))

    def until(self, predicate: Any) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if predicate():
            d.callback(None)
        else:
            self._waiting.append((predicate, d))
        return d.addTimeout(WAIT, _reactor)


def address(port: int = 6379) -> BusAddress:
    return BusAddress("127.0.0.1", port, 0, f"chatproto-test-{uuid.uuid4().hex[:12]}:".encode())


async def connected(*routers: RedisRouter) -> None:
    for _ in range(int(WAIT / 0.02)):
        if all(r.bus.connected for r in routers):
            return
        await task.deferLater(_reactor, 0.02, lambda: None)  # connection readiness poll
    raise AssertionError("the routers did not connect to Redis")


@pytest_twisted.async_yield_fixture()
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database.from_uri(f"sqlite:{tmp_path / 'chat.db'}")
    await db.start()
    store = ChatStore(db)
    for name in ("ann", "bob"):
        await store.create_user(name, "x", 0)
    yield db
    db.close()


def two_nodes(database: Database, addr: BusAddress, clock: Any = None,
              ttl: float = 15.0) -> tuple[RedisRouter, RedisRouter]:
    return tuple(  # type: ignore[return-value]
        RedisRouter(_reactor, addr, f"node{i}", database, presence_ttl=ttl, clock=clock)
        for i in (1, 2))


@pytest_twisted.ensureDeferred
async def test_pokes_and_pushes_reach_the_other_node(database: Database) -> None:
    """A log advance on node1 reaches bob's session on node2 as a poke carrying the committed
    entry and its body (a body over MAX_POKE_BODY travels without: node2's stream reads the
    log); an encoded push reaches node2's session once; neither node delivers its own poke
    twice."""
    require_redis()
    one, two = two_nodes(database, address())
    for r in (one, two):
        r.bus.start()
    try:
        await connected(one, two)
        bob1, bob2 = FakeSession("bob"), FakeSession("bob")
        one.attach(bob1)
        two.attach(bob2)
        await two.bus.run_script("return 1", [], [])  # SUBSCRIBE went out before this
        entry = LogEntry(0, "ann", "bob", 1, 5, b"\1" * 16, m.ContentType.TEXT, b"body", None,
                         None, 4, 9)
        one.log_advanced("bob", 1, entry, b"body")
        await bob2.until(lambda: len(bob2.advanced) == 1)
        assert bob1.advanced == [(1, entry, b"body")]
        seq, got, body = bob2.advanced[0]
        assert (seq, body) == (1, b"body")
        assert got == dataclasses.replace(entry, body=b"", user_seq=1)
        # A large body (or an image) is not carried: the stream reads the log.
        big = b"x" * (MAX_POKE_BODY + 1)
        one.log_advanced("bob", 2, dataclasses.replace(entry, body=big), big)
        await bob2.until(lambda: len(bob2.advanced) == 2)
        assert bob2.advanced[1] == (2, None, None)
        one.push(["bob"], b"receipt")
        await bob2.until(lambda: bob2.pushed == [b"receipt"])
        assert bob1.pushed == [b"receipt"]
        assert one.stats.pokes_sent == 3 and two.stats.pokes_received == 3
        assert sum(two.stats.latency_counts) == 2
    finally:
        await defer.DeferredList([one.stop(), two.stop()])


@pytest_twisted.ensureDeferred
async def test_devices_online_span_nodes(database: Database) -> None:
    """bob's devices signed in on either node are online for both; a device whose session
    left is not; without Redis a node knows its own."""
    require_redis()
    one, two = two_nodes(database, address())
    for r in (one, two):
        r.bus.start()
    try:
        await connected(one, two)
        phone, laptop = FakeSession("bob"), FakeSession("bob")
        phone.device_id, laptop.device_id = b"p" * 16, b"l" * 16  # type: ignore[attr-defined]
        await one.arrive(phone)
        await two.arrive(laptop)
        assert await one.devices_online("bob") == {b"p" * 16, b"l" * 16}
        assert await two.devices_online("bob") == {b"p" * 16, b"l" * 16}
        await two.leave(laptop)
        assert await one.devices_online("bob") == {b"p" * 16}
        await one.bus.stop()
        assert await one.devices_online("bob") == {b"p" * 16}
    finally:
        await defer.DeferredList([one.stop(), two.stop()])


@pytest_twisted.ensureDeferred
async def test_presence_spans_nodes(database: Database) -> None:
    """bob's first session anywhere and his last one anywhere are what count: a second
    session on the other node is not "first", ending one of two is not "last"; online
    queries on node1 see node2's users."""
    require_redis()
    one, two = two_nodes(database, address())
    for r in (one, two):
        r.bus.start()
    try:
        await connected(one, two)
        bob1, bob2 = FakeSession("bob"), FakeSession("bob")
        assert await one.arrive(bob1) is True
        assert await two.arrive(bob2) is False
        assert await one.online(["bob", "ann"]) == frozenset({"bob"})
        assert await one.leave(bob1) is False
        assert await one.online(["bob"]) == frozenset({"bob"})
        assert await two.leave(bob2) is True
        assert await one.online(["bob"]) == frozenset()
    finally:
        await defer.DeferredList([one.stop(), two.stop()])


@pytest_twisted.ensureDeferred
async def test_a_dead_nodes_users_go_offline_with_their_last_heartbeat(
        database: Database) -> None:
    """node2 holds bob and dies (no leave); once the TTL passed without a heartbeat, node1's
    sweep reports bob offline, last seen at node2's last heartbeat, and stores it."""
    require_redis()
    clock = task.Clock()
    clock.advance(1_000_000)
    one, two = two_nodes(database, address(), clock=clock, ttl=3.0)
    offline: list[tuple[str, int]] = []
    one.presence_changes(lambda name: None, lambda name, seen: offline.append((name, seen)))
    for r in (one, two):
        r.bus.start()
    try:
        await connected(one, two)
        assert await two.arrive(FakeSession("bob")) is True
        clock.advance(1)
        await two.heartbeat()  # node2's last sign of life, at 1_000_001 s
        await two.stop()  # dies: its sessions stay in Redis until they expire
        clock.advance(2.5)
        await one.heartbeat()
        assert offline == [] and await one.online(["bob"]) == frozenset({"bob"})
        clock.advance(1)
        await one.heartbeat()
        for _ in range(int(WAIT / 0.02)):
            if offline:
                break
            await task.deferLater(_reactor, 0.02, lambda: None)  # the DB write's completion
        assert offline == [("bob", 1_000_001_000)]
        assert await one.online(["bob"]) == frozenset()
        user = await ChatStore(database).get_user("bob")
        assert user is not None and user.last_seen_ms == 1_000_001_000
    finally:
        await one.stop()


@pytest_twisted.ensureDeferred
async def test_a_user_still_on_a_live_node_stays_online_when_another_dies(
        database: Database) -> None:
    """bob has a session on node2 and one on node3; node2 dies. Once its session expired,
    node1's sweep removes it but reports nothing (node3 keeps bob's member fresh): bob is
    still online and his last seen is not touched; when node3's session leaves, bob is
    offline."""
    require_redis()
    clock = task.Clock()
    clock.advance(2_000_000)
    addr = address()
    one, two, three = (RedisRouter(_reactor, addr, f"node{i}", database, presence_ttl=3.0,
                                   clock=clock) for i in (1, 2, 3))
    offline: list[tuple[str, int]] = []
    one.presence_changes(lambda name: None, lambda name, seen: offline.append((name, seen)))
    for r in (one, two, three):
        r.bus.start()
    try:
        await connected(one, two, three)
        bob3 = FakeSession("bob")
        assert await two.arrive(FakeSession("bob")) is True
        assert await three.arrive(bob3) is False
        await two.stop()  # dies
        for _ in range(3):
            clock.advance(1.5)
            await three.heartbeat()
            await one.heartbeat()
        sessions = await one.bus.run_script(
            "return redis.call('zcard', KEYS[1])", [addr.prefix + b"p:bob"], [])
        assert sessions == 1  # node2's expired member was swept, node3's stays
        assert offline == [] and await one.online(["bob"]) == frozenset({"bob"})
        user = await ChatStore(database).get_user("bob")
        assert user is not None and user.last_seen_ms in (None, 0)
        assert await three.leave(bob3) is True
        assert await one.online(["bob"]) == frozenset()
    finally:
        await defer.DeferredList([one.stop(), two.stop(), three.stop()])


@pytest_twisted.ensureDeferred
async def test_without_redis_the_log_check_delivers(database: Database) -> None:
    """With the bus unreachable a log advance still reaches this node's sessions, presence
    answers from this node, and the periodic log check tells bob's stream the log position
    committed by another node (the database is the truth)."""
    clock = task.Clock()
    router = RedisRouter(_reactor, address(free_port()), "lonely", database, clock=clock)
    router.bus.start()
    try:
        bob = FakeSession("bob")
        assert await router.arrive(bob) is True
        router.log_advanced("bob", 1, None, None)
        assert router.stats.pokes_sent == 0 and bob.advanced == [(1, None, None)]
        assert await router.online(["bob", "ann"]) == frozenset({"bob"})
        store = ChatStore(database)
        await store.create_direct("ann", "bob", 0)
        for cid in (b"\1" * 16, b"\2" * 16):
            await store.append_message(Draft("ann", 0, "bob", cid, m.ContentType.TEXT, b"hi",
                                             None, None, 0))
        await router.check_logs()
        # Ahead of every poke: the stream hears of it once a poke in flight would have come.
        assert bob.advanced[-1] == (1, None, None)
        clock.advance(POKE_GRACE)
        assert bob.advanced[-1] == (2, None, None)
        assert router.stats.catch_up_reads == 1
        await router.check_logs()  # known now: told at once
        assert bob.advanced[-2:] == [(2, None, None)] * 2
        await store.append_message(Draft("ann", 0, "bob", b"\3" * 16, m.ContentType.TEXT,
                                         b"hi", None, None, 0))
        await router.check_logs()
        assert len(clock.getDelayedCalls()) == 1  # waiting out the grace
        assert await router.leave(bob) is True
    finally:
        await router.stop()
    assert not clock.getDelayedCalls()  # stop cancels it
    assert bob.advanced[-1] == (2, None, None)


@pytest_twisted.ensureDeferred
async def test_a_password_protected_bus(database: Database, tmp_path: Path) -> None:
    """With redis://:PASSWORD@HOST the router authenticates and works; a wrong password
    leaves it disconnected (serving its own sessions) rather than failing."""
    from tests.scaleout.nodes import RedisProcess

    redis = RedisProcess(tmp_path, ("--requirepass", "s3cret"))
    redis.start()
    good = BusAddress.parse(f"redis://:s3cret@127.0.0.1:{redis.port}/0?prefix=pw:")
    bad = BusAddress.parse(f"redis://:wrong@127.0.0.1:{redis.port}/0?prefix=pw:")
    one = RedisRouter(_reactor, good, "node1", database)
    two = RedisRouter(_reactor, bad, "node2", database)
    try:
        for r in (one, two):
            r.bus.start()
        await connected(one)
        assert await one.arrive(FakeSession("bob")) is True
        assert not two.bus.connected
        assert await two.arrive(FakeSession("bob")) is True  # answered from the node
    finally:
        await defer.DeferredList([one.stop(), two.stop()])
        redis.kill()


@pytest_twisted.ensureDeferred
async def test_sign_outs_reach_the_other_node(database: Database) -> None:
    """A sign-out on node1 (the whole account, then one device) reaches node2, which holds
    a session of bob, with its device and reason; node1 does not hear its own; a sign-out of
    a user node2 holds no session of does not reach node2."""
    require_redis()
    one, two = two_nodes(database, address())
    heard: dict[str, list[tuple[str, bytes | None, str]]] = {"one": [], "two": []}
    one.sign_outs(lambda *args: heard["one"].append(args))
    two.sign_outs(lambda *args: heard["two"].append(args))
    for r in (one, two):
        r.bus.start()
    try:
        await connected(one, two)
        one.attach(FakeSession("bob"))
        two.attach(FakeSession("bob"))
        await two.bus.run_script("return 1", [], [])  # SUBSCRIBE went out before this
        one.sign_out_elsewhere("ann", None, "nobody on node2")
        one.sign_out_elsewhere("bob", None, "the password was changed")
        one.sign_out_elsewhere("bob", b"\7" * 16, "signed out by another device")
        for _ in range(int(WAIT / 0.02)):
            if len(heard["two"]) == 2:
                break
            await task.deferLater(_reactor, 0.02, lambda: None)  # the pokes' arrival
        assert heard["two"] == [("bob", None, "the password was changed"),
                                ("bob", b"\7" * 16, "signed out by another device")]
        assert heard["one"] == []
        assert one.stats.pokes_sent == 3 and two.stats.pokes_received == 2
    finally:
        await defer.DeferredList([one.stop(), two.stop()])


@pytest_twisted.ensureDeferred
async def test_a_sign_out_made_while_the_bus_is_down_goes_out_when_it_is_back(
        database: Database) -> None:
    """node1 loses the bus and signs bob out meanwhile: nothing is lost; once node1 is
    connected again, node2 (connected all along) hears it, once."""
    require_redis()
    one, two = two_nodes(database, address())
    heard: list[tuple[str, bytes | None, str]] = []
    two.sign_outs(lambda *args: heard.append(args))
    for r in (one, two):
        r.bus.start()
    try:
        await connected(one, two)
        two.attach(FakeSession("bob"))
        await two.bus.run_script("return 1", [], [])  # SUBSCRIBE went out before this
        await one.bus.stop()
        assert not one.bus.connected
        one.sign_out_elsewhere("bob", None, "the account was deleted")
        assert one.stats.pokes_sent == 0
        one.bus.start()
        await connected(one)
        for _ in range(int(WAIT / 0.02)):
            if heard:
                break
            await task.deferLater(_reactor, 0.02, lambda: None)  # the poke's arrival
        assert heard == [("bob", None, "the account was deleted")]
        assert one.stats.pokes_sent == 1
        one._bus_up()  # noqa: SLF001 - as after another reconnection: nothing goes again
        assert one.stats.pokes_sent == 1 and len(heard) == 1
    finally:
        await defer.DeferredList([one.stop(), two.stop()])
