"""The store alone: how long one group-commit batch of the one-in-flight shape takes.

``python -m benchmarks.store_batches [--engine sqlite|postgres] [--batches N]`` makes 50 pairs of
users, then submits, batch after batch, what 50 pairs with one message in flight give the
group committer at once: 50 appends interleaved with 50 delivery acknowledgements. It prints
the median milliseconds per batch and the statements per batch, on each engine; no network,
no crypto, so it isolates the storage path (round trips, statements, the commit) from the
reactor. Prints one ``RESULT {json}`` line per engine.
"""

from __future__ import annotations

import argparse
import json
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


async def measure(reactor: Any, uri: str, batches: int) -> dict[str, Any]:
    db = Database.from_uri(uri)
    await db.start()
    store = ChatStore(db)
    names = [f"u{i}" for i in range(2 * PAIRS)]
    for name in names:
        await store.create_user(name, "h", 0)
    real = Transaction.__init__

    def counting(self: Transaction, cursor: Any, engine: Any, desc: str) -> None:
        real(self, CountingCursor(cursor), engine, desc)

    Transaction.__init__ = counting  # type: ignore[method-assign]
    times, statements = [], []
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
            t0 = time.perf_counter()
            await defer.gatherResults(ds)
            if b >= 3:  # warm-up batches left out
                times.append((time.perf_counter() - t0) * 1000)
                statements.append(CountingCursor.count)
            await task.deferLater(reactor, 0, lambda: None)  # the committer is idle again
    finally:
        Transaction.__init__ = real  # type: ignore[method-assign]
        db.close()
    return {"engine": uri.split(":", 1)[0], "ms_per_batch": statistics.median(times),
            "statements_per_batch": statistics.median(statements), "batches": batches}


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
