"""The load generator: many client connections in one process, on a Twisted epoll reactor.

It speaks the real protocol to the real server (``--target server``): ``ClientHandshake``
(Hello, register, Signin, ClientKey/Finished) and the session frames (``FrameEncoder`` /
``FrameDecoder``), or the baseline relay's fixed-key preamble (``--target relay``). To keep its
own cost low it does not use the client library nor the validating message codec for the hot
path: Chat payloads are packed with ``msgpack.packb`` in the wire layout of ``messages.Chat``
and incoming payloads are unpacked with ``msgpack.unpackb`` and read by position.

A delivered message is acknowledged with ``DeliveryAck(up_to)`` (server target only) once 64
deliveries are pending or 50 ms have passed, as a batching client would. Pings are answered.

One run = one scenario round; the result is printed as one line ``RESULT {json}``. It measures
its own CPU time (getrusage), and the server's CPU (``/proc/PID/stat``) and RSS
(``/proc/PID/status``) when ``--server-pid`` is given. Every run has a hard deadline
(``--timeout``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet import defer, protocol, task
from twisted.internet.defer import Deferred

from benchmarks.common import (
    RELAY_HELLO,
    percentile,
    pin_to,
    proc_cpu,
    proc_rss_kib,
    raise_nofile,
    relay_keys,
    self_cpu,
)
from chatproto.wire import messages as m
from chatproto.wire.frame import FrameDecoder, FrameEncoder
from chatproto.wire.handshake import (
    ClientHandshake,
    HandshakeFailed,
    LoginComplete,
    Registered,
    RegisterRejected,
    ServerIdentityReceived,
    SigninRejected,
)

CMID = struct.Struct(">QQ")
ACK_EVERY = 64
ACK_INTERVAL = 0.05
PASSWORD = "bench-password-1"  # noqa: S105 - a throwaway account's password
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
unpackb = msgpack.unpackb
now = time.perf_counter


class Failed(Exception):
    pass


class Gen:
    """State shared by every connection of one run."""

    def __init__(self, args: argparse.Namespace, reactor: Any) -> None:
        self.args = args
        self.reactor = reactor
        self.relay = args.target == "relay"
        self.prefix = args.prefix
        self.seq = 0
        self.clients: list[Client] = []
        self.inflight: dict[bytes, list[Any]] = {}  # cmid -> [t_sent, sender, remaining]
        self.measuring = False
        self.running = False
        self.delivered = 0
        self.delivered_bytes = 0
        self.echoes = 0
        self.sendacks = 0
        self.errors: dict[str, int] = {}
        self.latencies: list[float] = []
        self.on_deliver: Callable[[Client, list[Any]], None] = self.deliver_direct
        self.ack = True  # params "ack": false turns DeliveryAck off (to measure its cost)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def reset(self) -> None:
        self.delivered = 0
        self.delivered_bytes = 0
        self.echoes = 0
        self.latencies = []

    def next_cmid(self, index: int) -> bytes:
        self.seq += 1
        return CMID.pack(index, self.seq)

    # Delivery handlers: who counts as the message's recipients.

    def deliver_direct(self, client: Client, v: list[Any]) -> None:
        if v[3] == client.name:
            self.echoes += 1
            return
        rec = self.inflight.pop(v[7], None)
        if rec is None:
            return
        if self.measuring:
            self.delivered += 1
            self.delivered_bytes += len(v[9])
            self.latencies.append(now() - rec[0])
        sender = rec[1]
        sender.outstanding -= 1
        sender.pump()

    def deliver_fanout(self, client: Client, v: list[Any]) -> None:
        rec = self.inflight.get(v[7])
        if rec is None:
            return
        if self.measuring:
            self.delivered += 1
            self.delivered_bytes += len(v[9])
        rec[2] -= 1
        if rec[2] <= 0:
            del self.inflight[v[7]]
            if self.measuring:
                self.latencies.append(now() - rec[0])
            sender = rec[1]
            sender.outstanding -= 1
            sender.pump()


class Client(protocol.Protocol):
    """One connection: handshake (or relay preamble), then the session's hot path."""

    def __init__(self, gen: Gen, index: int, name: str, *, register: bool = True,
                 signin: bool = True, sync: bool = True, group: int = 0) -> None:
        self.gen = gen
        self.index = index
        self.name = name
        self.device_id = hashlib.sha256(name.encode()).digest()[:16]
        self.do_register = register
        self.do_signin = signin
        self.do_sync = sync
        self.group = group
        self.ready: Deferred[Client] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self.hs: ClientHandshake | None = None
        self.encoder: FrameEncoder | None = None
        self.decoder: FrameDecoder | None = None
        self.connected_at = 0.0
        self.logged_in_at = 0.0
        self.req = 0
        self.waiters: dict[int, Deferred[list[Any]]] = {}
        # Traffic.
        self.to: str | None = None
        self.group_id = 0
        self.recipients = 1
        self.window = 0
        self.outstanding = 0
        self.body = b""
        self.ctype = m.ContentType.TEXT
        self.image: list[Any] | None = None
        #: Every image different (its last 16 bytes are the client_msg_id): no deduplication.
        self.distinct = False
        self.max_seq = 0
        self.acked = 0
        self.last_ack = 0.0
        self.deliveries = 0
        self.sendacks = 0
        self.refused = 0
        #: Paced by SendAcks, not deliveries (the recipient may never read): ``outstanding``
        #: counts Chats not yet answered, and none is tracked in ``gen.inflight``.
        self.ack_paced = False
        self.transport: Any

    # Connection and handshake.

    def connectionMade(self) -> None:
        self.connected_at = now()
        if self.gen.relay:
            self.transport.write(RELAY_HELLO.pack(self.index, self.group))
            return
        # Version 1: the generator packs raw payloads (version 2 pads inside the message).
        self.hs = ClientHandshake(version=1)
        self.hs.start()
        self.transport.write(self.hs.data_to_send())

    def connectionLost(self, reason: object = None) -> None:
        if not self.ready.called:
            self.ready.errback(Failed(f"{self.name}: connection lost during login: {reason}"))
        if not self.closed.called:
            self.closed.callback(None)

    def fail(self, why: str) -> None:
        self.gen.error(why.split(":")[0])
        if not self.ready.called:
            self.ready.errback(Failed(f"{self.name}: {why}"))
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.gen.relay and self.decoder is None:  # the relay's one-byte "registered"
            ck, civ, sk, siv = relay_keys(self.index)
            self.encoder = FrameEncoder(ck, civ)
            self.decoder = FrameDecoder(sk, siv)
            self.logged_in_at = now()
            self.ready.callback(self)
            data = data[1:]
        if self.decoder is not None:
            self.decoder.receive_data(data)
            self.process()
            return
        hs = self.hs
        assert hs is not None
        try:
            events = hs.receive_data(data)
            for ev in events:
                if isinstance(ev, ServerIdentityReceived):
                    hs.accept_identity()
                    if self.do_register:
                        hs.register(self.name, PASSWORD)
                    else:
                        hs.signin(self.name, PASSWORD, self.device_id)
                elif isinstance(ev, Registered):
                    if not self.do_signin:
                        self.transport.write(hs.data_to_send())
                        self.ready.callback(self)
                        self.transport.loseConnection()
                        return
                    hs.signin(self.name, PASSWORD, self.device_id)
                elif isinstance(ev, RegisterRejected | SigninRejected | HandshakeFailed):
                    self.transport.write(hs.data_to_send())
                    self.fail(f"{type(ev).__name__}: {ev.code} {ev.reason}")
                    return
                elif isinstance(ev, LoginComplete):
                    session = hs.session
                    assert session is not None
                    # The hot path uses the session's frame codecs directly.
                    self.encoder = session._encoder
                    self.decoder = session._decoder
            out = hs.data_to_send()
            if out:
                self.transport.write(out)
        except Exception as e:  # protocol errors: count and drop the connection
            self.fail(f"handshake error: {e!r}")
            return
        if self.decoder is not None:
            self.hs = None
            self.logged_in_at = now()
            if self.do_sync:
                d = self.request([m.Sync.TYPE, self.next_req(), None])
                d.addCallback(lambda _: self.ready.callback(self))
            else:
                self.ready.callback(self)
            self.process()

    # Session.

    def next_req(self) -> int:
        self.req = (self.req + 1) & 0xFFFFFFFF
        return self.req

    def write_payload(self, payload: bytes) -> None:
        assert self.encoder is not None
        self.transport.write(self.encoder.encode(payload))

    def request(self, fields: list[Any]) -> Deferred[list[Any]]:
        """Send a message whose answer echoes its req (Sync, CreateGroup)."""
        d: Deferred[list[Any]] = Deferred()
        self.waiters[fields[1]] = d
        self.write_payload(packb(fields))
        return d

    def process(self) -> None:
        decoder = self.decoder
        assert decoder is not None
        gen = self.gen
        try:
            while True:
                payload = decoder.next_payload()
                if payload is None:
                    break
                v = unpackb(payload)
                t = v[0]
                if t == 41:  # Deliver
                    self.deliveries += 1
                    if v[1] > self.max_seq:
                        self.max_seq = v[1]
                    if v[8] != m.ContentType.EVENT:
                        gen.on_deliver(self, v)
                elif t == 40:  # SendAck
                    gen.sendacks += 1
                    self.sendacks += 1
                    if self.ack_paced:
                        self.outstanding -= 1
                        self.pump()
                elif t in (61, 37):  # SyncDone, AckCreateGroup
                    d = self.waiters.pop(v[1], None)
                    if d is not None:
                        d.callback(v)
                elif t == 64:  # Ping
                    self.write_payload(packb([65, v[1]]))
                elif t == 32:  # Error
                    gen.error(f"Error {v[2]}: {v[3]}")
                    self.refused += 1
                    if self.ack_paced:
                        self.outstanding -= 1
                        self.pump()
                    d = self.waiters.pop(v[1], None)
                    if d is not None:
                        d.errback(Failed(f"Error {v[2]}: {v[3]}"))
        except Exception as e:
            self.fail(f"session error: {e!r}")
            return
        self.maybe_ack(False)

    def maybe_ack(self, force: bool) -> None:
        gen = self.gen
        if gen.relay or not gen.ack or self.max_seq <= self.acked or self.encoder is None:
            return
        t = now()
        if force or self.max_seq - self.acked >= ACK_EVERY or t - self.last_ack >= ACK_INTERVAL:
            self.acked = self.max_seq
            self.last_ack = t
            self.write_payload(packb([42, self.max_seq]))

    def send_chat(self) -> None:
        gen = self.gen
        cmid = gen.next_cmid(self.index)
        if not self.ack_paced:
            gen.inflight[cmid] = [now(), self, self.recipients]
        self.outstanding += 1
        body, image = self.body, self.image
        if self.distinct:
            body = body[:-len(cmid)] + cmid
            image = [len(body), hashlib.sha256(body).digest(), None]
        self.write_payload(packb([38, self.next_req(), cmid, self.group_id, self.to, None,
                                  self.ctype, body, image]))

    def pump(self) -> None:
        if not self.gen.running:
            return
        while self.outstanding < self.window:
            self.send_chat()


