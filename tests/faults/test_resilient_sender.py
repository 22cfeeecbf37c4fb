"""examples/resilient_sender.py against a real server that is SIGKILLed and restarted, and
then against its own restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet import task

from tests.faults.conftest import PASSWORD, Recorder, fast_session
from tests.faults.servers import ServerProcess

EXAMPLE = Path(__file__).parents[2] / "examples" / "resilient_sender.py"
COUNT = 300


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """Poll the subprocess every 50 ms (at most ``timeout`` s) for its exit status."""
    for _ in range(int(timeout / 0.05)):
        code = proc.poll()
        if code is not None:
            return code
        await task.deferLater(_reactor, 0.05, lambda: None)
    proc.kill()
    raise AssertionError("resilient_sender did not finish")


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_resilient_sender_survives_server_restart(tmp_path: Path) -> None:
    """The example sends 1..300 to Bob; the server is SIGKILLed and restarted once Bob has
    seen 50 of them, and the sender process itself is SIGKILLed once Bob has seen 150 and
    started again on the same outbox: it exits 0 and Bob gets 1..300 exactly once, in
    order (listener and history)."""
    server = ServerProcess(tmp_path, f"sqlite:{tmp_path / 'chat.db'}")
    await server.start(_reactor)
    rec = Recorder()
    bob = fast_session(_reactor, server.port, "bob", server.fingerprint, rec,
                       outbox_path=tmp_path / "bob.outbox", state_path=tmp_path / "bob.state")
    args = [sys.executable, str(EXAMPLE), "--server", f"tcp:127.0.0.1:{server.port}",
            "--name", "alice", "--password", PASSWORD, "--to", "bob", "--count", str(COUNT),
            "--outbox", str(tmp_path / "alice.outbox"), "--register",
            "--fingerprint", server.fingerprint, "--max-backoff", "0.5"]
    log = open(tmp_path / "sender.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        await bob.wait_connected()
        await rec.until(lambda r: len(r.chats) >= 50)
        server.kill()
        server.spawn()
        await rec.until(lambda r: len(r.chats) >= 150)
        proc.kill()
        proc.wait()
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        code = await wait_exit(proc)
        assert code == 0, (tmp_path / "sender.log").read_text()
        await rec.until(lambda r: len(r.chats) >= COUNT)
        expected = [str(i) for i in range(1, COUNT + 1)]
        assert rec.bodies("alice") == expected
        history: list[str] = []
        before = 0
        while True:
            page = await bob.history("alice", before, 100)
            history = [e.body.decode() for e in reversed(page.entries)] + history
            if not page.has_more:
                break
            before = min(e.conv_seq for e in page.entries)
        assert history == expected
        assert "[resumed]" in (tmp_path / "sender.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        await bob.close()
        server.stop()
