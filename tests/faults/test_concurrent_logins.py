"""Several logins of one user (devices), logins racing logouts, and group membership changes
racing sends: each device gets every message once; each group message reaches exactly the
members of the moment it was stored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest_twisted
from twisted.internet.defer import DeferredList

from chatproto.client import NotAMember
from chatproto.wire import messages as m
from tests.faults.conftest import Recorder, fast_session
from tests.faults.proxy import Proxy, UpstreamCut
from tests.server.conftest import Loopback

N = 40


@pytest_twisted.ensureDeferred
async def test_two_devices_each_get_every_message_once(loopback: Loopback) -> None:
    """Bob is signed in twice (two device ids; the second behind a proxy that cuts it in the
    middle of one of its own sends). Alice and both of Bob's devices send at the same time:
    each of Bob's devices shows every message of the conversation exactly once, in
    conversation order (Alice's messages and the copies of Bob's own, from either device)."""
    lb = loopback
    fp = lb.server.fingerprint
    proxy = Proxy(lb.reactor, lb.port)
    await proxy.start()
    recs = [Recorder() for _ in range(3)]
    alice = fast_session(lb.reactor, lb.port, "alice", fp, recs[0])
    bob1 = fast_session(lb.reactor, lb.port, "bob", fp, recs[1])
    await bob1.wait_connected()  # registered
    bob2 = fast_session(lb.reactor, proxy.port, "bob", fp, recs[2], register=False,
                        device_id=os.urandom(16))
    sessions = [alice, bob1, bob2]
    try:
        for s in sessions:
            await s.wait_connected()
        proxy.arm(UpstreamCut(500, lambda total: total // 3, skip=N // 2))
        sends = []
        for i in range(N):
            sends.append(alice.send_text("bob", f"a{i}:" + "x" * 600))
            sends.append(bob1.send_text("alice", f"b{i}:" + "x" * 600))
            sends.append(bob2.send_text("alice", f"c{i}:" + "x" * 600))
        acks = [await d for d in sends]
        assert sorted(a.conv_seq for a in acks) == list(range(1, 3 * N + 1))
        assert bob2.connections == 2
        for rec in recs:
            await rec.until(lambda r: len(r.chats) >= 3 * N)
        for rec in recs:
            assert [d.conv_seq for d in rec.chats] == list(range(1, 3 * N + 1))
            for prefix in "abc":
                mine = [d.body.split(b":")[0].decode() for d in rec.chats
                        if d.body.startswith(prefix.encode())]
                assert mine == [f"{prefix}{i}" for i in range(N)]
    finally:
        for s in sessions:
            await s.close()
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_login_racing_logout(loopback: Loopback, tmp_path: Path) -> None:
    """Carl's first device signs out (Quit) while his second device signs in and Dana is
    sending: the second device gets every message once, Carl stays online for Dana, and the
    first device, opened again on its saved state, gets exactly the messages it had not shown
    yet."""
    lb = loopback
    fp = lb.server.fingerprint
    drec, c1rec, c2rec, c1again = Recorder(), Recorder(), Recorder(), Recorder()
    dana = fast_session(lb.reactor, lb.port, "dana", fp, drec)
    state = tmp_path / "carl.state"
    carl1 = fast_session(lb.reactor, lb.port, "carl", fp, c1rec, state_path=state)
    try:
        await dana.wait_connected()
        await carl1.wait_connected()
        first = [dana.send_text("carl", f"d{i}") for i in range(N // 2)]
        carl2 = fast_session(lb.reactor, lb.port, "carl", fp, c2rec, register=False)
        closing = carl1.close()
        second = [dana.send_text("carl", f"d{i}") for i in range(N // 2, N)]
        await closing
        await carl2.wait_connected()
        await DeferredList(first + second, fireOnOneErrback=True)
        await c2rec.until(lambda r: len(r.chats) >= N)
        assert c2rec.bodies() == [f"d{i}" for i in range(N)]
        presence = {p.name: p.online for p in await dana.presence()}
        assert presence["carl"] is True
        shown = c1rec.bodies()
        assert shown == [f"d{i}" for i in range(len(shown))]
        carl1 = fast_session(lb.reactor, lb.port, "carl", fp, c1again, register=False,
                             state_path=state)
        await c1again.until(lambda r: len(r.chats) >= N - len(shown))
        await carl1.wait_connected()
        assert c1again.bodies() == [f"d{i}" for i in range(len(shown), N)]
        await carl2.close()
    finally:
        await dana.close()
        await carl1.close()


@pytest_twisted.ensureDeferred
async def test_membership_changes_racing_sends(loopback: Loopback) -> None:
    """While Mia and Ned send to a group, the owner removes Ned and adds Oli: every message
    (acknowledged or refused) is judged by its conv_seq against the REMOVED and ADDED events
    — Ned gets exactly the messages stored before his removal (and that event), Oli exactly
    those stored after his addition, Mia and the owner all of them; Ned's sends after his
    removal are refused with NOT_A_MEMBER and delivered to nobody; nothing twice."""
    lb = loopback
    fp = lb.server.fingerprint
    names = ["own", "mia", "ned", "oli"]
    recs = {n: Recorder() for n in names}
    sessions = {n: fast_session(lb.reactor, lb.port, n, fp, recs[n]) for n in names}
    try:
        for s in sessions.values():
            await s.wait_connected()
        created = await sessions["own"].create_group(["mia", "ned"], "race")
        gid = created.group_id
        await recs["ned"].until(lambda r: len(r.events) >= 1)
        sends = []
        for i in range(N):
            sends.append(sessions["mia"].send_text(gid, f"mia{i}"))
            sends.append(sessions["ned"].send_text(gid, f"ned{i}"))
            if i == N // 4:
                changes = [sessions["own"].group_remove(gid, ["ned"]),
                           sessions["own"].group_add(gid, ["oli"])]
        results = await DeferredList(sends, consumeErrors=True)
        await DeferredList(changes, fireOnOneErrback=True)
        acked = {r.conv_seq for ok, r in results if ok}
        refused = [r for ok, r in results if not ok]
        assert all(f.check(NotAMember) for f in refused)
        assert all(ok for ok, _ in results[0::2])  # Mia's all stored
        # The log of the group, from the owner's history (events included).
        page = await sessions["own"].history(gid, 0, 100)
        log = sorted(page.entries, key=lambda e: e.conv_seq)
        assert [e.conv_seq for e in log] == list(range(1, len(log) + 1))
        events = {m.decode_record(m.GroupEvent, e.body).action: e.conv_seq for e in log
                  if e.content_type == m.ContentType.EVENT}
        removed, added = events[3], events[2]
        chats = {e.conv_seq for e in log if e.content_type == m.ContentType.TEXT}
        assert chats == acked
        assert len(refused) == N - sum(1 for e in log if e.body.startswith(b"ned"))
        last = max(e.conv_seq for e in log)
        await recs["own"].until(lambda r: max([d.conv_seq for d in r.chats + r.events],
                                              default=0) >= last)
        await recs["mia"].until(lambda r: max([d.conv_seq for d in r.chats + r.events],
                                              default=0) >= last)
        await recs["oli"].until(lambda r: max([d.conv_seq for d in r.chats + r.events],
                                              default=0) >= last)
        await recs["ned"].until(lambda r: any(d.conv_seq == removed for d in r.events))

        def seen(name: str) -> list[int]:
            return sorted(d.conv_seq for d in recs[name].chats + recs[name].events
                          if d.group_id == gid)

        everything = list(range(1, last + 1))
        assert seen("own") == everything and seen("mia") == everything
        assert seen("ned") == [c for c in everything if c <= removed]
        assert seen("oli") == [c for c in everything if c >= added]
        for name in names:
            got = [d.conv_seq for d in recs[name].chats + recs[name].events]
            assert len(got) == len(set(got)), f"{name} saw a message twice"
    finally:
        for s in sessions.values():
            await s.close()