class OneFactory(protocol.ClientFactory):
    def __init__(self, client: Client) -> None:
        self.client = client

    def buildProtocol(self, addr: object) -> Client:
        return self.client

    def clientConnectionFailed(self, connector: object, reason: Any) -> None:
        if not self.client.ready.called:
            self.client.ready.errback(reason)


def connect(gen: Gen, client: Client) -> Deferred[Client]:
    gen.reactor.connectTCP("127.0.0.1", gen.args.port, OneFactory(client), timeout=30)
    return client.ready


async def connect_all(gen: Gen, clients: list[Client], concurrency: int) -> None:
    sem = defer.DeferredSemaphore(concurrency)
    await defer.gatherResults(
        [sem.run(connect, gen, c) for c in clients], consumeErrors=True
    )


def sleep(gen: Gen, seconds: float) -> Deferred[None]:
    return task.deferLater(gen.reactor, seconds, lambda: None)


class Meter:
    """CPU and wall clock of a measurement window (generator and server)."""

    def __init__(self, gen: Gen) -> None:
        self.pid = gen.args.server_pid
        self.t0 = now()
        self.g0 = self_cpu()
        self.s0 = proc_cpu(self.pid) if self.pid else 0.0

    def stop(self) -> dict[str, float]:
        wall = now() - self.t0
        gen_cpu = self_cpu() - self.g0
        out = {"wall_s": wall, "gen_cpu_s": gen_cpu, "gen_cpu_pct": 100 * gen_cpu / wall}
        if self.pid:
            server_cpu = proc_cpu(self.pid) - self.s0
            out.update(server_cpu_s=server_cpu, server_cpu_pct=100 * server_cpu / wall,
                       server_rss_kib=proc_rss_kib(self.pid))
        return out


