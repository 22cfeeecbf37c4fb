"""Several ``twistd chatserver`` nodes on one PostgreSQL database and one Redis bus.

Every node is a real subprocess on its own loopback port, with the same identity key (clients
pin one key for the deployment) and its own name; the bus uses a key and channel prefix of
its own, so tests can share the machine's Redis (or use a private one, :class:`RedisProcess`).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred

from chatproto.client import ChatListener
from chatproto.server.identity import load_or_create_identity
from chatproto.wire import messages as m
from tests.faults.conftest import Recorder
from tests.faults.servers import ServerProcess, database_for, free_port
from tests.services import require_redis

#: Seconds the sessions of a killed node stay online in the tests.
TEST_PRESENCE_TTL = 3.0
#: Longest wait for something a test expects to see.
UNTIL_TIMEOUT = 30.0


class RedisProcess:
    """A private ``redis-server`` on a free loopback port (never the machine's shared one),
    which a test may stop and start again."""

    def __init__(self, workdir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.extra_args = extra_args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            require_redis()  # skips (or fails under CI) with the same message
            raise AssertionError("redis-server is not installed")
        self.starts += 1
        log = open(self.workdir / f"redis-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Cluster:
    """``count`` nodes (``node1``...) sharing a database URI and a bus URL."""

    def __init__(self, workdir: Path, database: str, bus: str, count: int,
                 extra_args: tuple[str, ...] = ()) -> None:
        key = workdir / "server.key"
        load_or_create_identity(str(key))
        self.nodes: list[ServerProcess] = []
        for i in range(1, count + 1):
            nodedir = workdir / f"node{i}"
            nodedir.mkdir()
            shutil.copy(key, nodedir / "server.key")
            self.nodes.append(ServerProcess(nodedir, database, (
                "--bus", bus, "--node-name", f"node{i}",
                "--presence-ttl", str(TEST_PRESENCE_TTL), *extra_args)))
        self.fingerprint = self.nodes[0].fingerprint
        assert all(n.fingerprint == self.fingerprint for n in self.nodes)

    async def start(self, reactor: Any) -> None:
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            await node.wait_listening(reactor)

    def endpoint(self, i: int) -> str:
        return f"tcp:127.0.0.1:{self.nodes[i].port}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def logs(self) -> str:
        return "\n".join(f"=== node{i} ===\n{n.logs()}" for i, n in enumerate(self.nodes, 1))


@contextlib.contextmanager
def cluster(tmp_path: Path, count: int = 3, bus: str | None = None,
            extra_args: tuple[str, ...] = (), database: str | None = None) -> Iterator[Cluster]:
    """Nodes on a fresh schema of the shared PostgreSQL (or on ``database``, a URI used as
    it is) and, unless ``bus`` is given, the machine's Redis with a prefix of this test's
    own."""
    if bus is None:
        require_redis()
        bus = f"redis://127.0.0.1:6379/0?prefix=chatproto-test-{uuid.uuid4().hex[:12]}:"
    with (contextlib.nullcontext(database) if database is not None
          else database_for("postgres", tmp_path)) as uri:
        nodes = Cluster(tmp_path, uri, bus, count, extra_args)
        try:
            yield nodes
        finally:
            nodes.stop()


class EventRecorder(Recorder):
    """A :class:`Recorder` that also keeps receipts, typing and presence events."""

    def __init__(self) -> None:
        super().__init__()
        self.receipts: list[m.Receipt] = []
        self.typing: list[m.TypingEvent] = []
        self.presence: list[m.PresenceEvent] = []
        self.images: list[bytes] = []
        self.signed_out_reasons: list[str] = []

    def message_received(self, deliver: m.Deliver, image: bytes | None) -> None:
        if image is not None:
            self.images.append(image)
        super().message_received(deliver, image)

    def until(self, predicate: Any, timeout: float = UNTIL_TIMEOUT) -> Deferred[None]:
        """As Recorder.until, failing with TimeoutError after ``timeout`` seconds."""
        from twisted.internet import reactor

        return super().until(predicate).addTimeout(timeout, reactor)

    def receipt_received(self, receipt: m.Receipt) -> None:
        self.receipts.append(receipt)
        self._check()

    def typing_received(self, event: m.TypingEvent) -> None:
        self.typing.append(event)
        self._check()

    def presence_changed(self, event: m.PresenceEvent) -> None:
        self.presence.append(event)
        self._check()

    def signed_out(self, reason: str) -> None:
        self.signed_out_reasons.append(reason)
        self._check()


__all__ = ["ChatListener", "Cluster", "EventRecorder", "RedisProcess", "cluster"]
