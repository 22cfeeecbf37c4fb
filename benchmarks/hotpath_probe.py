"""The server's per-message work, measured in process: CPU and instructions per message.

``python -m benchmarks.hotpath_probe`` builds a real :class:`ChatServer` on a real store
(SQLite in a temporary directory, the group committer, adbapi's thread), signs in clients
through the real handshake, and drives Chats through :class:`ChatServerProtocol` over
in-memory transports (no sockets, no load generator process): each round, every sender hands
the server ``--window`` Chats in one ``dataReceived``; the round ends when every SendAck and
Deliver it caused has been written; then every client acknowledges what it got
(``DeliveryAck``), as the benchmark's clients do. Shapes:

* ``--shape direct`` (default): ``--pairs`` pairs, each sender chats to its peer (SendAck,
  the sender's echo and the peer's Deliver per message);
* ``--shape group``: one group of ``--members`` members, one sender (a Deliver per member).

The in-process clients encrypt their frames and decrypt and decode what they receive on the
reactor thread (what the server wrote in one reactor turn is read in the next, in one piece, as
from a socket); that time is measured apart
(``client``) and subtracted from the reactor thread's CPU (``server reactor``); the database
thread's CPU is the process's minus the reactor thread's. CPU times move with the machine's
load; ``--instructions`` instead runs the probe twice under ``valgrind --tool=callgrind``
(``--messages`` and twice as many, same warm-up) and reports the difference in instructions
per message, which does not (it includes the in-process clients' decoding, the same for
every server version). At the end every recipient must have received every message exactly
once and in order, else the probe fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from chatproto.server.limits import LimitSettings
from chatproto.server.passwords import Argon2Parameters, PasswordHasher
from chatproto.server.protocol import ChatServerFactory, ChatServerProtocol
from chatproto.server.service import GC_GEN0_THRESHOLD, ChatServer
from chatproto.storage.database import Database
from chatproto.storage.store import ChatStore
from chatproto.wire import messages as m
from chatproto.wire.handshake import ClientHandshake, LoginComplete, Registered

#: Cheap Argon2id: logins are set-up here, not what is measured.
CHEAP = Argon2Parameters(memory_kib=64, iterations=1, lanes=1)
PASSWORD = "probe password 1"
#: Rounds before the measurement (caches, the SQLite page cache, first-use imports).
WARMUP_ROUNDS = 3


class ProbeError(Exception):
    """The server did not deliver what it was sent."""


class Waiter:
    """Counts the SendAcks and Delivers of a round; fires when all arrived."""

    def __init__(self, call_later: Any) -> None:
        self.call_later = call_later
        self.remaining = 0
        self.done: Deferred[None] | None = None

    def expect(self, count: int) -> Deferred[None]:
        self.remaining += count
        self.done = Deferred()
        done = self.done
        if self.remaining <= 0:
            self.done = None
            done.callback(None)
        return done

    def arrived(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0 and self.done is not None:
            # Later, not inside the client's read: the next round is not the client's time.
            done, self.done = self.done, None
            self.call_later(0, done.callback, None)


class ProbeTransport(StringTransport):
    """Hands every write to the client at once (nothing is buffered)."""

    def __init__(self, client: ProbeClient, addr: IPv4Address) -> None:
        super().__init__(peerAddress=addr)
        self.client = client
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.client.buffer(data)

    def writeSequence(self, seq: Any) -> None:
        self.write(b"".join(seq))

    def loseConnection(self) -> None:
        if not self.disconnecting:
            super().loseConnection()
            proto = self.client.proto
            assert proto is not None
            self.client.reactor.callLater(0, proto.connectionLost, None)

    def abortConnection(self) -> None:
        self.loseConnection()


class ProbeClient:
    """One client: the sans-IO handshake, then counting (and checking) what arrives."""

    def __init__(self, probe: Probe, name: str) -> None:
        self.probe = probe
        self.name = name
        self.hs = ClientHandshake()
        self.events: list[Any] = []
        self.event_waiter: Deferred[None] | None = None
        self.proto: ChatServerProtocol | None = None
        self.transport: ProbeTransport | None = None
        self.max_seq = 0
        self.acked = 0
        self.delivered: list[tuple[int, bytes]] = []  # (user_seq, client_msg_id) from others
        self.echoes = 0
        self.acks = 0
        self.errors: list[m.Error] = []
        self.req = 0
        self.pending: list[bytes] = []

    def connect(self, reactor: Any) -> None:
        # An address per client: the per-address registration limit stays out of the way.
        index = len(self.probe.clients)
        addr = IPv4Address("TCP", f"10.{index // 250}.{index % 250 + 1}.1", 40000)
        self.proto = self.probe.factory.buildProtocol(addr)  # type: ignore[arg-type]
        self.transport = ProbeTransport(self, addr)
        self.proto.makeConnection(self.transport)
        self.reactor = reactor

    def next_req(self) -> int:
        self.req += 1
        return self.req

    # --- the handshake (set-up, not measured) --------------------------------------------------

    def _to_server(self) -> None:
        out = self.hs.data_to_send()
        if out:
            assert self.proto is not None
            self.reactor.callLater(0, self.proto.dataReceived, out)

    def wake(self) -> None:
        waiter, self.event_waiter = self.event_waiter, None
        if waiter is not None:
            waiter.callback(None)

    async def event(self) -> Any:
        while not self.events:
            self.event_waiter = Deferred()
            await self.event_waiter
        return self.events.pop(0)

    async def login(self, register: bool) -> None:
        self.hs.start()
        self._to_server()
        await self.event()  # ServerIdentityReceived
        self.hs.accept_identity()
        if register:
            self.hs.register(self.name, PASSWORD)
            expected: type = Registered
        else:
            self.hs.signin(self.name, PASSWORD, os.urandom(16))
            expected = LoginComplete
        self._to_server()
        event = await self.event()
        if not isinstance(event, expected):
            raise ProbeError(f"{self.name}: {event!r}")

    # --- the session ---------------------------------------------------------------------------

    def buffer(self, data: bytes) -> None:
        """The server wrote: the client reads it in the reactor's next turn (all of that turn's
        writes at once, as a socket would hand them over), outside the server's call stack."""
        if self.hs.session is None:
            self.received(data)
            return
        self.pending.append(data)
        if len(self.pending) == 1:
            self.reactor.callLater(0, self.read_pending)

    def read_pending(self) -> None:
        data, self.pending = b"".join(self.pending), []
        self.received(data)

    def received(self, data: bytes) -> None:
        if self.hs.session is None:
            self.events += self.hs.receive_data(data)
            self._to_server()
            if self.events:
                self.wake()
            if self.hs.session is None:
                return
            data = b""
        started = time.thread_time()
        session = self.hs.session
        session.receive_data(data)
        waiter = self.probe.waiter
        while (msg := session.next_message()) is not None:
            if isinstance(msg, m.Deliver):
                self.max_seq = msg.user_seq
                if msg.sender == self.name:
                    self.echoes += 1
                else:
                    self.delivered.append((msg.user_seq, msg.client_msg_id or b""))
                waiter.arrived()
            elif isinstance(msg, m.SendAck):
                self.acks += 1
                waiter.arrived()
            elif isinstance(msg, m.Error):
                self.errors.append(msg)
            elif isinstance(msg, m.SyncDone | m.AckCreateGroup):
                self.events.append(msg)
                self.wake()
        self.probe.client_cpu += time.thread_time() - started

    def frame(self, msgs: list[m.Message]) -> bytes:
        """The client's frames for ``msgs`` (encrypted now, handed over later)."""
        assert self.hs.session is not None
        return self.hs.session.send_many(msgs)

    def ack_frame(self) -> bytes | None:
        if self.max_seq <= self.acked:
            return None
        self.acked = self.max_seq
        return self.frame([m.DeliveryAck(self.max_seq)])