def latency_summary(values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    return {"p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99), "max_ms": max(ms) if ms else float("nan"),
            "samples": len(ms)}


def cdf_sample(values: list[float], points: int = 200) -> list[float]:
    """Evenly spaced quantiles (ms) of the latencies, for the CDF plot."""
    if not values:
        return []
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[min(n - 1, round(i * (n - 1) / (points - 1)))] * 1000 for i in range(points)]


async def drain_inflight(gen: Gen, limit: float) -> None:
    gen.running = False
    deadline = now() + limit
    while gen.inflight and now() < deadline:
        await sleep(gen, 0.05)


def make_clients(gen: Gen, count: int, **kw: Any) -> list[Client]:
    base = gen.args.index_base
    clients = [Client(gen, base + i, f"{gen.prefix}{i}", **kw) for i in range(count)]
    gen.clients.extend(clients)
    return clients


# --- scenarios ---------------------------------------------------------------------------------


async def traffic(gen: Gen, warmup: float, duration: float) -> dict[str, Any]:
    """Run every client's pump for warmup + duration; the figures of the measured part."""
    gen.running = True
    for c in gen.clients:
        c.pump()
    await sleep(gen, warmup)
    gen.reset()
    gen.measuring = True
    meter = Meter(gen)
    sendacks0 = gen.sendacks
    await sleep(gen, duration)
    gen.measuring = False
    out: dict[str, Any] = meter.stop()
    delivered, nbytes = gen.delivered, gen.delivered_bytes
    out.update(delivered=delivered, msgs_per_s=delivered / out["wall_s"],
               mb_per_s=nbytes / out["wall_s"] / 1e6, echoes=gen.echoes,
               sendacks=gen.sendacks - sendacks0, latency=latency_summary(gen.latencies),
               cdf_ms=cdf_sample(gen.latencies))
    if "server_cpu_s" in out and delivered:
        out["server_cpu_us_per_msg"] = out["server_cpu_s"] / delivered * 1e6
    await drain_inflight(gen, 10.0)
    out["undelivered_at_end"] = len(gen.inflight)
    return out


