"""Scaling on PostgreSQL and Redis: one worker against two, same-node against cross-node.

    .venv/bin/python -m benchmarks.scaling [--duration 10] [--rounds 1] [--out FILE.json]

``make bench`` runs the same scenarios through :func:`scenario_workers` and
:func:`scenario_placement` (``benchmarks.run``'s ``scaling`` scenario), with the rows of
``benchmarks.report.scaling_rows`` in its table and ``scaling.png``.

Needs PostgreSQL (``postgresql://postgres@127.0.0.1:5432/test`` or
``$CHATPROTO_BENCH_POSTGRES``, as ``benchmarks.run``; a fresh schema per scenario)
and Redis on 127.0.0.1:6379 (a key prefix per scenario). Scenarios, each with a fresh schema:

* ``workers1-*`` / ``workers2-*``: ``twistd chatserver --workers N`` (N = 1 is a plain single
  process with ``--bus``) and the load generator's direct scenario, pipelined (50 pairs x 100
  in flight) and one in flight (50 pairs). The machine's cores are shared by the servers and
  the generator, so the figure is **work per server CPU-second**: delivered messages divided
  by the CPU seconds of every server process (the workers, not the idle parent) over the
  measured window. The ratio two / one is the scaling efficiency (target >= 0.85).
* ``same`` / ``cross``: two nodes on two ports, 50 pairs one in flight, both nodes loaded
  alike; in ``same`` both partners of a pair are on one node (pairs alternate between the
  nodes), in ``cross`` they are on different nodes. Only where the partners are differs, so
  the ratio is the cost of crossing nodes, not of a second writer on the database. p99 of
  send -> Deliver (target: cross <= 1.5 x same).

The load generator is benchmarks/loadgen.py, run in a subprocess of this script's own
``--loadgen`` mode, which only changes where each client connects (``--ports``) and whose CPU
counts as the server's (``--cpu-pids``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import proc_cpu
from benchmarks.report import Row, Scenario, markdown, scaling_rows

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
POSTGRES = os.environ.get("CHATPROTO_BENCH_POSTGRES",
                          "postgresql://postgres@127.0.0.1:5432/test")
REDIS = "redis://127.0.0.1:6379/0"
FAST = ["--insecure-fast-hashing", "--argon2-memory-kib", "8", "--argon2-iterations", "1"]
OPEN = ["--max-connections-per-ip", "30000", "--max-handshakes", "20000",
        "--registrations-per-ip", "1000000", "--ip-failures", "1000000",
        "--account-failures", "1000000", "--handshake-timeout", "120",
        "--argon2-jobs-per-ip", "100000"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Schema:
    """A fresh PostgreSQL schema (dropped by :meth:`drop`)."""

    def __init__(self) -> None:
        import psycopg2

        self.name = "bench_" + uuid.uuid4().hex[:12]
        conn = psycopg2.connect(POSTGRES)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{self.name}"')
        conn.close()
        self.uri = f"{POSTGRES}?options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        import psycopg2

        conn = psycopg2.connect(POSTGRES)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
        conn.close()


class Server:
    """``twistd chatserver`` on a fresh port (``--workers``: the pids of its workers)."""

    def __init__(self, workdir: Path, tag: str, uri: str, bus: str, key: Path,
                 extra: list[str], logdir: Path | None = None) -> None:
        self.port = free_port()
        self.log = (logdir or workdir) / f"scaling-{tag}.log"
        argv = [TWISTD, "-n", "--pidfile=", "chatserver", "--listen",
                f"tcp:{self.port}:interface=127.0.0.1", "--database", uri, "--bus", bus,
                "--identity", str(key), "--node-name", tag, *FAST, *OPEN, *extra]
        self.proc = subprocess.Popen(argv, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     cwd=workdir)

    def wait(self, workers: int = 0) -> None:
        import socket

        for _ in range(600):
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()}")
            text = self.log.read_text()
            if text.count("(chat)") >= max(1, workers):
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.1)  # subprocess readiness poll (a script, not a test)
        raise RuntimeError(f"server did not listen:\n{self.log.read_text()}")

    def worker_pids(self) -> list[int]:
        found = re.findall(r"worker \d+ started \(pid (\d+)\)", self.log.read_text())
        return [int(p) for p in found] or [self.proc.pid]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def loadgen(ports: list[int], cpu_pids: list[int], params: dict[str, Any], prefix: str,
            placement: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.scaling", "--loadgen",
            "--ports", ",".join(map(str, ports)), "--cpu-pids", ",".join(map(str, cpu_pids)),
            "--placement", placement, "--", "--target", "server", "--port", str(ports[0]),
            "--scenario", "direct", "--params", json.dumps(params), "--server-pid",
            str(cpu_pids[0]), "--prefix", prefix, "--timeout", "240"]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    raise RuntimeError(f"no result from the load generator:\n{out.stdout}\n{out.stderr}")


def run_loadgen_mode(argv: list[str]) -> None:
    """In the load generator's process: patch where clients connect and whose CPU counts."""
    p = argparse.ArgumentParser()
    p.add_argument("--ports", required=True)
    p.add_argument("--cpu-pids", required=True)
    p.add_argument("--placement", choices=["spread", "same", "cross"], default="spread")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    ports = [int(x) for x in args.ports.split(",")]
    pids = [int(x) for x in args.cpu_pids.split(",")]
    from benchmarks import loadgen

    def connect(gen: Any, client: Any) -> Any:
        if args.placement == "same":  # both partners (i, i ^ 1) on one node, pairs spread
            port = ports[(client.index // 2) % len(ports)]
        else:  # partners on different nodes ("cross"); "spread" is one port anyway
            port = ports[client.index % len(ports)]
        gen.reactor.connectTCP("127.0.0.1", port, loadgen.OneFactory(client), timeout=30)
        return client.ready

    loadgen.connect = connect
    loadgen.proc_cpu = lambda _pid: sum(proc_cpu(pid) for pid in pids)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    sys.argv = ["loadgen", *rest]
    loadgen.main()


#: ``record(name, result, round, loadavg)``: called with each round's result.
Record = Callable[[str, dict[str, Any], int, list[float]], None]


def identity(workdir: Path) -> Path:
    """A server identity key shared by every node of the scenarios (one deployment)."""
    from chatproto.server.identity import load_or_create_identity

    key = workdir / "server.key"
    load_or_create_identity(str(key))
    return key


def measure(record: Record, name: str, rnd: int, ports: list[int], pids: list[int],
            params: dict[str, Any], prefix: str, placement: str) -> None:
    """One load-generator round; an error is recorded as the round's result."""
    load = list(os.getloadavg())  # the machine's state before the round
    try:
        res = loadgen(ports, pids, params, prefix, placement)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        res = {"error": str(e)[:500]}
    record(name, res, rnd, load)


def scenario_workers(workdir: Path, key: Path, workers: int, duration: float, *,
                     warmup: float = 2.0, pairs: int = 50, rounds: int = 1,
                     logdir: Path | None = None, record: Record) -> None:
    """``workers{N}-pipelined`` and ``workers{N}-one``: ``rounds`` rounds each against one
    server with ``--workers N`` (N = 1: a plain process with ``--bus``)."""
    schema = Schema()
    bus = f"{REDIS}?prefix=bench-{uuid.uuid4().hex[:8]}:"
    extra = ["--workers", str(workers)] if workers > 1 else []
    server = Server(workdir, f"w{workers}", schema.uri, bus, key, extra, logdir)
    try:
        server.wait(workers)
        pids = server.worker_pids()
        for name, window in (("pipelined", 100), ("one", 1)):
            params = {"pairs": pairs, "window": window, "warmup": warmup, "duration": duration}
            for rnd in range(rounds):
                measure(record, f"workers{workers}-{name}", rnd, [server.port], pids, params,
                        f"w{workers}{name[0]}{rnd}x", "spread")
    finally:
        server.stop()
        schema.drop()


def scenario_placement(workdir: Path, key: Path, duration: float, *, warmup: float = 2.0,
                       pairs: int = 50, rounds: int = 1, logdir: Path | None = None,
                       record: Record) -> None:
    """``same`` and ``cross``: two nodes, one in flight; both partners of a pair on one node
    (pairs alternate between the nodes), or on different nodes; ``rounds`` of each, in
    turn."""
    schema = Schema()
    bus = f"{REDIS}?prefix=bench-{uuid.uuid4().hex[:8]}:"
    nodes = [Server(workdir, f"n{i}", schema.uri, bus, key, [], logdir) for i in (1, 2)]
    try:
        for node in nodes:
            node.wait()
        pids = [n.proc.pid for n in nodes]
        ports = [n.port for n in nodes]
        params = {"pairs": pairs, "window": 1, "warmup": warmup, "duration": duration}
        # Rounds alternate (same, cross, same, ...): the tables grow as the rounds go, and
        # each placement gets its share of early and late rounds.
        for rnd in range(rounds):
            for placement in ("same", "cross"):
                measure(record, placement, rnd, ports, pids, params,
                        f"p{placement[0]}{rnd}x", placement)
    finally:
        for node in nodes:
            node.stop()
        schema.drop()


def main(argv: list[str]) -> None:
    if argv[:1] == ["--loadgen"]:
        run_loadgen_mode(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    results: dict[str, list[dict[str, Any]]] = {}

    def record(name: str, res: dict[str, Any], rnd: int, load: list[float]) -> None:
        results.setdefault(name, []).append({**res, "loadavg": load})
        print(f"{name} round {rnd + 1}: "
              + (f"error {res['error']}" if "error" in res else
                 f"{res['msgs_per_s']:.0f} msgs/s, p99 {res['latency']['p99_ms']:.2f} ms, "
                 f"server CPU {res.get('server_cpu_s', 0):.2f} s"), flush=True)

    with tempfile.TemporaryDirectory(prefix="chatproto-scaling-") as tmp:
        workdir = Path(tmp)
        key = identity(workdir)
        for workers in (1, 2):
            scenario_workers(workdir, key, workers, args.duration, rounds=args.rounds,
                             record=record)
        scenario_placement(workdir, key, args.duration, rounds=args.rounds, record=record)
    sc = Scenario("scaling", "scaling", "scaling", {}, targets=(), results=results)
    rows = scaling_rows_of(sc)
    print(markdown(rows, ["scenario", "figure", "2 workers / cross", "1 worker / same",
                          "ratio", "target", "result"]))
    if args.out is not None:
        args.out.write_text(json.dumps({"cpus": os.cpu_count(), "results": results,
                                        "rows": [r.__dict__ for r in rows]}, indent=1))


def scaling_rows_of(sc: Scenario) -> list[Row]:
    rows: list[Row] = []
    scaling_rows(rows, {sc.key: sc})
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
