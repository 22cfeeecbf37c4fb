"""The store alone: how long one group-commit batch of the one-in-flight shape takes.

``python -m benchmarks.store_batches [--engine sqlite|postgres] [--batches N]`` makes 50 pairs of
users, then submits, batch after batch, what 50 pairs with one message in flight give the
group committer at once: 50 appends interleaved with 50 delivery acknowledgements. It prints,
per engine, the median milliseconds per batch (from submission to the last result, so with
the hand-over to the pool thread and back: ``ms_per_batch``; inside the transaction only:
``txn_ms_per_batch``), the statements per batch and, on PostgreSQL, the round trips per batch
(the statements plus the COMMIT: BEGIN goes with the first statement; a PREPARE is once per
connection, in the warm-up). No network, no crypto: it isolates the storage path (round
trips, statements, planning, the commit) from the reactor. Prints one ``RESULT {json}`` line
per engine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from chatproto.storage.database import Database, Transaction
from chatproto.storage.store import ChatStore, Draft

POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PAIRS = 50


class CountingCursor:
    """Counts the statements the pool thread sends (wraps the driver's cursor)."""

    count = 0

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, *a: Any) -> Any:
        CountingCursor.count += 1
        return self._cursor.execute(*a)

    def executemany(self, *a: Any) -> Any:
        CountingCursor.count += 1
        return self._cursor.executemany(*a)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def _backend_cpu_ms(pid: int) -> float:
    """CPU time (user + system) a local PostgreSQL backend has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


async def measure(reactor: Any, uri: str, batches: int) -> dict[str, Any]:
    pg = uri.startswith("postgresql")
    # One connection on PostgreSQL, so its backend's CPU is the batches' server CPU.
    db = Database.from_uri(uri, cp_min=1, cp_max=1) if pg else Database.from_uri(uri)
    await db.start()
    store = ChatStore(db)
    backend = 0
    if pg:
        backend = await db.run_interaction("pid", lambda txn: (
            txn.execute("SELECT pg_backend_pid()"), txn.fetchall()[0][0])[1])
    # The pool thread's own CPU (Python, the driver) per batch, waits left out.
    thread_ms: list[float] = []
    run_batch = store.writes._run_batch

    def timed_batch(txn: Transaction, ops: Any) -> Any:
        t0 = time.thread_time()
        try:
            return run_batch(txn, ops)
        finally:
            thread_ms.append((time.thread_time() - t0) * 1000)

    store.writes._run_batch = timed_batch  # type: ignore[method-assign]
    names = [f"u{i}" for i in range(2 * PAIRS)]
    for name in names:
        await store.create_user(name, "h", 0)
    real = Transaction.__init__

    def counting(self: Transaction, cursor: Any, engine: Any, desc: str) -> None:
        real(self, CountingCursor(cursor), engine, desc)

    Transaction.__init__ = counting  # type: ignore[method-assign]
    txn_ms: list[float] = []
    db.on_transaction = lambda desc, seconds: txn_ms.append(seconds * 1000)
    times, statements, in_txn, client_cpu = [], [], [], []
    server_cpu = 0.0
    seq = 0
    try:
        for b in range(batches + 3):
            block = store.writes.submit(lambda txn: None)  # holds the queue for one batch
            ds = []
            for i in range(PAIRS):
                seq += 1
                sender, peer = names[2 * i], names[2 * i + 1]
                ds.append(store.append_message(Draft(sender, 0, peer, seq.to_bytes(16, "big"),
                                                     1, b"x" * 100, None, None, seq)))
                # what the peer received from the earlier batches
                ds.append(store.acknowledge(peer, b"d" * 16, b, seq))
            await block
            CountingCursor.count = 0
            del txn_ms[:], thread_ms[:]
            cpu0 = _backend_cpu_ms(backend) if pg else 0.0
            t0 = time.perf_counter()
            await defer.gatherResults(ds)
            if b >= 3:  # warm-up batches left out
                times.append((time.perf_counter() - t0) * 1000)
                statements.append(CountingCursor.count)
                in_txn.append(sum(txn_ms))
                client_cpu.append(sum(thread_ms))
                if pg:
                    server_cpu += _backend_cpu_ms(backend) - cpu0
            await task.deferLater(reactor, 0, lambda: None)  # the committer is idle again
    finally:
        Transaction.__init__ = real  # type: ignore[method-assign]
        db.close()
    engine = uri.split(":", 1)[0]
    result = {"engine": engine, "ms_per_batch": round(statistics.median(times), 2),
              "txn_ms_per_batch": round(statistics.median(in_txn), 2),
              "statements_per_batch": statistics.median(statements), "batches": batches}
    result["thread_cpu_ms_per_batch"] = round(statistics.median(client_cpu), 2)
    if pg:
        result["round_trips_per_batch"] = statistics.median(statements) + 1
        result["backend_cpu_ms_per_batch"] = round(server_cpu / batches, 2)
    return result


async def main(reactor: Any, args: argparse.Namespace) -> None:
    for engine in args.engine:
        if engine == "sqlite":
            uri = f"sqlite:{Path(tempfile.mkdtemp()) / 'chat.sqlite'}"
            print("RESULT " + json.dumps(await measure(reactor, uri, args.batches)))
            continue
        import psycopg2

        schema = "bench_" + uuid.uuid4().hex[:12]
        conn = psycopg2.connect(POSTGRES_DSN)
        conn.autocommit = True
        conn.cursor().execute(f'CREATE SCHEMA "{schema}"')
        try:
            uri = f"{POSTGRES_DSN}?options=-csearch_path%3D{schema}"
            print("RESULT " + json.dumps(await measure(reactor, uri, args.batches)))
        finally:
            conn.cursor().execute(f'DROP SCHEMA "{schema}" CASCADE')
            conn.close()
    sys.stdout.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--batches", type=int, default=30)
    parsed = parser.parse_args()
    parsed.engine = parsed.engine or ["sqlite", "postgres"]
    task.react(lambda r: defer.ensureDeferred(main(r, parsed)))