async def scenario_direct(gen: Gen, p: dict[str, Any]) -> dict[str, Any]:
    pairs = p["pairs"]
    clients = make_clients(gen, 2 * pairs)
    await connect_all(gen, clients, p.get("concurrency", 64))
    if p.get("image_bytes"):
        size = p["image_bytes"]
        body = PNG_MAGIC + os.urandom(size - len(PNG_MAGIC))
        image = [size, hashlib.sha256(body).digest(), None]
        ctype = m.ContentType.IMAGE
    else:
        body = b"x" * p.get("body_bytes", 100)
        image = None
        ctype = m.ContentType.TEXT
    for i, c in enumerate(clients):
        partner = clients[i ^ 1]
        c.to = partner.name
        c.window = p["window"]
        c.body, c.image, c.ctype = body, image, ctype
        c.distinct = bool(image and p.get("distinct_images"))
    out = await traffic(gen, p["warmup"], p["duration"])
    out.update(pairs=pairs, window=p["window"])
    return out


async def scenario_fanout(gen: Gen, p: dict[str, Any]) -> dict[str, Any]:
    members = p["members"]
    gen.on_deliver = gen.deliver_fanout
    clients = make_clients(gen, members, group=1)
    await connect_all(gen, clients, p.get("concurrency", 64))
    group_id = 1
    if not gen.relay:
        creator = clients[0]
        others = [c.name for c in clients[1:]]
        ack = await creator.request([m.CreateGroup.TYPE, creator.next_req(), m.GroupKind.MANY,
                                     len(others), others, "bench"])
        group_id = ack[2]
        await sleep(gen, 0.5)  # the CREATED event reaches everyone
    for c in clients[: p["senders"]]:
        c.group_id = group_id
        c.to = None
        c.window = p["window"]
        c.recipients = members
        c.body = b"x" * p.get("body_bytes", 100)
    out = await traffic(gen, p["warmup"], p["duration"])
    out["deliveries_per_s"] = out["msgs_per_s"]
    out.update(members=members, senders=p["senders"], window=p["window"])
    return out


