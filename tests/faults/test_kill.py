"""SIGKILL the server while clients send as fast as they can, restart it on the same database:
every acknowledged message is delivered exactly once and in order, and the unacknowledged
ones are resent from the outboxes and end up exactly once too."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor

from chatproto.client import Backoff, ChatSession
from chatproto.wire import messages as m
from tests.faults.checks import Tally, full_history
from tests.faults.conftest import Recorder, fast_session
from tests.faults.servers import ServerProcess, database_for

USERS = ["ann", "ben", "cat"]
PER_SENDER = 150
KILL_AT = (0.25, 0.6)  # fractions of all messages acknowledged when the server is killed


def number(text: str) -> int:
    return int(text.split(":")[1])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
@pytest_twisted.ensureDeferred
async def test_sigkill_mid_stream(backend: str, tmp_path: Path) -> None:
    """Three users each queue 150 messages to the next one; the server is SIGKILLed twice
    mid-stream and restarted. Every send gets a SendAck whose conv_seq is the one the
    recipient sees; each recipient's listener and the conversation history hold 0..149
    exactly once, in order; acknowledgements received before a kill are not lost."""
    reactor = _reactor
    with database_for(backend, tmp_path) as uri:
        server = ServerProcess(tmp_path, uri)
        await server.start(reactor)
        recs = {u: Recorder() for u in USERS}
        sessions: dict[str, ChatSession] = {
            u: fast_session(reactor, server.port, u, server.fingerprint, recs[u],
                            backoff=Backoff(0.05, 0.5, 2),
                            outbox_path=tmp_path / f"{u}.outbox",
                            state_path=tmp_path / f"{u}.state")
            for u in USERS
        }
        try:
            for s in sessions.values():
                await s.wait_connected()
            total = len(USERS) * PER_SENDER
            acks: dict[tuple[str, int], m.SendAck] = {}
            acked_before_kill: set[tuple[str, int]] = set()
            kills = list(KILL_AT)

            def on_ack(ack: m.SendAck, sender: str, i: int) -> None:
                acks[(sender, i)] = ack
                if (kills and len(acks) >= kills[0] * total
                        and all(s.connected for s in sessions.values())):
                    kills.pop(0)
                    acked_before_kill.update(acks)
                    server.kill()
                    server.spawn()  # the clients reconnect once it listens

            sends = []
            for i in range(PER_SENDER):
                for j, u in enumerate(USERS):
                    to = USERS[(j + 1) % len(USERS)]
                    d = sessions[u].send_text(to, f"{u}:{i}")
                    d.addCallback(on_ack, u, i)
                    sends.append(d)
            for d in sends:
                await d
            assert server.kills == 2 and len(acks) == total and acked_before_kill
            for j, u in enumerate(USERS):
                sender = USERS[j - 1]
                await recs[u].until(
                    lambda r, sender=sender: len(r.bodies(sender)) >= PER_SENDER)
            tally = Tally()
            for j, u in enumerate(USERS):
                sender = USERS[j - 1]
                got = [d for d in recs[u].chats if d.sender == sender]
                tally.check(f"{sender}->{u} listener", [number(d.body.decode()) for d in got],
                            list(range(PER_SENDER)))
                for d in got:
                    assert acks[(sender, number(d.body.decode()))].conv_seq == d.conv_seq
                history = await full_history(sessions[u], sender)
                tally.check(f"{sender}->{u} history",
                            [number(e.body.decode()) for e in history], list(range(PER_SENDER)))
                assert [e.conv_seq for e in history] == list(range(1, PER_SENDER + 1))
            assert tally.ok(), tally.details
            assert all(len(s.outbox) == 0 for s in sessions.values())
            assert all(s.connections == 3 for s in sessions.values()), [
                s.connections for s in sessions.values()]
        finally:
            for s in sessions.values():
                await s.close()
            server.stop()
