"""A private PostgreSQL cluster a test may stop and start again (never the machine's shared one,
which other tests use).

``initdb`` into a temporary directory with the server binaries of Debian's
``/usr/lib/postgresql/VERSION/bin`` (or ``initdb`` on the PATH), a free loopback port, trust
authentication, and ``fsync=off``: a stop (``pg_ctl -m fast`` or ``-m immediate``, a crash) loses
nothing committed, since every commit is written to the WAL in the kernel before it returns; only
an operating-system crash would. When the process runs as root the cluster runs as the
``postgres`` user (PostgreSQL refuses root).

:func:`private_postgres` skips the test when the binaries (or, under root, the ``postgres``
user) are missing, even under CI: the shared service is what CI provides. A cluster that is
there but fails to start is a failure.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.servers import free_port

#: Seconds pg_ctl waits for a start or a stop.
PG_CTL_TIMEOUT = 60


def server_binaries() -> Path | None:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres`` (the newest Debian version
    first), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresProcess:
    """One private cluster: :meth:`init` once, then :meth:`start` and :meth:`stop` at will.

    Args:
        bindir: where ``initdb`` and ``pg_ctl`` are.
        user: the system user the server runs as (None: this process's user).
    """

    def __init__(self, bindir: Path, user: str | None) -> None:
        self.bindir = bindir
        self.user = user
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="chatproto-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.starts = 0
        self.stops = 0
        self.running = False
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        out = subprocess.run(command, capture_output=True, text=True, timeout=PG_CTL_TIMEOUT,
                             check=False)
        if out.returncode != 0:
            raise AssertionError(f"{' '.join(args[:2])} failed ({out.returncode}):\n"
                                 f"{out.stdout}{out.stderr}\n{self.logs()}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                       "max_connections = 200\n")

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", str(PG_CTL_TIMEOUT))
        self.starts += 1
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast``: roll back the transactions in flight, close every connection, checkpoint;
        ``immediate``: end at once (the next start replays the WAL, as after a crash)."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w",
                  "-t", str(PG_CTL_TIMEOUT))
        self.stops += 1
        self.running = False

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.dsn("postgres"))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def remove(self) -> None:
        if self.running:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def unavailable() -> str | None:
    """Why a private cluster cannot run here (None: it can)."""
    if server_binaries() is None:
        return "the PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root without runuser to start PostgreSQL as postgres"
    return None


@contextlib.contextmanager
def private_postgres() -> Iterator[PostgresProcess]:
    """A started private cluster with a database ``test`` (removed afterwards)."""
    reason = unavailable()
    bindir = server_binaries()
    if reason is not None or bindir is None:
        pytest.skip(reason or "no PostgreSQL server binaries")
    pg = PostgresProcess(bindir, "postgres" if os.geteuid() == 0 else None)
    try:
        pg.init()
        pg.start()
        pg.create_database("test")
        yield pg
    finally:
        pg.remove()