class Probe:
    def __init__(self, reactor: Any, args: argparse.Namespace, directory: str) -> None:
        self.reactor = reactor
        self.args = args
        self.directory = directory
        self.clients: list[ProbeClient] = []
        self.waiter = Waiter(reactor.callLater)
        self.client_cpu = 0.0

    async def start(self) -> None:
        self.db = Database.from_uri(f"sqlite:{os.path.join(self.directory, 'probe.db')}")
        await self.db.start()
        self.hasher = PasswordHasher(self.reactor, CHEAP)
        self.hasher.start()
        clock = task.Clock()
        clock.advance(1_700_000_000)
        self.store = ChatStore(self.db)
        self.server = ChatServer(reactor=clock, identity=Ed25519PrivateKey.generate(),
                                 store=self.store, hasher=self.hasher, limits=LimitSettings(
                                     max_connections_per_ip=100_000, message_rate=1e9,
                                     message_burst=10**9))
        self.factory = ChatServerFactory(self.server)

    async def sign_in(self, names: list[str]) -> None:
        for name in names:
            c = ProbeClient(self, name)
            self.clients.append(c)
            c.connect(self.reactor)
            await c.login(register=True)
            assert c.proto is not None
            c.transport.loseConnection()  # type: ignore[union-attr]
        self.clients.clear()
        for name in names:
            c = ProbeClient(self, name)
            self.clients.append(c)
            c.connect(self.reactor)
            await c.login(register=False)
            c.proto.dataReceived(c.frame([m.Sync(c.next_req(), None)]))  # type: ignore[union-attr]
            done = await c.event()
            if not isinstance(done, m.SyncDone):
                raise ProbeError(f"{name}: {done!r}")

    async def round(self, sends: list[tuple[ProbeClient, bytes]], expected: int) -> None:
        done = self.waiter.expect(expected)
        for client, data in sends:
            client.proto.dataReceived(data)  # type: ignore[union-attr]
        await done
        for client in self.clients:
            started = time.thread_time()
            ack = client.ack_frame()
            self.client_cpu += time.thread_time() - started
            if ack is not None:
                client.proto.dataReceived(ack)  # type: ignore[union-attr]

    def stop(self) -> Deferred[Any]:
        d = self.server.stop()

        def closed(_: object) -> None:
            self.hasher.stop()
            self.db.close()

        return d.addBoth(closed)