async def scenario_drain(gen: Gen, p: dict[str, Any]) -> dict[str, Any]:
    if gen.relay:
        raise Failed("the offline drain needs storage: server only")
    count = p["messages"]
    sender, receiver = make_clients(gen, 2, sync=False)
    receiver.do_signin = False  # registered, never signed in: offline
    await connect_all(gen, [sender, receiver], 2)
    sender.to = receiver.name
    sender.window = p.get("window", 200)
    sender.body = b"y" * p.get("body_bytes", 100)
    gen.running = True
    t_fill = now()
    sent = 0
    while sent < count:
        while sender.outstanding < sender.window and sent < count:
            sender.send_chat()
            sent += 1
        base = gen.sendacks
        while gen.sendacks == base:
            await sleep(gen, 0.002)
        sender.outstanding = sent - gen.sendacks
    while gen.sendacks < count:
        await sleep(gen, 0.01)
    fill_s = now() - t_fill
    gen.running = False
    gen.inflight.clear()
    got: list[float] = []
    late = Client(gen, gen.args.index_base + 2, receiver.name, register=False, sync=False)
    late.device_id = receiver.device_id
    gen.on_deliver = lambda c, v: got.append(now())
    await connect(gen, late)
    meter = Meter(gen)
    t0 = now()
    done = await late.request([m.Sync.TYPE, late.next_req(), None])
    drain_s = now() - t0
    out: dict[str, Any] = meter.stop()
    out.update(messages=count, fill_s=fill_s, drain_s=drain_s, delivered=len(got),
               last_seq=done[2],
               first_deliver_ms=(got[0] - t0) * 1000 if got else None,
               drain_msgs_per_s=len(got) / drain_s if drain_s else None)
    if len(got) != count:
        gen.error(f"drain delivered {len(got)} of {count}")
    return out


