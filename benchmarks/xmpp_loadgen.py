"""The load generator for the peer: the direct-chat load shape over XMPP, raw XML on a socket.

Each client connects to the Prosody the benchmark started (plaintext c2s on 127.0.0.1), signs
in with SASL ANONYMOUS, binds a resource and learns its full JID; clients ``i`` and ``i ^ 1``
are partners. Each keeps ``window`` ``<message type='chat'>`` stanzas (100-byte bodies) in
flight to its partner: a message is in flight until the partner receives it, as in
``benchmarks/loadgen.py``. It prints one ``RESULT {json}`` line with the same figures
(delivered msgs/s, latency, the server's CPU per message).

Stanzas are found in the stream with a regular expression, not an XML parser: the server is
Prosody, whose output is regular (one ``<message ...>...</message>`` per stanza, single-quoted
attributes), and the generator must stay cheaper than the server it measures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet.defer import Deferred

from benchmarks.common import pin_to, raise_nofile
from benchmarks.loadgen import Meter, cdf_sample, latency_summary, now, sleep

#: The XMPP domain of the benchmark's Prosody (an anonymous-login host).
DOMAIN = "bench.localhost"

_OPEN = (f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' xmlns='jabber:client'"
         " xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>").encode()
_AUTH = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>"
_BIND = (b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
         b"<presence/>")
_MESSAGE = re.compile(rb"<message\b[^>]*\bid=['\"]m(\d+)['\"][^>]*>.*?</message>", re.S)
_JID = re.compile(rb"<jid>([^<]+)</jid>")


class Gen:
    """State shared by every connection of one run."""

    def __init__(self, args: argparse.Namespace, reactor: Any) -> None:
        self.args = args
        self.reactor = reactor
        self.seq = 0
        self.inflight: dict[int, tuple[float, XmppClient]] = {}
        self.measuring = False
        self.running = False
        self.delivered = 0
        self.delivered_bytes = 0
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}


class XmppClient(protocol.Protocol):
    """One XMPP session: SASL ANONYMOUS, resource binding, then chat messages."""

    def __init__(self, gen: Gen) -> None:
        self.gen = gen
        self.ready: Deferred[XmppClient] = Deferred()
        self.buf = b""
        self.state = "features"
        self.jid = b""
        self.to = b""
        self.window = 0
        self.outstanding = 0
        self.body = b""

    def connectionMade(self) -> None:
        self.transport.write(_OPEN)  # type: ignore[union-attr]

    def connectionLost(self, reason: object = None) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"connection lost while {self.state}: {reason}"))

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if self.state == "chat":
            self.messages()
        elif self.state == "features" and b"</stream:features>" in self.buf:
            self.buf = b""
            self.state = "auth"
            self.transport.write(_AUTH)  # type: ignore[union-attr]
        elif self.state == "auth" and b"<success" in self.buf:
            self.buf = b""
            self.state = "bind-features"
            self.transport.write(_OPEN)  # type: ignore[union-attr]
        elif self.state == "auth" and b"<failure" in self.buf:
            self.transport.loseConnection()  # type: ignore[union-attr]
        elif self.state == "bind-features" and b"</stream:features>" in self.buf:
            self.buf = b""
            self.state = "bind"
            self.transport.write(_BIND)  # type: ignore[union-attr]
        elif self.state == "bind" and (found := _JID.search(self.buf)):
            self.jid = found.group(1)
            self.buf = b""
            self.state = "chat"
            self.ready.callback(self)

    def messages(self) -> None:
        gen = self.gen
        end = 0
        for match in _MESSAGE.finditer(self.buf):
            end = match.end()
            rec = gen.inflight.pop(int(match.group(1)), None)
            if rec is None:
                continue
            sent, sender = rec
            if gen.measuring:
                gen.delivered += 1
                gen.delivered_bytes += len(sender.body)
                gen.latencies.append(now() - sent)
            sender.outstanding -= 1
            sender.pump()
        if end:
            self.buf = self.buf[end:]

    def pump(self) -> None:
        gen = self.gen
        if not gen.running:
            return
        out = []
        while self.outstanding < self.window:
            gen.seq += 1
            gen.inflight[gen.seq] = (now(), self)
            self.outstanding += 1
            out.append(b"<message to='%s' type='chat' id='m%d'><body>%s</body></message>"
                       % (self.to, gen.seq, self.body))
        if out:
            self.transport.write(b"".join(out))  # type: ignore[union-attr]


class OneFactory(protocol.ClientFactory):
    def __init__(self, client: XmppClient) -> None:
        self.client = client

    def buildProtocol(self, addr: object) -> XmppClient:
        return self.client

    def clientConnectionFailed(self, connector: object, reason: Any) -> None:
        if not self.client.ready.called:
            self.client.ready.errback(reason.value)


async def scenario_direct(gen: Gen, p: dict[str, Any]) -> dict[str, Any]:
    clients = [XmppClient(gen) for _ in range(2 * p["pairs"])]
    sem = defer.DeferredSemaphore(p.get("concurrency", 32))

    def connect(c: XmppClient) -> Deferred[XmppClient]:
        gen.reactor.connectTCP("127.0.0.1", gen.args.port, OneFactory(c), timeout=30)
        return c.ready

    await defer.gatherResults([sem.run(connect, c) for c in clients], consumeErrors=True)
    body = b"x" * p.get("body_bytes", 100)
    for i, c in enumerate(clients):
        c.to = clients[i ^ 1].jid
        c.window = p["window"]
        c.body = body
    gen.running = True
    for c in clients:
        c.pump()
    await sleep(gen, p["warmup"])  # type: ignore[arg-type]
    gen.delivered = gen.delivered_bytes = 0
    gen.latencies = []
    gen.measuring = True
    meter = Meter(gen)  # type: ignore[arg-type]
    await sleep(gen, p["duration"])  # type: ignore[arg-type]
    gen.measuring = False
    out: dict[str, Any] = meter.stop()
    gen.running = False
    delivered = gen.delivered
    out.update(delivered=delivered, msgs_per_s=delivered / out["wall_s"],
               mb_per_s=gen.delivered_bytes / out["wall_s"] / 1e6,
               latency=latency_summary(gen.latencies), cdf_ms=cdf_sample(gen.latencies),
               pairs=p["pairs"], window=p["window"])
    if "server_cpu_s" in out and delivered:
        out["server_cpu_us_per_msg"] = out["server_cpu_s"] / delivered * 1e6
    for c in clients:
        c.transport.abortConnection()  # type: ignore[union-attr]
    return out


async def run(reactor: Any, args: argparse.Namespace) -> None:
    gen = Gen(args, reactor)
    params = json.loads(args.params)
    try:
        result = await scenario_direct(gen, params)
    except Exception as e:
        result = {"error": f"{type(e).__name__}: {e}"}
    result.update(scenario="direct", target="prosody", params=params, errors=gen.errors)
    print("RESULT " + json.dumps(result), flush=True)
    await sleep(gen, 0.2)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description="XMPP load generator (direct chat)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--params", default="{}", help="JSON parameters of the scenario")
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--core", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    pin_to(args.core)
    raise_nofile()
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    def deadline() -> None:
        print("RESULT " + json.dumps({"error": f"timeout after {args.timeout} s"}), flush=True)
        sys.stdout.flush()
        reactor.stop()  # type: ignore[attr-defined]

    reactor.callLater(args.timeout, deadline)  # type: ignore[attr-defined]
    task.react(lambda r: defer.ensureDeferred(run(r, args)))


if __name__ == "__main__":
    main()