def chats(sender: ProbeClient, count: int, group_id: int, to: str | None, first: int,
          body: bytes) -> list[m.Message]:
    return [m.Chat(sender.next_req(), (first + i).to_bytes(16, "big"), group_id, to, None,
                   m.ContentType.TEXT, body, None) for i in range(count)]


async def run(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    # As the service does after start-up: start-up objects out of the collector's sight.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    with tempfile.TemporaryDirectory(prefix="hotpath-probe-") as directory:
        probe = Probe(reactor, args, directory)
        await probe.start()
        try:
            return await measure(probe, args)
        finally:
            await probe.stop()


async def measure(probe: Probe, args: argparse.Namespace) -> dict[str, Any]:
    body = b"x" * args.body
    window = args.window
    plan: list[tuple[ProbeClient, ProbeClient | None, int, str | None]] = []
    if args.shape == "direct":
        names = [f"p{i}" for i in range(2 * args.pairs)]
        await probe.sign_in(names)
        clients = probe.clients
        for i in range(args.pairs):
            a, b = clients[2 * i], clients[2 * i + 1]
            plan.append((a, b, 0, b.name))
        per_round = window * args.pairs
        expected = 3 * per_round  # SendAck, the sender's echo, the peer's Deliver
    else:
        names = [f"g{i}" for i in range(args.members)]
        await probe.sign_in(names)
        owner = probe.clients[0]
        others = names[1:]
        owner.proto.dataReceived(owner.frame([m.CreateGroup(  # type: ignore[union-attr]
            owner.next_req(), m.GroupKind.MANY, len(others), tuple(others), "probe")]))
        ack = await owner.event()
        if not isinstance(ack, m.AckCreateGroup):
            raise ProbeError(f"CreateGroup: {ack!r}")
        await probe.round([], 0)  # the CREATED event reaches everyone
        plan.append((owner, None, ack.group_id, None))
        per_round = window
        expected = window * (1 + args.members)  # SendAck, and a Deliver per member
    rounds = WARMUP_ROUNDS + max(1, args.messages // per_round)
    sent = 0

    def frames() -> list[tuple[ProbeClient, bytes]]:
        """The next round's Chat frames (the client's cost: counted apart)."""
        nonlocal sent
        started = time.thread_time()
        sends = []
        for sender, _peer, group_id, to in plan:
            sends.append((sender, sender.frame(chats(sender, window, group_id, to, sent,
                                                     body))))
            sent += window
        probe.client_cpu += time.thread_time() - started
        return sends

    for _ in range(WARMUP_ROUNDS):
        await probe.round(frames(), expected)
    probe.client_cpu = 0.0
    cpu0, thread0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
    for _ in range(rounds - WARMUP_ROUNDS):
        await probe.round(frames(), expected)
    cpu, thread = time.process_time() - cpu0, time.thread_time() - thread0
    wall = time.perf_counter() - wall0
    client_cpu = probe.client_cpu
    check(probe, plan, sent)
    measured = (rounds - WARMUP_ROUNDS) * per_round
    writes = sum(c.transport.writes for c in probe.clients if c.transport is not None)
    us = 1e6 / measured
    return {
        "shape": args.shape, "pairs": args.pairs, "members": args.members, "window": window,
        "messages": measured, "rounds": rounds - WARMUP_ROUNDS,
        "server_cpu_us_per_msg": round((cpu - client_cpu) * us, 1),
        "server_reactor_us_per_msg": round((thread - client_cpu) * us, 1),
        "database_thread_us_per_msg": round((cpu - thread) * us, 1),
        "client_us_per_msg": round(client_cpu * us, 1),
        "wall_us_per_msg": round(wall * us, 1),
        "transport_writes_per_msg": round(writes / sent, 2),
    }


def check(probe: Probe, plan: list[tuple[ProbeClient, ProbeClient | None, int, str | None]],
          sent: int) -> None:
    """Every message reached every recipient exactly once, in order, and nothing failed."""
    for c in probe.clients:
        if c.errors:
            raise ProbeError(f"{c.name} got errors: {c.errors[:3]}")
        seqs = [s for s, _ in c.delivered]
        if seqs != sorted(set(seqs)):
            raise ProbeError(f"{c.name}: deliveries out of order or repeated")
    ids = list(range(sent))
    if probe.args.shape == "direct":
        got = sorted(int.from_bytes(cmid, "big") for _, peer, _, _ in plan
                     for _, cmid in peer.delivered)  # type: ignore[union-attr]
        if got != ids:
            raise ProbeError(f"direct: {len(got)} deliveries for {sent} messages")
    else:
        for c in probe.clients[1:]:
            got = [int.from_bytes(cmid, "big") for _, cmid in c.delivered if cmid]
            if got != ids:
                raise ProbeError(f"{c.name}: {len(got)} deliveries for {sent} messages")


_COLLECTED = re.compile(r"Collected : (\d+)")


def callgrind(args: argparse.Namespace, messages: int) -> int:
    """Instructions of one probe run under callgrind."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
               sys.executable, "-m", "benchmarks.hotpath_probe", "--shape", args.shape,
               "--pairs", str(args.pairs), "--members", str(args.members),
               "--window", str(args.window), "--body", str(args.body),
               "--messages", str(messages)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise ProbeError(f"callgrind run failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("direct", "group"), default="direct")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--window", type=int, default=100, help="Chats per sender per round")
    parser.add_argument("--messages", type=int, default=20_000, help="messages measured")
    parser.add_argument("--body", type=int, default=100, help="text bytes per message")
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per message under callgrind (slow)")
    args = parser.parse_args(argv)
    if args.instructions:
        small = callgrind(args, args.messages)
        large = callgrind(args, 2 * args.messages)
        result: dict[str, Any] = {
            "shape": args.shape, "window": args.window, "messages": args.messages,
            "instructions_per_msg": round((large - small) / args.messages)}
        print("RESULT " + json.dumps(result))
        return 0
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    out: dict[str, Any] = {}
    failure: list[BaseException] = []

    async def go() -> None:
        try:
            out.update(await run(reactor, args))
        except BaseException as e:  # reported below, after the reactor stopped
            failure.append(e)
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(go()))
    reactor.run()
    if failure:
        raise failure[0]
    print("RESULT " + json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