async def scenario_idle(gen: Gen, p: dict[str, Any]) -> dict[str, Any]:
    count = p["connections"]
    warm = p.get("warm", 200)
    pid = gen.args.server_pid
    warm_clients = make_clients(gen, warm)
    await connect_all(gen, warm_clients, p.get("concurrency", 100))
    await sleep(gen, 1.0)
    rss0 = proc_rss_kib(pid)
    t0 = now()
    g0 = self_cpu()
    c0 = proc_cpu(pid)
    gen.args.index_base += warm
    gen.prefix += "i"
    clients = make_clients(gen, count)
    await connect_all(gen, clients, p.get("concurrency", 100))
    connect_s = now() - t0
    server_cpu = proc_cpu(pid) - c0
    gen_cpu = self_cpu() - g0
    await sleep(gen, p.get("settle", 2.0))
    rss1 = proc_rss_kib(pid)
    open_now = sum(1 for c in clients if not c.closed.called)
    return {"connections": count, "open": open_now, "rss0_kib": rss0, "rss1_kib": rss1,
            "server_rss_kib": rss1,
            "rss_per_conn_bytes": (rss1 - rss0) * 1024 / count, "connect_s": connect_s,
            "logins_per_s": count / connect_s, "server_cpu_s": server_cpu,
            "server_cpu_us_per_login": server_cpu / count * 1e6, "gen_cpu_s": gen_cpu,
            "gen_cpu_pct": 100 * gen_cpu / connect_s}


async def scenario_storm(gen: Gen, p: dict[str, Any]) -> dict[str, Any]:
    if gen.relay:
        raise Failed("the login storm needs the real server")
    pairs = p["pairs"]
    storm_users = p["storm_users"]
    chatters = make_clients(gen, 2 * pairs)
    await connect_all(gen, chatters, 16)
    for i, c in enumerate(chatters):
        c.to = chatters[i ^ 1].name
        c.window = 1
        c.body = b"z" * 100
    gen.prefix += "s"
    gen.args.index_base += 2 * pairs
    users = make_clients(gen, storm_users, signin=False, sync=False)
    await connect_all(gen, users, 16)
    gen.clients = list(chatters)
    idle = await traffic(gen, p["warmup"], p["duration"])

    logins: list[float] = []
    storming = [True]
    counter = [0]

    def worker(slot: int) -> None:
        if not storming[0]:
            return
        counter[0] += 1
        name = users[(slot + counter[0]) % storm_users].name
        c = Client(gen, 10_000_000 + counter[0], name, register=False, sync=False)

        def done(client: Client) -> None:
            if gen.measuring:
                logins.append(client.logged_in_at - client.connected_at)
            client.transport.loseConnection()
            gen.reactor.callLater(0, worker, slot)

        def failed(f: Any) -> None:
            gen.error(f"storm login failed: {f.getErrorMessage()[:80]}")
            gen.reactor.callLater(0.05, worker, slot)

        connect(gen, c).addCallbacks(done, failed)

    for slot in range(p["storm_concurrency"]):
        worker(slot)
    storm = await traffic(gen, p["warmup"], p["duration"])
    storm["logins"] = len(logins)
    storm["logins_per_s"] = len(logins) / storm["wall_s"]
    storm["login_latency"] = latency_summary(logins)
    # The same storm without chat traffic: what the login path alone reaches.
    await sleep(gen, 0.5)
    logins.clear()
    gen.measuring = True
    meter = Meter(gen)
    await sleep(gen, p["duration"])
    gen.measuring = False
    alone: dict[str, Any] = meter.stop()
    storming[0] = False
    alone.update(logins=len(logins), logins_per_s=len(logins) / alone["wall_s"],
                 login_latency=latency_summary(logins))
    await sleep(gen, 1.0)
    return {"idle": idle, "storm": storm, "alone": alone,
            "logins_per_s_alone": alone["logins_per_s"], "logins_per_s": storm["logins_per_s"],
            "idle_p99_ms": idle["latency"]["p99_ms"], "storm_p99_ms": storm["latency"]["p99_ms"],
            "server_cpu_pct": storm.get("server_cpu_pct"), "gen_cpu_pct": storm["gen_cpu_pct"],
            "server_rss_kib": storm.get("server_rss_kib")}


