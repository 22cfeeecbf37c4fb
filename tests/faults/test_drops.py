"""The connection drops at every point of a send; the recipient still gets each message
exactly once and in order (through a TCP proxy that cuts the sender's connection)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import pytest_twisted

from chatproto.wire import messages as m
from tests.faults.conftest import Recorder, fast_session
from tests.faults.proxy import Proxy, UpstreamCut
from tests.server.conftest import Loopback

N = 4
BODY_PAD = "x" * 600  # makes the Chat frame the only large frame the client sends
POINTS: dict[str, Callable[[], UpstreamCut] | None] = {
    # Nothing of the Chat frame reaches the server.
    "before_chat_frame": lambda: UpstreamCut(500, 0),
    # The server gets part of the header / half of the frame, then the connection drops.
    "inside_header": lambda: UpstreamCut(500, 3),
    "mid_frame": lambda: UpstreamCut(500, lambda total: total // 2),
    "last_byte_missing": lambda: UpstreamCut(500, lambda total: total - 1),
    # The whole frame reaches the server; whatever it answers next (SendAck) is dropped.
    "before_sendack": lambda: UpstreamCut(500, lambda total: total, then_cut_downstream=True),
    # The SendAck reached the client; then the connection drops.
    "after_sendack": None,
}


def body(i: int) -> str:
    return f"{i:04d}:{BODY_PAD}"


async def history_bodies(rec_session: object, peer: str) -> list[str]:
    page = await rec_session.history(peer, 0, 100)  # type: ignore[attr-defined]
    assert not page.has_more
    return [e.body.decode() for e in reversed(page.entries)]


@pytest.mark.parametrize("point", list(POINTS))
@pytest_twisted.ensureDeferred
async def test_drop_at_each_point_of_a_send(loopback: Loopback, point: str) -> None:
    """Alice (behind the proxy) sends N messages and the proxy cuts her connection at the
    given point of each send; every send still fires with a SendAck, conv_seq is 1..N in
    order, and Bob's listener, Bob's history and Alice's own copies hold each message exactly
    once, in order."""
    reactor = loopback.reactor
    proxy = Proxy(reactor, loopback.port)
    await proxy.start()
    fp = loopback.server.fingerprint
    arec, brec = Recorder(), Recorder()
    alice = fast_session(reactor, proxy.port, "alice", fp, arec)
    bob = fast_session(reactor, loopback.port, "bob", fp, brec)
    try:
        await alice.wait_connected()
        await bob.wait_connected()
        acks: list[m.SendAck] = []
        make_cut = POINTS[point]
        for i in range(N):
            if make_cut is None:
                acks.append(await alice.send_text("bob", body(i)))
                assert proxy.cut_all() == 1
            else:
                cut = proxy.arm(make_cut())
                sent = alice.send_text("bob", body(i))
                await cut
                acks.append(await sent)
        acks.append(await alice.send_text("bob", "end"))
        await brec.until(lambda r: "end" in r.bodies())
        await arec.until(lambda r: "end" in r.bodies())
        expected = [body(i) for i in range(N)] + ["end"]
        assert [a.conv_seq for a in acks] == list(range(1, N + 2))
        assert brec.bodies("alice") == expected
        assert [d.conv_seq for d in brec.chats] == list(range(1, N + 2))
        assert arec.bodies("alice") == expected  # own copies, each once
        assert await history_bodies(bob, "alice") == expected
        assert alice.connections == N + 1 and proxy.cuts == N
        assert "resumed" in arec.states and len(alice.outbox) == 0
    finally:
        await alice.close()
        await bob.close()
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_pipelined_sends_survive_a_cut(sqlite_loopback: Loopback) -> None:
    """Twenty sends queued at once, the connection cut in the middle of the sixth Chat frame:
    all twenty are acknowledged and Bob gets them exactly once, in the order queued."""
    lb = sqlite_loopback
    proxy = Proxy(lb.reactor, lb.port)
    await proxy.start()
    arec, brec = Recorder(), Recorder()
    alice = fast_session(lb.reactor, proxy.port, "alice", lb.server.fingerprint, arec)
    bob = fast_session(lb.reactor, lb.port, "bob", lb.server.fingerprint, brec)
    try:
        await alice.wait_connected()
        await bob.wait_connected()
        cut = proxy.arm(UpstreamCut(500, lambda total: total // 2, skip=5))
        sends = [alice.send_text("bob", body(i)) for i in range(20)]
        acks = [await d for d in sends]
        assert cut.called and alice.connections == 2
        await brec.until(lambda r: len(r.chats) >= 20)
        assert sorted(a.conv_seq for a in acks) == list(range(1, 21))
        assert [a.conv_seq for a in acks] == list(range(1, 21))
        assert brec.bodies() == [body(i) for i in range(20)]
    finally:
        await alice.close()
        await bob.close()
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_silent_connection_triggers_reconnect(sqlite_loopback: Loopback) -> None:
    """When the proxy stops forwarding (a dead link: no RST, no data), the missing Pong
    closes the connection and the session reconnects and delivers what was queued."""
    lb = sqlite_loopback
    proxy = Proxy(lb.reactor, lb.port)
    await proxy.start()
    arec, brec = Recorder(), Recorder()
    alice = fast_session(lb.reactor, proxy.port, "alice", lb.server.fingerprint, arec,
                         ping_interval=0.05, ping_timeout=0.1)
    bob = fast_session(lb.reactor, lb.port, "bob", lb.server.fingerprint, brec)
    try:
        await alice.wait_connected()
        await bob.wait_connected()
        for conn in proxy.connections:
            conn.blackholed = True
        sent = alice.send_text("bob", "through the dead link")
        ack = await sent
        assert ack.conv_seq == 1
        await brec.until(lambda r: r.bodies() == ["through the dead link"])
        assert arec.lost >= 1 and arec.states[-2:] == ["reconnecting", "resumed"]
    finally:
        await alice.close()
        await bob.close()
        await proxy.stop()
