"""PostgreSQL connections of a running server are terminated while clients send: sends fail
cleanly (an Error reaching the client, which retries from its outbox) or wait; nothing
acknowledged is lost and every message ends up stored and delivered exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet import task

from chatproto.client import Backoff, ServerError
from chatproto.wire import messages as m
from tests.faults.checks import Tally, full_history
from tests.faults.conftest import Recorder, fast_session
from tests.faults.servers import ServerProcess, database_for, terminate_backends
from tests.services import POSTGRES_DSN

PER_SENDER = 200  # per sender with 64 in flight; 80 with one at a time


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("in_flight", [1, 64])
@pytest_twisted.ensureDeferred
async def test_backend_connections_terminated_while_sending(tmp_path: Path,
                                                            in_flight: int) -> None:
    """Two users send 200 (80 one at a time) messages each to each other while the server's
    PostgreSQL backends (found by their application_name, so no other connection is touched)
    are terminated every 100 ms: some sends get a 5xx Error and are retried from the outbox;
    every send ends with a SendAck whose conv_seq is what the recipient sees, both
    recipients get 0..199 exactly once, and the history holds each message once. With one
    send in flight the order is kept too; with 64, a message refused with a transient error
    is stored after the ones already in flight behind it (documented in "Delivery
    semantics")."""
    reactor = _reactor
    tag = f"chatproto_test_{uuid.uuid4().hex[:12]}"
    per_sender = PER_SENDER if in_flight > 1 else 80
    with database_for("postgres", tmp_path, tag) as uri:
        server = ServerProcess(tmp_path, uri)
        await server.start(reactor)
        recs = {"pia": Recorder(), "quinn": Recorder()}
        sessions = {
            name: fast_session(reactor, server.port, name, server.fingerprint, rec,
                               backoff=Backoff(0.02, 0.2, 2), max_in_flight=in_flight)
            for name, rec in recs.items()
        }
        killed: list[int] = []

        def terminate() -> None:
            killed.append(terminate_backends(POSTGRES_DSN, tag))

        loop = task.LoopingCall(terminate)
        try:
            for s in sessions.values():
                await s.wait_connected()
            loop.start(0.1)
            acks: dict[tuple[str, int], m.SendAck] = {}
            sends = []
            for i in range(per_sender):
                for name, peer in (("pia", "quinn"), ("quinn", "pia")):
                    d = sessions[name].send_text(peer, f"{name}:{i}")
                    d.addCallback(lambda ack, k=(name, i): acks.__setitem__(k, ack))
                    sends.append(d)
            for d in sends:
                await d
            loop.stop()
            assert sum(killed) > 0, "no backend was terminated"
            tally = Tally()
            for name, peer in (("pia", "quinn"), ("quinn", "pia")):
                await recs[peer].until(lambda r, s=name: len(r.bodies(s)) >= per_sender)
                got = [d for d in recs[peer].chats if d.sender == name]
                numbers = [int(d.body.split(b":")[1]) for d in got]
                tally.check(f"{name}->{peer}", numbers if in_flight == 1 else sorted(numbers),
                            list(range(per_sender)))
                assert len(numbers) == per_sender
                for d in got:
                    assert acks[(name, int(d.body.split(b":")[1]))].conv_seq == d.conv_seq
                history = await full_history(sessions[peer], name)
                mine = [int(e.body.split(b":")[1]) for e in history if e.sender == name]
                tally.check(f"history {name}->{peer}", sorted(mine), list(range(per_sender)))
                assert len(mine) == per_sender
            assert tally.ok(), tally.details
            retried = sum(s.transient_errors for s in sessions.values())
            reconnects = sum(s.connections - 1 for s in sessions.values())
            server_retries = server.log_path.read_text().count("database connection lost")
            assert retried + reconnects + server_retries > 0, "the fault never hit a request"
        finally:
            if loop.running:
                loop.stop()
            for s in sessions.values():
                await s.close()
            server.stop()


@pytest.mark.slow
@pytest.mark.postgres
@pytest_twisted.ensureDeferred
async def test_first_request_after_backends_terminated(tmp_path: Path) -> None:
    """After the server's PostgreSQL backends were terminated (and nothing else happened),
    the next request is answered normally: the server notices the dead pooled connection,
    reconnects and runs the query (at worst it answers 501 STORAGE_UNAVAILABLE, never 500)."""
    reactor = _reactor
    tag = f"chatproto_test_{uuid.uuid4().hex[:12]}"
    with database_for("postgres", tmp_path, tag) as uri:
        server = ServerProcess(tmp_path, uri)
        await server.start(reactor)
        rec = Recorder()
        session = fast_session(reactor, server.port, "ria", server.fingerprint, rec)
        try:
            await session.wait_connected()
            await session.send_text("ria", "note to self")
            assert terminate_backends(POSTGRES_DSN, tag) > 0
            codes = []
            for _ in range(3):
                try:
                    page = await session.history("ria", 0, 10)
                except ServerError as e:
                    codes.append(e.code)
                    continue
                assert [e.body for e in page.entries] == [b"note to self"]
                break
            assert codes == [], f"the server answered {codes} before recovering"
        finally:
            await session.close()
            server.stop()
