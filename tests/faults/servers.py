"""Real ``twistd -n chatserver`` subprocesses that tests can SIGKILL and restart."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.internet import task

from chatproto.server.identity import identity_fingerprint, load_or_create_identity
from tests.services import PgSchema, require_postgres

TWISTD = str(Path(sys.executable).parent / "twistd")
FAST_ARGS = ["--insecure-fast-hashing", "--argon2-memory-kib", "64", "--argon2-iterations", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A chat server in a subprocess on a fixed port, restartable on the same database.

    Args:
        workdir: Holds the identity key and the logs.
        database: The database URI.
        extra_args: More ``twistd chatserver`` options.
    """

    def __init__(self, workdir: Path, database: str, extra_args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.database = database
        self.extra_args = extra_args
        self.port = free_port()
        self.key = workdir / "server.key"
        self.fingerprint = identity_fingerprint(load_or_create_identity(str(self.key)))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self._out: Any = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.starts}.log"

    def spawn(self) -> None:
        """Start the process (does not wait for it to listen)."""
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        args = [TWISTD, "-n", "--pidfile=", "chatserver", "--listen",
                f"tcp:{self.port}:interface=127.0.0.1", "--database", self.database,
                "--identity", str(self.key), *FAST_ARGS, *self.extra_args]
        self._out = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT,
                                     cwd=self.workdir)

    def listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    async def wait_listening(self, reactor: Any, timeout: float = 20) -> None:
        """Poll (every 50 ms, at most ``timeout`` s) until the server accepts connections."""
        for _ in range(int(timeout / 0.05)):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}):\n"
                                     f"{self.log_path.read_text()}")
            if self.listening():
                return
            await task.deferLater(reactor, 0.05, lambda: None)  # subprocess readiness poll
        raise AssertionError(f"the server did not listen:\n{self.log_path.read_text()}")

    def wait_listening_blocking(self, timeout: float = 20) -> None:
        """The same poll, blocking (for scripts without a running reactor)."""
        import time

        for _ in range(int(timeout / 0.05)):
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}):\n"
                                     f"{self.log_path.read_text()}")
            if self.listening():
                return
            time.sleep(0.05)  # subprocess readiness poll
        raise AssertionError(f"the server did not listen:\n{self.log_path.read_text()}")

    async def start(self, reactor: Any) -> None:
        self.spawn()
        await self.wait_listening(reactor)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.kills += 1
        if self._out is not None:
            self._out.close()
            self._out = None

    def stop(self) -> None:
        """SIGTERM (then SIGKILL after 15 s) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._out is not None:
            self._out.close()
            self._out = None

    def logs(self) -> str:
        parts = []
        for i in range(1, self.starts + 1):
            path = self.workdir / f"server-{i}.log"
            if path.exists():
                parts.append(f"--- start {i} ---\n{path.read_text()}")
        return "\n".join(parts)


@contextlib.contextmanager
def database_for(backend: str, tmp_path: Path, tag: str | None = None) -> Iterator[str]:
    """A fresh database URI: a SQLite file, or a new PostgreSQL schema (dropped after) whose
    connections carry ``application_name=tag`` (so a test can find exactly them)."""
    if backend == "sqlite":
        yield f"sqlite:{tmp_path / 'chat.db'}"
        return
    schema = PgSchema(require_postgres())
    name = tag or f"chatproto_test_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{schema.uri}&application_name={name}"
    finally:
        with contextlib.suppress(Exception):
            terminate_backends(schema.dsn, name)
        schema.drop()


def terminate_backends(dsn: str, application_name: str) -> int:
    """Terminate the PostgreSQL backends of ``application_name`` (only them); returns how
    many."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND application_name = %s",
                (application_name,),
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()
