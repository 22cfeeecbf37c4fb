"""Three nodes on one PostgreSQL and one Redis: users on different nodes chat as if they
shared one server (1:1, a group across all three, receipts, typing, presence)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor

from chatproto.client import (
    Backoff,
    ChatSession,
    RegisterError,
    SigninError,
    connect,
    open_session,
)
from chatproto.wire.errors import ErrorCode
from tests.faults.conftest import PASSWORD, fast_session
from tests.scaleout.nodes import UNTIL_TIMEOUT, EventRecorder, cluster
from tests.terminal.conftest import png_bytes

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest_twisted.ensureDeferred
async def test_three_nodes(tmp_path: Path) -> None:
    """ann on node1, ben on node2, cat on node3: a 1:1 message node1 -> node2 arrives; a
    group of the three delivers every message to the two other nodes; ben's read receipt
    and typing reach ann; presence queries see users of other nodes online; cat leaving
    node3 tells ann and ben (offline with a last seen); an image crosses nodes; a message
    sent while cat is offline reaches cat when cat comes back on node2, which tells ann.
    Every line the nodes logged carries the node's name."""
    reactor = _reactor
    with cluster(tmp_path) as nodes:
        await nodes.start(reactor)
        recs = {u: EventRecorder() for u in ("ann", "ben", "cat")}
        sessions = {u: fast_session(reactor, nodes.nodes[i].port, u, nodes.fingerprint,
                                    recs[u])
                    for i, u in enumerate(("ann", "ben", "cat"))}
        try:
            for s in sessions.values():
                await s.wait_connected()
            # 1:1 across nodes
            ack = await sessions["ann"].send_text("ben", "hello ben")
            await recs["ben"].until(lambda r: r.bodies("ann") == ["hello ben"])
            # a group spanning the three nodes
            created = await sessions["ann"].create_group(["ben", "cat"], "trio")
            gid = created.group_id
            assert created.offline == ()  # ben and cat are online (on other nodes)
            await sessions["ann"].send_text(gid, "hi all")
            await sessions["cat"].send_text(gid, "hi from node3")
            for u in ("ben", "cat"):
                await recs[u].until(lambda r: "hi all" in r.bodies("ann"))
                assert any(e.group_id == gid for e in recs[u].events)  # the group's creation
            for u in ("ann", "ben"):
                await recs[u].until(lambda r: "hi from node3" in r.bodies("cat"))
            # receipts and typing across nodes
            await sessions["ben"].mark_read("ann", ack.conv_seq)
            await recs["ann"].until(lambda r: any(
                x.by == "ben" and x.conv_seq == ack.conv_seq for x in r.receipts))
            await sessions["ben"].typing("ann", True)
            await recs["ann"].until(lambda r: any(
                t.sender == "ben" and t.active for t in r.typing))
            # presence: answers include the other nodes' users
            info = {p.name: p for p in await sessions["ann"].presence()}
            assert info["ben"].online and info["cat"].online
            # cat leaves node3: ann (node1) and ben (node2) see cat offline with a last seen
            await sessions["cat"].close()
            for u in ("ann", "ben"):
                await recs[u].until(lambda r: any(
                    p.name == "cat" and not p.online and p.last_seen_ms for p in r.presence))
            info = {p.name: p for p in await sessions["ann"].presence()}
            assert not info["cat"].online and info["cat"].last_seen_ms
            # an image (read from the database on the other node) and offline delivery
            picture = png_bytes()
            await sessions["ann"].send_image("ben", picture)
            await recs["ben"].until(lambda r: picture in r.images)
            await sessions["ben"].send_text("cat", "while you were away")
            # cat comes back (on node2 this time) and gets it
            sessions["cat"] = fast_session(reactor, nodes.nodes[1].port, "cat",
                                           nodes.fingerprint, recs["cat"], register=False)
            await sessions["cat"].wait_connected()
            await recs["cat"].until(lambda r: "while you were away" in r.bodies("ben"))
            await recs["ann"].until(lambda r: r.presence[-1].name == "cat"
                                    and r.presence[-1].online)
        finally:
            for s in sessions.values():
                await s.close()
        # every log line of a node (twistd's, Twisted's and ours) names the node
        for i, node in enumerate(nodes.nodes, 1):
            lines = [line for line in node.logs().splitlines() if line[:4].isdigit()]
            assert len(lines) > 10
            assert [line for line in lines if f" [node{i} " not in line] == []


