"""Nodes and the bus failing under (bounded) load: a node SIGKILLed, Redis restarted.

The counts that must stay 0: acknowledged messages lost, messages shown twice, messages out
of their conversation's order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet import task, threads
from twisted.internet.defer import Deferred

from chatproto.client import Backoff, ChatSession, open_session
from chatproto.wire import messages as m
from tests.faults.checks import Tally, full_history
from tests.faults.conftest import PASSWORD
from tests.scaleout.nodes import TEST_PRESENCE_TTL, Cluster, EventRecorder, RedisProcess, cluster
from tests.scaleout.postgres import private_postgres
from tests.services import PgSchema

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

#: Users, each signed in at node (index % 3) first, with the other nodes as fail-overs.
USERS = ["ann", "ben", "cat", "dan", "eve", "fay"]
PER_SENDER = 60


def session(nodes: Cluster, name: str, rec: EventRecorder, tmp_path: Path,
            order: list[int], in_flight: int = 64) -> ChatSession:
    return open_session(_reactor, [nodes.endpoint(i) for i in order], name, PASSWORD,
                        server_fingerprint=nodes.fingerprint, listener=rec, register=True,
                        ping_interval=0, backoff=Backoff(0.05, 0.3, 2),
                        max_in_flight=in_flight,
                        outbox_path=tmp_path / f"{name}.outbox",
                        state_path=tmp_path / f"{name}.state")


async def chat_under(nodes: Cluster, tmp_path: Path, fault: Any, when: float,
                     in_flight: int = 64) -> Tally:
    """Every user sends PER_SENDER numbered messages to the next one (a node away), at most
    ``in_flight`` unacknowledged each; ``fault()`` runs once ``when`` of all sends are
    acknowledged. Returns the tally over what the listeners showed and over every
    conversation's history."""
    recs = {u: EventRecorder() for u in USERS}
    sessions = {u: session(nodes, u, recs[u], tmp_path,
                           [(i + k) % 3 for k in range(3)], in_flight)
                for i, u in enumerate(USERS)}
    try:
        for s in sessions.values():
            await s.wait_connected()
        total = len(USERS) * PER_SENDER
        acks: dict[tuple[str, int], m.SendAck] = {}
        fired: list[bool] = []

        def on_ack(ack: m.SendAck, sender: str, i: int) -> None:
            acks[(sender, i)] = ack
            if not fired and len(acks) >= when * total:
                fired.append(True)
                fault()

        sends = []
        for i in range(PER_SENDER):
            for j, u in enumerate(USERS):
                d = sessions[u].send_text(USERS[(j + 1) % len(USERS)], f"{u}:{i}")
                sends.append(d.addCallback(on_ack, u, i))
        for d in sends:
            await d
        assert fired and len(acks) == total
        tally = Tally()
        for j, u in enumerate(USERS):
            sender = USERS[j - 1]
            await recs[u].until(lambda r, s=sender: len(r.bodies(s)) >= PER_SENDER, 60)
            got = [d for d in recs[u].chats if d.sender == sender]
            tally.check(f"{sender}->{u} shown", [int(d.body.split(b":")[1]) for d in got],
                        list(range(PER_SENDER)))
            for d in got:
                assert acks[(sender, int(d.body.split(b":")[1]))].conv_seq == d.conv_seq
            history = await full_history(sessions[u], sender)
            tally.check(f"{sender}->{u} history",
                        [int(e.body.split(b":")[1]) for e in history], list(range(PER_SENDER)))
        assert all(len(s.outbox) == 0 for s in sessions.values())
        return tally
    finally:
        for s in sessions.values():
            await s.close()


@pytest_twisted.ensureDeferred
async def test_sigkill_a_node_under_load(tmp_path: Path) -> None:
    """node1 is SIGKILLed when a third of the 360 messages are acknowledged: its users
    reconnect to node2 or node3 and go on; 0 lost, 0 shown twice, order kept. A user who
    could only reach node1 goes offline for the others within the presence TTL (plus a
    heartbeat), last seen within a heartbeat before the kill."""
    reactor = _reactor
    with cluster(tmp_path) as nodes:
        await nodes.start(reactor)
        watcher = EventRecorder()
        stuck = EventRecorder()
        gus = session(nodes, "gus", stuck, tmp_path, [0])  # node1 only
        hal = session(nodes, "hal", watcher, tmp_path, [1])
        try:
            await gus.wait_connected()
            await hal.wait_connected()
            await hal.create_chat("gus")
            killed_at: list[float] = []

            def kill() -> None:
                killed_at.append(reactor.seconds())
                nodes.nodes[0].kill()

            tally = await chat_under(nodes, tmp_path, kill, 1 / 3)
            assert tally.ok(), tally.details
            await watcher.until(lambda r: any(
                p.name == "gus" and not p.online for p in r.presence), 30)
            event = next(p for p in watcher.presence if p.name == "gus" and not p.online)
            assert event.last_seen_ms is not None
            heartbeat = TEST_PRESENCE_TTL / 3
            assert killed_at[0] - heartbeat - 1 <= event.last_seen_ms / 1000 <= killed_at[0]
        finally:
            await gus.close()
            await hal.close()