class RssSampler:
    """The server's RSS every ``interval`` seconds: ``samples`` is [(seconds, KiB), ...]."""

    def __init__(self, gen: Gen, interval: float = 0.1) -> None:
        self.pid = gen.args.server_pid
        self.t0 = now()
        self.samples: list[tuple[float, int]] = []
        self.loop = task.LoopingCall(self.sample)
        self.loop.clock = gen.reactor
        self.loop.start(interval)

    def sample(self) -> int:
        kib = proc_rss_kib(self.pid)
        self.samples.append((round(now() - self.t0, 3), kib))
        return kib

    def peak_since(self, t: float) -> int:
        """The largest RSS sampled from ``t`` (a ``now()`` time) on, this moment included."""
        self.sample()
        since = t - self.t0
        return max(kib for at, kib in self.samples if at >= since)

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()


class Flood:
    """A pull producer on the flooding client's transport: ``batch`` more Chats each time the
    transport has written everything, so they go out as fast as TCP takes them (and the
    generator's reactor keeps serving the other clients meanwhile)."""

    def __init__(self, client: Client, count: int, batch: int) -> None:
        self.client = client
        self.count = count
        self.batch = batch
        self.sent = 0

    def resumeProducing(self) -> None:
        n = min(self.batch, self.count - self.sent)
        for _ in range(n):
            self.client.send_chat()
        self.sent += n
        if self.sent >= self.count:
            self.client.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self.count = self.sent


async def scenario_flood(gen: Gen, p: dict[str, Any]) -> dict[str, Any]:
    """One client sends ``chats`` Chats as fast as TCP takes them, while ``pairs`` pairs chat
    one in flight: the server's RSS growth (peak over the flood against just before it) and
    the other users' latency during the flood."""
    if gen.relay:
        raise Failed("the flood needs the real server")
    pairs, chats = p["pairs"], p["chats"]
    others = make_clients(gen, 2 * pairs)
    gen.prefix += "f"
    gen.args.index_base += 2 * pairs
    flooder, sink = make_clients(gen, 2)
    await connect_all(gen, [*others, flooder, sink], p.get("concurrency", 64))
    body = b"f" * p.get("body_bytes", 100)
    for i, c in enumerate(others):
        c.to, c.window, c.body = others[i ^ 1].name, 1, body
    flooder.to, flooder.window, flooder.body, flooder.ack_paced = sink.name, 0, body, True
    sampler = RssSampler(gen)
    gen.running = True
    for c in others:
        c.pump()
    await sleep(gen, p["warmup"])
    rss0 = sampler.sample()
    gen.reset()
    gen.measuring = True
    meter = Meter(gen)
    t0 = now()
    flood = Flood(flooder, chats, p.get("batch", 100))
    flooder.transport.registerProducer(flood, False)
    deadline = t0 + p.get("limit_s", 120.0)
    while (flooder.sendacks + flooder.refused < chats and now() < deadline
           and not flooder.closed.called):
        await sleep(gen, 0.05)
    flood_s = now() - t0
    gen.measuring = False
    out: dict[str, Any] = meter.stop()
    peak = sampler.peak_since(t0)
    sampler.stop()
    delivered = gen.delivered
    out.update(chats=chats, flood_sent=flood.sent, flood_acked=flooder.sendacks,
               flood_refused=flooder.refused, flood_s=flood_s,
               flood_msgs_per_s=flooder.sendacks / flood_s, flooder_closed=flooder.closed.called,
               rss0_kib=rss0, rss_peak_kib=peak, rss_growth_kib=peak - rss0,
               rss_samples=sampler.samples, start_s=t0 - sampler.t0, pairs=pairs,
               delivered=delivered, msgs_per_s=delivered / out["wall_s"],
               mb_per_s=gen.delivered_bytes / out["wall_s"] / 1e6,
               latency=latency_summary(gen.latencies), cdf_ms=cdf_sample(gen.latencies))
    if flooder.sendacks + flooder.refused < chats:
        gen.error(f"flood answered {flooder.sendacks + flooder.refused} of {chats}")
    await drain_inflight(gen, 10.0)
    return out