@pytest_twisted.ensureDeferred
async def test_account_changes_sign_out_on_every_node(tmp_path: Path) -> None:
    """ann's phone is on node1, her laptop on node2, her tablet on node3: the phone's device
    list shows all three online. Signing the laptop out from the phone closes the laptop
    only; changing the password on the phone closes the
    tablet (node3); deleting the account from the phone closes a session signed in on node2
    with the new password. Each closed session got SIGNED_OUT with the reason first."""
    reactor = _reactor
    new_password = "a new password for ann"
    with cluster(tmp_path) as nodes:
        await nodes.start(reactor)
        devices = {"phone": b"p" * 16, "laptop": b"l" * 16, "tablet": b"t" * 16}
        recs = {d: EventRecorder() for d in (*devices, "desk")}
        sessions: dict[str, ChatSession] = {}
        try:
            for i, d in enumerate(devices):  # the phone registers ann, then the others sign in
                sessions[d] = fast_session(reactor, nodes.nodes[i].port, "ann",
                                           nodes.fingerprint, recs[d], device_id=devices[d],
                                           register=i == 0)
                await sessions[d].wait_connected().addTimeout(UNTIL_TIMEOUT, reactor)
            phone = sessions["phone"]
            listed = {d.device_id: (d.online, d.current) for d in await phone.devices()}
            assert listed == {devices["phone"]: (True, True), devices["laptop"]: (True, False),
                              devices["tablet"]: (True, False)}
            await phone.sign_out_device(devices["laptop"])
            await recs["laptop"].until(lambda r: len(r.signed_out_reasons) == 1)
            assert "another device" in recs["laptop"].signed_out_reasons[0]
            await phone.change_password(PASSWORD, new_password)
            await recs["tablet"].until(lambda r: len(r.signed_out_reasons) == 1)
            assert "password" in recs["tablet"].signed_out_reasons[0]
            assert recs["laptop"].signed_out_reasons == [recs["laptop"].signed_out_reasons[0]]
            sessions["desk"] = open_session(
                reactor, nodes.endpoint(1), "ann", new_password, listener=recs["desk"],
                server_fingerprint=nodes.fingerprint, ping_interval=0,
                backoff=Backoff(0.01, 0.05, 2))
            await sessions["desk"].wait_connected().addTimeout(UNTIL_TIMEOUT, reactor)
            await phone.delete_account(new_password)
            await recs["desk"].until(lambda r: len(r.signed_out_reasons) == 1)
            assert "deleted" in recs["desk"].signed_out_reasons[0]
            assert recs["phone"].signed_out_reasons == []
        finally:
            for s in sessions.values():
                await s.close()


@pytest_twisted.ensureDeferred
async def test_login_limits_hold_across_nodes(tmp_path: Path) -> None:
    """With --registrations-per-ip 3 and --ip-failures 3 on every node, the counters are the
    deployment's, not a node's: three registrations from one address on three nodes use the
    allowance up (a fourth, on node1, is refused with TRY_LATER), and three failed sign-ins
    on three nodes use that one up (a fourth attempt, on node2, is refused with TRY_LATER,
    even with the right password: the counter is checked before any hashing)."""
    reactor = _reactor
    limits = ("--registrations-per-ip", "3", "--ip-failures", "3")
    with cluster(tmp_path, extra_args=limits) as nodes:
        await nodes.start(reactor)

        async def attempt(node: int, register: bool, name: str, password: str) -> int:
            """One attempt on a fresh connection: 0 if it succeeded, else the error code."""
            client = await connect(reactor, nodes.endpoint(node),
                                   server_fingerprint=nodes.fingerprint)
            try:
                await (client.register(name, password) if register
                       else client.signin(name, password))
                return 0
            except (RegisterError, SigninError) as e:
                return int(e.code)
            finally:
                await client.close()

        assert [await attempt(i, True, f"user{i}", PASSWORD) for i in range(3)] == [0, 0, 0]
        assert await attempt(0, True, "user3", PASSWORD) == ErrorCode.TRY_LATER
        wrong = [await attempt(i, False, "user0", "not the password") for i in range(3)]
        assert wrong == [ErrorCode.AUTH_FAILED] * 3
        assert await attempt(1, False, "user0", PASSWORD) == ErrorCode.TRY_LATER
