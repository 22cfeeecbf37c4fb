"""Three-node soak: K clients chat for N minutes with three ``twistd chatserver`` nodes on one
PostgreSQL database and a private Redis bus, while proxies cut their connections at random,
a random node is SIGKILLed (and started again a second later) periodically and Redis is
restarted (empty) once; then every conversation is checked for loss, duplication and order.

    .venv/bin/python -m tests.soak.cluster_soak --minutes 10 --clients 6

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

from twisted.internet import task
from twisted.internet.defer import Deferred

from chatproto.client import Backoff, open_session
from tests.faults.conftest import PASSWORD
from tests.faults.proxy import Proxy, UpstreamCut
from tests.faults.servers import database_for
from tests.scaleout.nodes import Cluster, RedisProcess
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
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--settle-timeout", type=float, default=180.0)
    args = p.parse_args(argv)
    args.database = "postgres"
    args.restart_every = args.kill_every
    return args


class ClusterSoak(Soak):
    def __init__(self, reactor: Any, args: argparse.Namespace, workdir: Path, uri: str,
                 redis: RedisProcess) -> None:
        super().__init__(reactor, args, workdir, uri)
        self.redis = redis
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
                ping_interval=2, ping_timeout=2, login_timeout=10)
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
        await task.deferLater(self.reactor, seconds, lambda: None)
        self.sending = False
        for loop in loops:
            loop.stop()
        kills.stop()
        for call in (drops, redis_restart):
            if call.active():
                call.cancel()
        for node in self.cluster.nodes:
            self.respawn(node)
        if self.redis.proc is not None and self.redis.proc.poll() is not None:
            self.redis.start()
        ok = await self.settle_and_report(
            start, f"nodes={NODES}",
            f"cuts={sum(p.cuts for p in self.proxies)} node_kills={self.kills} "
            f"redis_restarts={self.redis_restarts}")
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

    def restart_redis(self) -> None:
        self.redis.kill()
        self.redis_restarts += 1
        self.reactor.callLater(1.0, self.redis.start)


async def main(reactor: Any, argv: list[str]) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="cluster-soak-") as tmp, \
            database_for("postgres", Path(tmp)) as uri:
        redis = RedisProcess(Path(tmp))
        redis.start()
        soak = ClusterSoak(reactor, args, Path(tmp), uri, redis)
        try:
            return await soak.run()
        finally:
            for node in soak.cluster.nodes:
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