async def scenario_neverread(gen: Gen, p: dict[str, Any]) -> dict[str, Any]:
    """``readers`` signed-in, synced clients stop reading; ``senders`` clients each keep
    ``window`` Chats of ``body_bytes`` to each of them unanswered for ``duration`` seconds
    (paced by SendAcks: the recipients never read). The server's RSS growth per never-reading
    connection (peak against just before)."""
    if gen.relay:
        raise Failed("the never-reading clients need the real server")
    readers = p["readers"]
    deaf = make_clients(gen, readers)
    gen.prefix += "s"
    gen.args.index_base += readers
    senders = make_clients(gen, readers * p.get("senders", 2))
    await connect_all(gen, [*deaf, *senders], p.get("concurrency", 64))
    for c in deaf:
        c.transport.pauseProducing()  # reads nothing from now on
    body = b"n" * p.get("body_bytes", 1000)
    for i, c in enumerate(senders):
        c.to, c.window, c.body, c.ack_paced = deaf[i % readers].name, p["window"], body, True
    sampler = RssSampler(gen)
    await sleep(gen, p.get("settle", 0.5))
    rss0 = sampler.sample()
    meter = Meter(gen)
    t0 = now()
    gen.running = True
    for c in senders:
        c.pump()
    await sleep(gen, p["duration"])
    gen.running = False
    out: dict[str, Any] = meter.stop()
    peak = sampler.peak_since(t0)
    sampler.stop()
    sent = sum(c.sendacks for c in senders)
    growth = peak - rss0
    out.update(readers=readers, senders=len(senders), sent=sent, msgs_per_s=sent / out["wall_s"],
               refused=sum(c.refused for c in senders),
               closed=sum(1 for c in deaf if c.closed.called), rss0_kib=rss0, rss_peak_kib=peak,
               rss_growth_kib=growth, rss_growth_per_reader_bytes=growth * 1024 / readers,
               rss_samples=sampler.samples, start_s=t0 - sampler.t0)
    await sleep(gen, 0.5)
    return out


SCENARIOS = {
    "direct": scenario_direct,
    "flood": scenario_flood,
    "neverread": scenario_neverread,
    "fanout": scenario_fanout,
    "drain": scenario_drain,
    "idle": scenario_idle,
    "storm": scenario_storm,
}


async def run(reactor: Any, args: argparse.Namespace) -> None:
    gen = Gen(args, reactor)
    params = json.loads(args.params)
    gen.ack = bool(params.get("ack", True))
    acker = task.LoopingCall(lambda: [c.maybe_ack(True) for c in gen.clients])
    acker.start(ACK_INTERVAL, now=False)
    t0 = now()
    try:
        result = await SCENARIOS[args.scenario](gen, params)
    except Exception as e:
        result = {"error": f"{type(e).__name__}: {e}"}
    acker.stop()
    result.update(scenario=args.scenario, target=args.target, params=params,
                  gen_affinity=args.affinity, errors=gen.errors, total_s=now() - t0)
    print("RESULT " + json.dumps(result), flush=True)
    for c in gen.clients:
        if c.transport is not None and c.transport.connected:
            c.transport.abortConnection()
    await sleep(gen, 0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description="chatproto load generator")
    parser.add_argument("--target", choices=["server", "relay"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    parser.add_argument("--params", default="{}", help="JSON parameters of the scenario")
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--core", type=int, default=None)
    parser.add_argument("--prefix", default="b", help="user name prefix (unique per run)")
    parser.add_argument("--index-base", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    args.affinity = pin_to(args.core)
    raise_nofile()
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    def deadline() -> None:
        print("RESULT " + json.dumps({"error": f"timeout after {args.timeout} s",
                                      "scenario": args.scenario, "target": args.target}),
              flush=True)
        sys.stdout.flush()
        os._exit(3)

    reactor.callLater(args.timeout, deadline)  # type: ignore[attr-defined]
    task.react(lambda r: defer.ensureDeferred(run(r, args)))


if __name__ == "__main__":
    main()
