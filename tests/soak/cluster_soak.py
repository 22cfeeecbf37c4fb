"""Three-node soak: K clients chat for N minutes with three ``twistd chatserver`` nodes on one
PostgreSQL database and a private Redis bus, while proxies cut their connections at random,
a random node is SIGKILLed (and started again a second later) periodically and Redis is
restarted (empty) once, and, with ``--postgres-restart-at``, PostgreSQL is crashed
(``pg_ctl -m immediate``) and started again once; then every conversation is checked for loss,
duplication and order.

    .venv/bin/python -m tests.soak.cluster_soak --minutes 10 --clients 6
    .venv/bin/python -m tests.soak.cluster_soak --minutes 10 --postgres-restart-at 0.75 \
        --in-flight 1

The PostgreSQL restart uses a private cluster (``initdb`` into a temporary directory, as the
tests do: :mod:`tests.scaleout.postgres`), never the machine's shared server. With several
sends in flight, a send refused during the outage may be stored after a later one already
in flight (the documented "Delivery semantics"), which this script counts as out of order:
hence ``--in-flight 1`` with it.

Each client lists the three nodes (its own first) and fails over to the next when its node
is down. Prints ``lost=0 duplicated=0 out_of_order=0`` (and other figures) and exits 1 if any
count is not zero or a send was not acknowledged.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task, threads
from twisted.internet.defer import Deferred

from chatproto.client import Backoff, open_session
from tests.faults.conftest import PASSWORD
from tests.faults.proxy import Proxy, UpstreamCut
from tests.faults.servers import database_for
from tests.scaleout.nodes import Cluster, RedisProcess
from tests.scaleout.postgres import PostgresProcess, private_postgres
from tests.services import PgSchema
from tests.soak.soak import Soak

NODES = 3


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=1.0)
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--rate", type=float, default=10.0, help="messages per second per client")
    p.add_argument("--drop-every", type=float, default=2.0, help="mean seconds between cuts")
    p.add_argument("--kill-every", type=float, default=8.0,
                   help="seconds between SIGKILLs of a random node (started again 1 s later)")
    p.add_argument("--redis-restart-at", type=float, default=0.5,
                   help="when to restart Redis, as a fraction of the run")
    p.add_argument("--postgres-restart-at", type=float, default=None,
                   help="crash PostgreSQL (a private cluster) at this fraction of the run and "
                        "start it again 1 s later (default: no restart, the shared server)")
    p.add_argument("--in-flight", type=int, default=64,
                   help="unacknowledged sends per client at most")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--settle-timeout", type=float, default=180.0)
    args = p.parse_args(argv)
    args.database = "postgres"
    args.restart_every = args.kill_every
    return args


class ClusterSoak(Soak):
    def __init__(self, reactor: Any, args: argparse.Namespace, workdir: Path, uri: str,
                 redis: RedisProcess, postgres: PostgresProcess | None = None) -> None:
        super().__init__(reactor, args, workdir, uri)
        self.redis = redis
        self.postgres = postgres
        self.postgres_restarts = 0
        self.postgres_back: Deferred[None] | None = None
        self.cluster = Cluster(workdir / "cluster", uri, redis.url + "?prefix=soak:", NODES)
        self.proxies: list[Proxy] = []
        self.kills = 0
        self.redis_restarts = 0

    async def run(self) -> int:
        a = self.args
        await self.cluster.start(self.reactor)
        for node in self.cluster.nodes:
            proxy = Proxy(self.reactor, node.port)
            await proxy.start()
            self.proxies.append(proxy)
        for i, n in enumerate(self.names):
            order = [(i + k) % NODES for k in range(NODES)]
            self.sessions[n] = open_session(
                self.reactor, [f"tcp:127.0.0.1:{self.proxies[j].port}" for j in order], n,
                PASSWORD, register=True, server_fingerprint=self.cluster.fingerprint,
                listener=self.recs[n], outbox_path=self.workdir / f"{n}.outbox",
                state_path=self.workdir / f"{n}.state", backoff=Backoff(0.05, 1.0, 2),
                ping_interval=2, ping_timeout=2, login_timeout=10, max_in_flight=a.in_flight)
        for s in self.sessions.values():
            await s.wait_connected()
        first = self.sessions[self.names[0]]
        while True:
            try:
                ack = await first.create_group(self.names[1:], "soak")
                break
            except Exception:  # a cut during the request: retry
                await first.wait_connected()
        self.group_id = ack.group_id
        start = time.monotonic()
        loops = [task.LoopingCall(self.send_one, n) for n in self.names]
        for loop in loops:
            loop.clock = self.reactor
            loop.start(1 / a.rate, now=False)
        drops = self.reactor.callLater(self.rng.expovariate(1 / a.drop_every), self.drop)
        kills = task.LoopingCall(self.kill_node)
        kills.start(a.kill_every, now=False)
        seconds = a.minutes * 60
        redis_restart = self.reactor.callLater(seconds * a.redis_restart_at, self.restart_redis)
        calls = [drops, redis_restart]
        if self.postgres is not None and a.postgres_restart_at is not None:
            calls.append(self.reactor.callLater(seconds * a.postgres_restart_at,
                                                self.restart_postgres))
        await task.deferLater(self.reactor, seconds, lambda: None)
        self.sending = False
        for loop in loops:
            loop.stop()
        kills.stop()
        for call in calls:
            if call.active():
                call.cancel()
        if self.postgres_back is not None:
            await self.postgres_back
        for node in self.cluster.nodes:
            self.respawn(node)
        if self.redis.proc is not None and self.redis.proc.poll() is not None:
            self.redis.start()
        ok = await self.settle_and_report(
            start, f"nodes={NODES}",
            f"cuts={sum(p.cuts for p in self.proxies)} node_kills={self.kills} "
            f"redis_restarts={self.redis_restarts} postgres_restarts={self.postgres_restarts}")
        for proxy in self.proxies:
            await proxy.stop()
        self.cluster.stop()
        return 0 if ok else 1

    def drop(self) -> None:
        if not self.sending:
            return
        proxy = self.rng.choice(self.proxies)
        open_conns = [c for c in proxy.connections if not c.cut_done]
        if open_conns:
            if self.rng.random() < 0.5:
                self.rng.choice(open_conns).cut()
                proxy.cuts += 1
            else:  # inside the next Chat frame
                proxy.arm(UpstreamCut(10, lambda total: self.rng.randrange(total)))
        self.reactor.callLater(self.rng.expovariate(1 / self.args.drop_every), self.drop)

    def kill_node(self) -> None:
        node = self.rng.choice(self.cluster.nodes)
        node.kill()
        self.kills += 1
        self.reactor.callLater(1.0, self.respawn, node)

    @staticmethod
    def respawn(node: Any) -> None:
        if node.proc is None or node.proc.poll() is not None:
            node.spawn()

    def restart_postgres(self) -> None:
        """Crash PostgreSQL (blocking: a second at most) and start it again 1 s later."""
        pg = self.postgres
        assert pg is not None
        pg.stop("immediate")
        self.postgres_restarts += 1
        self.postgres_back = task.deferLater(self.reactor, 1.0, lambda: None).addCallback(
            lambda _: threads.deferToThread(pg.start))

    def restart_redis(self) -> None:
        self.redis.kill()
        self.redis_restarts += 1
        self.reactor.callLater(1.0, self.redis.start)


async def main(reactor: Any, argv: list[str]) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="cluster-soak-") as tmp:
        if args.postgres_restart_at is None:
            with database_for("postgres", Path(tmp)) as uri:
                return await soak(reactor, args, Path(tmp), uri, None)
        try:
            with private_postgres() as pg:
                return await soak(reactor, args, Path(tmp), PgSchema(pg.dsn("test")).uri, pg)
        except pytest.skip.Exception as e:
            print(f"cannot restart PostgreSQL: {e}", file=sys.stderr)
            return 2


async def soak(reactor: Any, args: argparse.Namespace, workdir: Path, uri: str,
               postgres: PostgresProcess | None) -> int:
    redis = RedisProcess(workdir)
    redis.start()
    run = ClusterSoak(reactor, args, workdir, uri, redis, postgres)
    try:
        return await run.run()
    finally:
        for node in run.cluster.nodes:
            node.kill()
        redis.kill()


def run(argv: list[str]) -> None:
    def start(reactor: Any) -> Deferred[None]:
        d = Deferred.fromCoroutine(main(reactor, argv))

        def done(code: int) -> None:
            if code:
                raise SystemExit(code)

        return d.addCallback(done)

    task.react(start)


if __name__ == "__main__":
    run(sys.argv[1:])
