"""``--workers``: worker processes sharing the listening socket, supervised by the parent."""

from __future__ import annotations

import os
import re
import signal
import uuid
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet import task
from twisted.python import usage

from chatproto.server.tap import Options
from tests.faults.conftest import fast_session
from tests.faults.servers import ServerProcess, database_for
from tests.scaleout.nodes import EventRecorder
from tests.services import require_redis


def started_pids(log: str) -> dict[int, list[int]]:
    pids: dict[int, list[int]] = {}
    for index, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", log):
        pids.setdefault(int(index), []).append(int(pid))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def poll(predicate: object, what: str, timeout: float = 60) -> None:
    # A generous bound: a worker restarted while the machine is loaded (CI running beside a
    # soak) took over 20 s to start listening again; the whole test takes about 11 s alone.
    for _ in range(int(timeout / 0.05)):
        if predicate():  # type: ignore[operator]
            return
        await task.deferLater(_reactor, 0.05, lambda: None)  # subprocess state poll
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.postgres
@pytest_twisted.ensureDeferred
async def test_workers_share_the_port_and_are_restarted(tmp_path: Path) -> None:
    """Two workers behind one port: users chat through it; a SIGKILLed worker is started
    again by the parent (and the users' sessions come back); SIGTERM to the parent stops
    every worker (each shuts down) before the parent exits."""
    require_redis()
    bus = f"redis://127.0.0.1:6379/0?prefix=chatproto-test-{uuid.uuid4().hex[:12]}:"
    with database_for("postgres", tmp_path) as uri:
        server = ServerProcess(tmp_path, uri, ("--workers", "2", "--bus", bus,
                                               "--node-name", "box"))
        await server.start(_reactor)
        await poll(lambda: len(started_pids(server.logs())) == 2, "two workers")
        recs = {u: EventRecorder() for u in ("ann", "ben", "cat", "dan")}
        sessions = {u: fast_session(_reactor, server.port, u, server.fingerprint, rec)
                    for u, rec in recs.items()}
        try:
            for s in sessions.values():
                await s.wait_connected()
            for u, peer in (("ann", "ben"), ("ben", "cat"), ("cat", "dan"), ("dan", "ann")):
                await sessions[u].send_text(peer, f"hi {peer}")
            for u, sender in (("ben", "ann"), ("cat", "ben"), ("dan", "cat"), ("ann", "dan")):
                await recs[u].until(lambda r, s=sender, u=u: r.bodies(s) == [f"hi {u}"])
            victim = started_pids(server.logs())[1][0]
            os.kill(victim, signal.SIGKILL)
            await poll(lambda: len(started_pids(server.logs()).get(1, [])) == 2,
                       "worker 1 restarted")
            assert "worker 1 ended" in server.logs()
            await poll(lambda: server.logs().count("(chat)") == 3, "worker 1 listening again")
            for u, peer in (("ann", "ben"), ("ben", "cat"), ("cat", "dan"), ("dan", "ann")):
                await sessions[u].send_text(peer, f"again {peer}")
            for u, sender in (("ben", "ann"), ("cat", "ben"), ("dan", "cat"), ("ann", "dan")):
                await recs[u].until(lambda r, s=sender, u=u: f"again {u}" in r.bodies(s))
        finally:
            for s in sessions.values():
                await s.close()
        pids = [p for ps in started_pids(server.logs()).values() for p in ps]
        assert server.proc is not None
        server.stop()
        # twistd ends with the signal that stopped it (after a clean shutdown).
        assert server.proc.returncode in (0, -signal.SIGTERM), server.logs()
        assert server.logs().count("Server Shut Down") == 1 + 2  # the parent, two workers
        assert not any(alive(p) for p in pids)


def test_workers_and_bus_refuse_sqlite(tmp_path: Path) -> None:
    """--workers 2 or --bus with SQLite, and --workers without --bus, are usage errors that
    say why; --workers with a TLS listener too."""
    key = ["--identity", str(tmp_path / "k.pem")]
    pg = "postgresql://u@127.0.0.1/db"
    cases = [
        (["--workers", "2", "--bus", "redis://127.0.0.1", "--database", "sqlite:x.db"],
         "--workers needs a PostgreSQL --database"),
        (["--bus", "redis://127.0.0.1", "--database", "sqlite:x.db"],
         "--bus needs a PostgreSQL --database"),
        (["--workers", "2", "--database", pg], "--workers needs --bus"),
        (["--bus", "http://x", "--database", pg], "--bus: the bus is redis://"),
        (["--node-name", "a b", "--database", pg], "--node-name"),
        (["--workers", "2", "--bus", "redis://127.0.0.1", "--database", pg, "--listen",
          "unix:/tmp/x.sock"], "must be a tcp: endpoint"),
    ]
    for argv, message in cases:
        with pytest.raises(usage.UsageError, match=re.escape(message)):
            Options().parseOptions([*argv, *key])


def test_worker_arguments_repeat_the_options(tmp_path: Path) -> None:
    """A worker gets the parent's options, the shared sockets by name, its own node name and
    its own metrics port."""
    from chatproto.server.workers import worker_arguments

    options = Options()
    options.parseOptions([
        "--identity", str(tmp_path / "k.pem"), "--workers", "2", "--bus",
        "redis://127.0.0.1/1", "--database", "postgresql://u@127.0.0.1/db", "--metrics",
        "tcp:9100:interface=127.0.0.1", "--refuse-v1", "--web-origin", "https://a.example",
        "--listen-web", "tcp:8080", "--ping-interval", "7"])
    args = worker_arguments(options, 2, ["listen0", "listen1"], "box", 1)
    assert args[:3] == ["-n", "--pidfile=", "chatserver"]
    for expected in ("--refuse-v1", "--bus=redis://127.0.0.1/1", "--ping-interval=7.0",
                     "--database=postgresql://u@127.0.0.1/db", "--workers", "--node-name=box.2",
                     "--web-origin=https://a.example", "--metrics=tcp:9101:interface=127.0.0.1",
                     "--listen=systemd:domain=INET:name=listen0",
                     "--listen-web=systemd:domain=INET:name=listen1"):
        if expected == "--workers":
            assert not any(a.startswith("--workers") for a in args)
        else:
            assert expected in args, args
    assert len(options.shared_sockets) == 2