@pytest_twisted.ensureDeferred
async def test_redis_restart_under_load(tmp_path: Path) -> None:
    """The bus (a private redis-server) is killed when a quarter of the messages are
    acknowledged and started again a second later, empty: meanwhile cross-node delivery
    goes through the log check; after it the nodes reconnect and re-register their
    sessions. 0 lost, 0 shown twice, order kept; presence answers are right again after."""
    reactor = _reactor
    redis = RedisProcess(tmp_path)
    redis.start()
    try:
        with cluster(tmp_path, bus=redis.url + "?prefix=restart:") as nodes:
            await nodes.start(reactor)

            restarted: Deferred[None] = Deferred()

            def restart() -> None:
                redis.kill()
                reactor.callLater(1, lambda: restarted.callback(redis.start()))

            tally = await chat_under(nodes, tmp_path, restart, 1 / 4)
            assert tally.ok(), tally.details
            await restarted
            assert redis.starts == 2
            assert all("lost the Redis" in n.logs() for n in nodes.nodes)
            for _ in range(200):  # reconnection poll: at most 20 s (the backoff is <= 5 s)
                if all(n.logs().count("bus: connected") >= 2 for n in nodes.nodes):
                    break
                await task.deferLater(reactor, 0.1, lambda: None)
            else:
                raise AssertionError("the nodes did not reconnect to Redis:\n" + nodes.logs())
            # After the restart the nodes put their sessions back: node1 sees node3's user.
            probe = EventRecorder()
            ann = session(nodes, "ann", probe, tmp_path, [0])
            far = session(nodes, "ben", EventRecorder(), tmp_path, [2])
            try:
                await ann.wait_connected()
                await far.wait_connected()
                info = {p.name: p.online for p in await ann.presence()}
                assert info.get("ben") is True
            finally:
                await ann.close()
                await far.close()
    finally:
        redis.kill()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
@pytest_twisted.ensureDeferred
async def test_postgres_restart_under_load(tmp_path: Path, mode: str) -> None:
    """The database (a private PostgreSQL cluster, never the machine's shared one) is stopped
    with ``pg_ctl -m MODE`` when a quarter of the messages are acknowledged and started again
    a second later; ``immediate`` is a crash (the restart replays the WAL). Meanwhile sends
    fail with a 5xx Error (the clients retry from their outboxes), sign-ins fail and the log
    check fails; after it every node's connection pool reconnects. 0 lost, 0 shown twice,
    order kept, every SendAck's conv_seq is what the recipient saw."""
    reactor = _reactor
    with private_postgres() as pg:
        uri = PgSchema(pg.dsn("test")).uri
        with cluster(tmp_path, database=uri) as nodes:
            await nodes.start(reactor)
            restarted: Deferred[None] = Deferred()

            async def start_again() -> None:
                await task.deferLater(reactor, 1, lambda: None)  # the database is away 1 s
                await threads.deferToThread(pg.start)

            def fault() -> None:
                # Blocking: the clients send nothing more before the database is down.
                pg.stop(mode)
                Deferred.fromCoroutine(start_again()).chainDeferred(restarted)

            # One send in flight per user: most sends come after the fault (pipelined, the
            # servers would have committed all 360 before the clients saw a quarter of the
            # SendAcks), and a send refused with a transient error has nothing behind it to
            # overtake it (with several in flight it may be stored after them: "Delivery
            # semantics" in the README).
            tally = await chat_under(nodes, tmp_path, fault, 1 / 4, in_flight=1)
            assert tally.ok(), tally.details
            await restarted
            assert (pg.stops, pg.starts) == (1, 2)
            logs = nodes.logs()
            assert "log check failed" in logs, logs
