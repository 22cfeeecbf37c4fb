"""Soak test: K clients chat for N minutes against a real ``twistd chatserver`` while a proxy
cuts their connections at random and the server is SIGKILLed and restarted periodically; then
every conversation is checked for loss, duplication and order.

    .venv/bin/python -m tests.soak.soak --minutes 10 --clients 5 --database sqlite

Prints ``lost=0 duplicated=0 out_of_order=0`` (and other figures) and exits 1 if any count is
not zero.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.defer import Deferred

from chatproto.client import Backoff, ChatSession, open_session
from chatproto.wire import messages as m
from tests.faults.checks import Tally, full_history
from tests.faults.conftest import PASSWORD, Recorder
from tests.faults.proxy import Proxy, UpstreamCut
from tests.faults.servers import ServerProcess, database_for


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=1.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--rate", type=float, default=20.0, help="messages per second per client")
    p.add_argument("--drop-every", type=float, default=2.0, help="mean seconds between cuts")
    p.add_argument("--restart-every", type=float, default=30.0,
                   help="seconds between server SIGKILL + restart")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--settle-timeout", type=float, default=180.0)
    return p.parse_args(argv)


class Soak:
    def __init__(self, reactor: Any, args: argparse.Namespace, workdir: Path, uri: str) -> None:
        self.reactor = reactor
        self.args = args
        self.rng = random.Random(args.seed)  # noqa: S311
        self.workdir = workdir
        self.server = ServerProcess(workdir, uri)
        self.proxy: Proxy | None = None
        self.names = [f"user{i}" for i in range(args.clients)]
        self.recs = {n: Recorder() for n in self.names}
        self.sessions: dict[str, ChatSession] = {}
        self.group_id = 0
        self.sent: dict[tuple[str, str], int] = defaultdict(int)  # (sender, conv) -> count
        self.acks: dict[tuple[str, str, int], m.SendAck] = {}
        self.failures: list[str] = []
        self.pending: list[Deferred[Any]] = []
        self.restarts = 0
        self.sending = True

    async def run(self) -> int:
        a = self.args
        await self.server.start(self.reactor)
        self.proxy = Proxy(self.reactor, self.server.port)
        await self.proxy.start()
        for n in self.names:
            self.sessions[n] = open_session(
                self.reactor, f"tcp:127.0.0.1:{self.proxy.port}", n, PASSWORD, register=True,
                server_fingerprint=self.server.fingerprint, listener=self.recs[n],
                outbox_path=self.workdir / f"{n}.outbox", state_path=self.workdir / f"{n}.state",
                backoff=Backoff(0.05, 1.0, 2), ping_interval=2, ping_timeout=2, login_timeout=10,
            )
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
        restarts = task.LoopingCall(self.restart)
        restarts.start(a.restart_every, now=False)
        await task.deferLater(self.reactor, a.minutes * 60, lambda: None)
        self.sending = False
        for loop in loops:
            loop.stop()
        restarts.stop()
        if drops.active():
            drops.cancel()
        if self.server.proc is not None and self.server.proc.poll() is not None:
            self.server.spawn()
        ok = await self.settle_and_report(
            start, f"database={a.database}",
            f"cuts={self.proxy.cuts} server_restarts={self.restarts}")
        await self.proxy.stop()
        self.server.stop()
        return 0 if ok else 1

    async def settle_and_report(self, start: float, where: str, faults: str) -> bool:
        """Wait until every acknowledged message arrived (or give up), check every
        conversation, print the counts; whether nothing was lost, doubled or reordered."""
        a = self.args
        send_secs = time.monotonic() - start
        gave_up: Deferred[None] = Deferred()
        settle = self.reactor.callLater(a.settle_timeout, self.give_up, gave_up)
        await defer.DeferredList([defer.ensureDeferred(self.settled()), gave_up],
                                 fireOnOneCallback=True, consumeErrors=True)
        total = sum(self.sent.values())
        if not settle.active():  # gave up: the clients stop, the processes are ended
            print(f"seconds={send_secs:.0f} clients={a.clients} {where} sent={total} "
                  f"acked={len(self.acks)} {faults} settled=no")
            for s in self.sessions.values():
                await s.close()
            return False
        settle.cancel()
        tally = await self.check()
        print(f"seconds={send_secs:.0f} clients={a.clients} {where} sent={total} "
              f"acked={len(self.acks)} {faults} "
              f"connections={sum(s.connections for s in self.sessions.values())} "
              f"send_failures={len(self.failures)} "
              f"duplicates_ignored={sum(s.duplicates_ignored for s in self.sessions.values())}")
        print(tally.line())
        for line in tally.details[:20]:
            print("  ", line)
        for failure in self.failures[:10]:
            print("   send failed:", failure)
        for s in self.sessions.values():
            await s.close()
        return tally.ok() and not self.failures and len(self.acks) == total

    async def settled(self) -> None:
        """Every send answered and every acknowledged message shown to its recipients."""
        await defer.DeferredList(self.pending, consumeErrors=True)
        for n in self.names:
            await self.recs[n].until(lambda r, n=n: self.all_received(n))

    def give_up(self, gave_up: Deferred[None]) -> None:
        """The settle timeout passed: say what is left, and stop waiting (the run fails and
        its processes are ended, rather than the reactor stopping under them)."""
        print("gave up waiting for the clients to settle", file=sys.stderr)
        print(f"outboxes: {[len(s.outbox) for s in self.sessions.values()]}", file=sys.stderr)
        print(f"states: {[s.state for s in self.sessions.values()]}", file=sys.stderr)
        gave_up.callback(None)

    def send_one(self, sender: str) -> None:
        if not self.sending:
            return
        i = self.names.index(sender)
        if self.rng.random() < 0.5:
            conv, to = "d", self.names[(i + 1) % len(self.names)]
            target: str | int = to
        else:
            conv, target = "g", self.group_id
        n = self.sent[(sender, conv)]
        self.sent[(sender, conv)] = n + 1
        d = self.sessions[sender].send_text(target, f"{sender}:{conv}:{n}")
        d.addCallbacks(self.acked, self.failed, callbackArgs=(sender, conv, n),
                       errbackArgs=(sender, conv, n))
        self.pending.append(d)

    def acked(self, ack: m.SendAck, sender: str, conv: str, n: int) -> None:
        self.acks[(sender, conv, n)] = ack

    def failed(self, failure: Any, sender: str, conv: str, n: int) -> None:
        self.failures.append(f"{sender}:{conv}:{n}: {failure.getErrorMessage()}")

    def drop(self) -> None:
        if not self.sending or self.proxy is None:
            return
        open_conns = [c for c in self.proxy.connections if not c.cut_done]
        if open_conns:
            if self.rng.random() < 0.5:
                self.rng.choice(open_conns).cut()
                self.proxy.cuts += 1
            else:  # inside the next Chat frame
                self.proxy.arm(UpstreamCut(10, lambda total: self.rng.randrange(total)))
        self.reactor.callLater(self.rng.expovariate(1 / self.args.drop_every), self.drop)

    def restart(self) -> None:
        self.server.kill()
        self.server.spawn()
        self.restarts += 1

    def expected(self, receiver: str) -> dict[tuple[str, str], int]:
        """(sender, conv) -> how many messages ``receiver`` must get."""
        out = {}
        i = self.names.index(receiver)
        for (sender, conv), count in self.sent.items():
            j = self.names.index(sender)
            if conv == "g" or sender == receiver or (j + 1) % len(self.names) == i:
                out[(sender, conv)] = count
        return out

    def all_received(self, receiver: str) -> bool:
        return len(self.recs[receiver].chats) >= sum(self.expected(receiver).values())

    async def check(self) -> Tally:
        tally = Tally()
        for receiver in self.names:
            got: dict[tuple[str, str], list[int]] = defaultdict(list)
            for d in self.recs[receiver].chats:
                sender, conv, n = d.body.decode().split(":")
                got[(sender, conv)].append(int(n))
                ack = self.acks.get((sender, conv, int(n)))
                if ack is not None and ack.conv_seq != d.conv_seq:
                    tally.out_of_order += 1
                    tally.details.append(f"{d.body!r}: acked {ack.conv_seq}, got {d.conv_seq}")
            for key, count in self.expected(receiver).items():
                tally.check(f"{key[0]}->{receiver} {key[1]}", got.get(key, []),
                            list(range(count)))
        # The server's logs: each direct conversation and the group.
        for i, sender in enumerate(self.names):
            peer = self.names[(i + 1) % len(self.names)]
            entries = await full_history(self.sessions[sender], peer)
            numbers = [int(e.body.decode().split(":")[2]) for e in entries
                       if e.sender == sender]
            tally.check(f"history {sender}->{peer}", numbers,
                        list(range(self.sent[(sender, "d")])))
        entries = await full_history(self.sessions[self.names[0]], self.group_id)
        for sender in self.names:
            numbers = [int(e.body.decode().split(":")[2]) for e in entries
                       if e.sender == sender and e.content_type == m.ContentType.TEXT]
            tally.check(f"history group {sender}", numbers, list(range(self.sent[(sender, "g")])))
        return tally


async def main(reactor: Any, argv: list[str]) -> int:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, \
            database_for(args.database, Path(tmp)) as uri:
        soak = Soak(reactor, args, Path(tmp), uri)
        try:
            return await soak.run()
        finally:
            soak.server.kill()


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
