"""Run the chatproto benchmarks against the baseline relay and print PASS/MISS per target.

``python -m benchmarks.run`` (``make bench``) is the short version: fewer rounds and shorter
windows, the 500-pair scenario skipped and 2,000 instead of 10,000 idle connections.
``python -m benchmarks.run --full`` (``make bench-full``) runs everything.

For each scenario it starts a fresh server (``twistd chatserver``: fresh SQLite database,
fresh identity) and a fresh baseline relay (``benchmarks/relay.py``), each pinned to core 0,
and runs ``benchmarks/loadgen.py`` pinned to core 1 (when there are two cores), once per
round. Figures are medians over the rounds; ratios compare with the relay measured in the same
run. Results go to ``benchmarks/results/<date>-<host>/``: ``results.json``, ``results.md``,
``throughput.png``, ``latency_cdf.png`` and the processes' logs. Everything talks to
127.0.0.1 only; every process is killed at the end, also on errors.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import xmpp_loadgen
from benchmarks.common import raise_nofile

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TWISTD = BIN / "twistd"
PROSODY = shutil.which("prosody") or "/usr/bin/prosody"

FAST_HASHING = ["--insecure-fast-hashing", "--argon2-memory-kib", "8", "--argon2-iterations", "1"]
OPEN_LIMITS = ["--max-connections-per-ip", "30000", "--max-handshakes", "20000",
               "--registrations-per-ip", "1000000", "--ip-failures", "1000000",
               "--account-failures", "1000000", "--handshake-timeout", "120",
               "--argon2-jobs-per-ip", "100000", "--message-rate", "0"]

#: The PostgreSQL the PostgreSQL scenarios use (a fresh schema each): the test database.
POSTGRES_DSN = os.environ.get("CHATPROTO_BENCH_POSTGRES",
                              "postgresql://postgres@127.0.0.1:5432/test")
#: A baseline round deviating by more than this from the other rounds' median is repeated.
NOISE = 0.20

#: Prosody's configuration for the peer scenarios: plaintext c2s on one loopback port, SASL
#: ANONYMOUS, no s2s/HTTP; with ``{mam}`` every chat message is archived (mod_mam on SQLite).
PROSODY_CONFIG = """
pidfile = "{dir}/prosody.pid"
data_path = "{dir}"
log = {{ warn = "*console" }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
modules_enabled = {{ "saslauth", "disco", "ping" {mam_module} }}
modules_disabled = {{ "s2s", "tls", "offline", "c2s_limits", "limits" }}
{storage}
VirtualHost "{domain}"
    authentication = "anonymous"
"""
PROSODY_MAM = """
storage = "sql"
sql = {{ driver = "SQLite3", database = "{dir}/prosody.sqlite" }}
default_archive_policy = true
archive_expires_after = "never"
"""

ARGON2_PROBE = """
import os, sys, time
core = int(sys.argv[1])
if core >= 0 and len(os.sched_getaffinity(0)) > 1:
    os.sched_setaffinity(0, {core})
from chatproto.server.passwords import Argon2Parameters, hash_password
p = Argon2Parameters()
hash_password("warm-up-password", p)
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < float(sys.argv[2]):
    hash_password("bench-password-1", p)
    n += 1
print(n / (time.perf_counter() - t0))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(core: int | None, user: str | None = None) -> Any:
    """The child's set-up: pinned to ``core``; as ``user`` if given and we are root."""
    account = None
    if user is not None and os.getuid() == 0:
        import pwd

        account = pwd.getpwnam(user)
    if core is None and account is None:
        return None

    def setup() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})
        if account is not None:
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)

    return setup


class Proc:
    """A subprocess (server or relay) with its log file; killed by ``stop``."""

    def __init__(self, name: str, argv: list[str], log: Path, core: int | None,
                 user: str | None = None) -> None:
        self.name = name
        self.log = log
        self.logf = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, cwd=ROOT,
                                  preexec_fn=pin(core, user), start_new_session=True)
        self.pid = self.p.pid

    def wait_port(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen on {port} within {timeout} s")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.logf.close()


@dataclass
class Scenario:
    key: str
    title: str
    loadgen: str
    params: dict[str, Any]
    targets: tuple[str, ...] = ("server", "relay")
    hashing: str = "fast"  # or "argon2": the server keeps OWASP's Argon2id cost
    backend: str = "sqlite"  # or "postgres": a fresh schema in the local test database
    rounds: int = 3
    timeout: float = 240.0
    note: str = ""
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Baseline rounds replaced because they deviated from the others (kept for the record).
    discarded: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def figure(self) -> str:
        """The result key a round's noise is judged by."""
        return {"images": "mb_per_s", "fanout": "deliveries_per_s"}.get(self.key, "msgs_per_s")


def scenarios(full: bool) -> list[Scenario]:
    r = 5 if full else 3
    d, w = (5.0, 1.5) if full else (2.0, 1.0)
    out = [
        Scenario("pipelined", "direct chat, pipelined (50 pairs x 100 in flight, 100 B)",
                 "direct", dict(pairs=50, window=100, warmup=w, duration=d), rounds=r),
        Scenario("one50", "direct chat, one in flight (50 pairs)", "direct",
                 dict(pairs=50, window=1, warmup=w, duration=d), rounds=r),
    ]
    out += [
        Scenario("pipelined-pg", "direct chat, pipelined, on PostgreSQL", "direct",
                 dict(pairs=50, window=100, warmup=w, duration=d), targets=("server",),
                 backend="postgres", rounds=r),
        Scenario("one50-pg", "direct chat, one in flight (50 pairs), on PostgreSQL", "direct",
                 dict(pairs=50, window=1, warmup=w, duration=d), targets=("server",),
                 backend="postgres", rounds=r),
    ]
    if full:
        # The peer: Prosody without storage and with mod_mam on SQLite, same load shapes.
        out += [
            Scenario("peer-pipelined", "Prosody, pipelined (50 pairs x 100 in flight, 100 B)",
                     "xmpp", dict(pairs=50, window=100, warmup=w, duration=d),
                     targets=("prosody", "prosody-mam"), rounds=r),
            Scenario("peer-one50", "Prosody, one in flight (50 pairs)", "xmpp",
                     dict(pairs=50, window=1, warmup=w, duration=d),
                     targets=("prosody", "prosody-mam"), rounds=r),
        ]
        out.append(Scenario("one500", "direct chat, one in flight (500 pairs)", "direct",
                            dict(pairs=500, window=1, warmup=w, duration=d), rounds=r))
    out += [
        Scenario("images", "64 KiB images (20 pairs x 4 in flight)", "direct",
                 dict(pairs=20, window=4, warmup=w, duration=d, image_bytes=64 * 1024),
                 rounds=r),
        Scenario("fanout", "group fan-out (100 members, 10 senders x 10 in flight)", "fanout",
                 dict(members=100, senders=10, window=10, warmup=w, duration=d), rounds=r),
        Scenario("drain", "offline drain (10,000 stored messages)", "drain",
                 dict(messages=10_000), targets=("server",), rounds=3 if full else 1),
        Scenario("idle", f"{10_000 if full else 2_000:,} idle signed-in connections", "idle",
                 dict(connections=10_000 if full else 2_000, warm=200),
                 rounds=1, timeout=600.0,
                 note="" if full else "short run: 2,000 connections instead of 10,000"),
        Scenario("storm", "login storm (real Argon2id) with 10 chatting pairs", "storm",
                 dict(pairs=10, storm_users=32, storm_concurrency=16, warmup=1.0,
                      duration=5.0 if full else 3.0),
                 targets=("server",), hashing="argon2", rounds=3 if full else 1,
                 timeout=300.0),
    ]
    return out


class Runner:
    def __init__(self, args: argparse.Namespace, outdir: Path) -> None:
        self.args = args
        self.outdir = outdir
        cores = sorted(os.sched_getaffinity(0))
        self.server_core: int | None = cores[0] if len(cores) >= 2 else None
        self.gen_core: int | None = cores[1] if len(cores) >= 2 else None
        self.procs: list[Proc] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="chatproto-bench-"))
        self.counter = 0
        self.schemas: list[str] = []

    def start_server(self, key: str, hashing: str, backend: str = "sqlite") -> tuple[Proc, int]:
        port = free_port()
        data = self.tmp / f"{key}-{port}"
        data.mkdir()
        database = f"sqlite:{data / 'chat.sqlite'}"
        if backend == "postgres":
            database = self.postgres_schema(f"bench_{key.replace('-', '_')}_{port}")
        argv = [str(TWISTD), "-n", "--pidfile=", "chatserver",
                "--listen", f"tcp:{port}:interface=127.0.0.1",
                "--database", database,
                "--identity", str(data / "identity.key"), *OPEN_LIMITS]
        if hashing == "fast":
            argv += FAST_HASHING
        proc = Proc(f"server[{key}]", argv, self.outdir / f"server-{key}.log", self.server_core)
        self.procs.append(proc)
        proc.wait_port(port, 60)
        return proc, port

    def postgres_schema(self, name: str) -> str:
        """A fresh schema in the PostgreSQL at ``POSTGRES_DSN`` (dropped at close); its URI."""
        import psycopg2

        conn = psycopg2.connect(POSTGRES_DSN)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{name}"')
        conn.close()
        self.schemas.append(name)
        return f"{POSTGRES_DSN}?options=-csearch_path%3D{name}"

    def start_prosody(self, key: str, archive: bool) -> tuple[Proc, int]:
        """Prosody (Debian's package; make bench-full installs it) as this run's own process,
        on a free loopback port, with a fresh data directory."""
        port = free_port()
        data = Path(tempfile.mkdtemp(prefix=f"prosody-{key}-", dir=self.tmp))
        # Prosody refuses to run as root: as root, it runs as Debian's "prosody" user.
        self.tmp.chmod(0o755)
        data.chmod(0o777)
        (data / "certs").mkdir()  # none needed (plaintext c2s); an empty one keeps it quiet
        config = PROSODY_CONFIG.format(
            dir=data, port=port, domain=xmpp_loadgen.DOMAIN,
            mam_module=', "mam"' if archive else "",
            storage=PROSODY_MAM.format(dir=data) if archive else "")
        (data / "prosody.cfg.lua").write_text(config)
        argv = [PROSODY, "--config", str(data / "prosody.cfg.lua"), "-F"]
        name = f"prosody{'-mam' if archive else ''}-{key}"
        proc = Proc(name, argv, self.outdir / f"{name}.log", self.server_core, user="prosody")
        self.procs.append(proc)
        proc.wait_port(port, 30)
        return proc, port

    def start_relay(self, key: str) -> tuple[Proc, int]:
        port = free_port()
        argv = [sys.executable, "-m", "benchmarks.relay", "--port", str(port)]
        proc = Proc(f"relay[{key}]", argv, self.outdir / f"relay-{key}.log", self.server_core)
        self.procs.append(proc)
        proc.wait_port(port, 30)
        return proc, port

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def loadgen(self, sc: Scenario, target: str, port: int, pid: int,
                rnd: int) -> dict[str, Any]:
        self.counter += 1
        if sc.loadgen == "xmpp":
            argv = [sys.executable, "-m", "benchmarks.xmpp_loadgen", "--port", str(port),
                    "--params", json.dumps(sc.params), "--server-pid", str(pid),
                    "--timeout", str(sc.timeout)]
            return self.run_loadgen(sc, target, rnd, argv)
        argv = [sys.executable, "-m", "benchmarks.loadgen", "--target", target,
                "--port", str(port), "--scenario", sc.loadgen, "--params",
                json.dumps(sc.params), "--server-pid", str(pid),
                "--prefix", f"{sc.key[:6]}{rnd}x", "--index-base", str(self.counter * 100_000),
                "--timeout", str(sc.timeout)]
        return self.run_loadgen(sc, target, rnd, argv)

    def run_loadgen(self, sc: Scenario, target: str, rnd: int,
                    argv: list[str]) -> dict[str, Any]:
        if self.gen_core is not None:
            argv += ["--core", str(self.gen_core)]
        log = self.outdir / f"loadgen-{sc.key}-{target}-{rnd}.log"
        load = os.getloadavg()  # the machine's state before the round
        with open(log, "wb") as errf:
            try:
                done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=errf,
                                      timeout=sc.timeout + 30, check=False)
                out = done.stdout.decode(errors="replace")
            except subprocess.TimeoutExpired as e:
                out = (e.stdout or b"").decode(errors="replace")
        for line in out.splitlines():
            if line.startswith("RESULT "):
                return {**json.loads(line[7:]), "loadavg": list(load)}
        return {"error": f"no result (see {log})", "loadavg": list(load)}

    def run_scenario(self, sc: Scenario) -> None:
        for target in sc.targets:
            if target == "relay":
                proc, port = self.start_relay(sc.key)
            elif target.startswith("prosody"):
                proc, port = self.start_prosody(sc.key, archive=target == "prosody-mam")
            else:
                proc, port = self.start_server(sc.key, sc.hashing, sc.backend)
            try:
                runs = []
                for rnd in range(sc.rounds):
                    runs.append(self.round(sc, target, port, proc.pid, rnd))
                if target == "relay":
                    self.repeat_noisy(sc, target, port, proc.pid, runs)
                sc.results[target] = runs
            finally:
                self.stop(proc)

    def round(self, sc: Scenario, target: str, port: int, pid: int, rnd: int) -> dict[str, Any]:
        res = self.loadgen(sc, target, port, pid, rnd)
        load = res["loadavg"][0]
        print(f"  {sc.key:12} {target:6} round {rnd + 1}/{sc.rounds} (load {load:.2f}): "
              f"{brief(sc, res)}", flush=True)
        return res

    def repeat_noisy(self, sc: Scenario, target: str, port: int, pid: int,
                     runs: list[dict[str, Any]]) -> None:
        """Run again (at most ``sc.rounds`` times in all) a round whose figure deviates by
        more than :data:`NOISE` from the median of the rounds: a busy moment of the
        machine, not the code. The replaced rounds are kept in ``sc.discarded``."""
        for _ in range(sc.rounds):
            worst, dev = noisiest(runs, sc.figure)
            if worst is None or dev <= NOISE:
                return
            print(f"  {sc.key:12} {target:6} round {worst + 1} deviates {dev:.0%} from the "
                  "others: repeated", flush=True)
            sc.discarded.setdefault(target, []).append(runs[worst])
            runs[worst] = self.round(sc, target, port, pid, worst)

    def argon2_bound(self) -> dict[str, Any]:
        core = self.server_core if self.server_core is not None else -1
        out = subprocess.run([sys.executable, "-c", ARGON2_PROBE, str(core), "3"], cwd=ROOT,
                             capture_output=True, timeout=60, check=True)
        per_core = float(out.stdout.decode().strip().splitlines()[-1])
        server_cores = 1 if self.server_core is not None else len(os.sched_getaffinity(0))
        return {"per_core_hashes_per_s": per_core, "server_cores": server_cores,
                "bound_logins_per_s": per_core * server_cores}

    def close(self) -> None:
        for proc in list(self.procs):
            proc.stop()
        self.procs.clear()
        if self.schemas:
            import psycopg2

            conn = psycopg2.connect(POSTGRES_DSN)
            conn.autocommit = True
            with conn.cursor() as cur:
                for name in self.schemas:
                    cur.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            conn.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def noisiest(runs: list[dict[str, Any]], figure: str) -> tuple[int | None, float]:
    """The round whose ``figure`` deviates most from the median of all rounds, and by how
    much (relative); (None, 0) with fewer than 3 usable rounds. A round without the figure
    (an error) counts as fully off."""
    values = [r.get(figure) for r in runs]
    usable = [float(v) for v in values if isinstance(v, int | float)]
    if len(usable) < 3:
        return None, 0.0
    ref = statistics.median(usable)
    worst, dev = None, 0.0
    for i, v in enumerate(values):
        d = abs(float(v) / ref - 1) if isinstance(v, int | float) and ref else 1.0
        if d > dev:
            worst, dev = i, d
    return worst, dev


def brief(sc: Scenario, res: dict[str, Any]) -> str:
    if "error" in res:
        return "ERROR " + str(res["error"])
    errs = f" errors={res['errors']}" if res.get("errors") else ""
    if sc.key == "drain":
        return f"drain {res['drain_s']:.3f} s ({res['delivered']} msgs){errs}"
    if sc.key == "idle":
        return (f"{res['rss_per_conn_bytes']:.0f} B/conn, {res['open']} open, "
                f"{res['logins_per_s']:.0f} logins/s{errs}")
    if sc.key == "storm":
        return (f"{res['logins_per_s_alone']:.1f} logins/s alone, {res['logins_per_s']:.1f} "
                f"with chat; chat p99 idle "
                f"{res['idle_p99_ms']:.1f} ms / storm {res['storm_p99_ms']:.1f} ms{errs}")
    lat = res.get("latency", {})
    return (f"{res['msgs_per_s']:.0f} msgs/s {res['mb_per_s']:.1f} MB/s p50 "
            f"{lat.get('p50_ms', 0):.2f} ms p99 {lat.get('p99_ms', 0):.2f} ms, "
            f"gen CPU {res['gen_cpu_pct']:.0f}% server CPU {res.get('server_cpu_pct', 0):.0f}%"
            f"{errs}")


def med(runs: list[dict[str, Any]], *path: str) -> float | None:
    values = []
    for r in runs:
        v: Any = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, int | float):
            values.append(float(v))
    return statistics.median(values) if values else None


@dataclass
class Row:
    scenario: str
    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    target: str = ""
    passed: bool | None = None
    note: str = ""

    def cells(self) -> list[str]:
        ratio = (f"{self.value / self.baseline:.1%}" if self.value is not None
                 and self.baseline else "")
        verdict = {True: "PASS", False: "MISS", None: ""}[self.passed]
        return [self.scenario, self.figure, fmt(self.value, self.unit),
                fmt(self.baseline, self.unit), ratio, self.target, verdict]


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f} {unit}".strip()
    return f"{v:.3g} {unit}".strip()


def evaluate(scs: list[Scenario], bound: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    by = {sc.key: sc for sc in scs}

    def pair(key: str, *path: str) -> tuple[float | None, float | None]:
        sc = by.get(key)
        if sc is None:
            return None, None
        return med(sc.results.get("server", []), *path), med(sc.results.get("relay", []), *path)

    def ratio_row(key: str, name: str, figure: str, unit: str, path: tuple[str, ...],
                  min_ratio: float | None) -> None:
        v, b = pair(key, *path)
        if key not in by:
            return
        ok = None if min_ratio is None or v is None or not b else v / b >= min_ratio
        target = f">= {min_ratio:.0%} of baseline" if min_ratio is not None else ""
        rows.append(Row(name, figure, v, unit, b, target, ok))

    ratio_row("pipelined", "pipelined", "delivered msgs/s", "msg/s", ("msgs_per_s",), 0.45)
    ratio_row("pipelined", "pipelined", "server CPU per msg", "us", ("server_cpu_us_per_msg",),
              None)
    for key, name in (("one50", "one in flight, 50 pairs"),
                      ("one500", "one in flight, 500 pairs")):
        ratio_row(key, name, "delivered msgs/s", "msg/s", ("msgs_per_s",), 0.65)
        ratio_row(key, name, "p50 latency", "ms", ("latency", "p50_ms"), None)
        v, b = pair(key, "latency", "p99_ms")
        if key in by:
            limit = 10.0 if key == "one50" else None
            rows.append(Row(name, "p99 latency", v, "ms", b,
                            "<= 10 ms" if limit else "",
                            None if limit is None or v is None else v <= limit))
    for key, base, name in (("pipelined-pg", "pipelined", "pipelined, PostgreSQL"),
                            ("one50-pg", "one50", "one in flight, 50 pairs, PostgreSQL")):
        if key in by and base in by:
            v, _ = pair(key, "msgs_per_s")
            b, _ = pair(base, "msgs_per_s")
            rows.append(Row(name, "delivered msgs/s (baseline: SQLite)", v, "msg/s", b,
                            ">= 80% of SQLite",
                            None if v is None or not b else v / b >= 0.8))
            v, _ = pair(key, "latency", "p99_ms")
            b, _ = pair(base, "latency", "p99_ms")
            rows.append(Row(name, "p99 latency (baseline: SQLite)", v, "ms", b))
    for key, ours, name in (("peer-pipelined", "pipelined", "pipelined vs Prosody"),
                            ("peer-one50", "one50", "one in flight, 50 pairs, vs Prosody")):
        if key not in by or ours not in by:
            continue
        v, _ = pair(ours, "msgs_per_s")
        cpu, _ = pair(ours, "server_cpu_us_per_msg")
        peer = by[key].results
        for target, label in (("prosody", "Prosody, no storage"),
                              ("prosody-mam", "Prosody + mod_mam (SQLite)")):
            b = med(peer.get(target, []), "msgs_per_s")
            bcpu = med(peer.get(target, []), "server_cpu_us_per_msg")
            first = target == "prosody"
            rows.append(Row(name, f"msgs/s (baseline: {label})", v, "msg/s", b,
                            ">= 1x" if first else "",
                            None if not first or v is None or not b else v >= b))
            rows.append(Row(name, f"server CPU per msg (baseline: {label})", cpu, "us", bcpu))
    v, b = pair("images", "mb_per_s")
    if "images" in by:
        rows.append(Row("64 KiB images", "throughput", v, "MB/s", b, ">= 450 MB/s",
                        None if v is None else v >= 450))
    v, b = pair("fanout", "deliveries_per_s")
    if "fanout" in by:
        rows.append(Row("group fan-out", "deliveries/s", v, "/s", b, ">= 150,000/s",
                        None if v is None else v >= 150_000))
    if "drain" in by:
        v, _ = pair("drain", "drain_s")
        rows.append(Row("offline drain", "Sync -> SyncDone, 10,000 msgs", v, "s", None,
                        "<= 0.5 s", None if v is None else v <= 0.5))
    if "idle" in by:
        v, b = pair("idle", "rss_per_conn_bytes")
        rows.append(Row("idle connections", "server RSS per connection", v, "B", b,
                        "<= 8 KiB", None if v is None else v <= 8192, by["idle"].note))
    if "storm" in by:
        sc = by["storm"]
        bnd = bound.get("bound_logins_per_s")
        v = med(sc.results.get("server", []), "logins_per_s_alone")
        rows.append(Row("login storm", "logins/s (baseline: Argon2id bound)", v, "/s", bnd,
                        ">= 80% of bound",
                        None if v is None or not bnd else v >= 0.8 * bnd))
        v = med(sc.results.get("server", []), "logins_per_s")
        rows.append(Row("login storm", "logins/s while 10 pairs chat", v, "/s", bnd))
        idle = med(sc.results.get("server", []), "idle_p99_ms")
        storm = med(sc.results.get("server", []), "storm_p99_ms")
        rows.append(Row("login storm", "chat p99 during storm (baseline: idle p99)", storm,
                        "ms", idle, "<= 2x idle",
                        None if storm is None or not idle else storm <= 2 * idle))
    return rows


def machine_state(scs: list[Scenario]) -> list[str]:
    """One line per scenario: the 1-minute load average before its rounds, and the rounds
    repeated because their baseline deviated."""
    lines = []
    for sc in scs:
        loads = [r["loadavg"][0] for runs in sc.results.values() for r in runs
                 if r.get("loadavg")]
        if not loads:
            continue
        redo = sum(len(v) for v in sc.discarded.values())
        lines.append(f"- {sc.key}: load average (1 min) before the rounds "
                     f"{min(loads):.2f}-{max(loads):.2f}"
                     + (f"; {redo} baseline round(s) repeated (> {NOISE:.0%} off the others)"
                        if redo else ""))
    return lines


def markdown(rows: list[Row], header: list[str]) -> str:
    table = [header] + [r.cells() for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in table]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def plots(scs: list[Scenario], rows: list[Row], outdir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots")
        return []
    made = []
    bars = [r for r in rows if r.value is not None and r.figure in (
        "delivered msgs/s", "throughput", "deliveries/s", "server RSS per connection",
        "logins/s (baseline: Argon2id bound)")]
    if bars:
        fig, axes = plt.subplots(1, len(bars), figsize=(3.2 * len(bars), 4), squeeze=False)
        for ax, r in zip(axes[0], bars, strict=True):
            labels = ["chatproto"] + (["baseline"] if r.baseline else [])
            values = [r.value] + ([r.baseline] if r.baseline else [])
            ax.bar(labels, values, color=["tab:blue", "tab:gray"][: len(values)])
            ax.set_title(f"{r.scenario}\n{r.figure}", fontsize=8)
            ax.set_ylabel(r.unit)
            ax.tick_params(labelsize=8)
            if r.passed is not None:
                ax.set_xlabel(r.target + (" PASS" if r.passed else " MISS"), fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / "throughput.png", dpi=100)
        plt.close(fig)
        made.append("throughput.png")
    curves = []
    for sc in scs:
        for target, runs in sc.results.items():
            if sc.key == "storm":
                for phase in ("idle", "storm"):
                    ok = [r[phase] for r in runs if phase in r and r[phase].get("cdf_ms")]
                    if ok:
                        curves.append((f"storm: chat during {phase}", ok[len(ok) // 2]["cdf_ms"]))
            elif sc.key.startswith("one"):
                ok = [r for r in runs if r.get("cdf_ms")]
                if ok:
                    ok.sort(key=lambda r: r["msgs_per_s"])
                    curves.append((f"{sc.key} {target}", ok[len(ok) // 2]["cdf_ms"]))
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, cdf in curves:
            ys = [i / (len(cdf) - 1) for i in range(len(cdf))]
            ax.plot(cdf, ys, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("latency send -> Deliver at the recipient (ms, log)")
        ax.set_ylabel("fraction of messages")
        ax.axvline(10, color="red", linestyle=":", linewidth=1)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(outdir / "latency_cdf.png", dpi=100)
        plt.close(fig)
        made.append("latency_cdf.png")
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="every scenario at full size")
    parser.add_argument("--only", default="", help="comma-separated scenario keys")
    parser.add_argument("--rounds", type=int, default=0, help="override the rounds")
    parser.add_argument("--out", default="", help="results directory")
    args = parser.parse_args()
    raise_nofile()
    host = socket.gethostname() or "local"
    date = datetime.date.today().isoformat()
    outdir = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{date}-{host}"
    outdir.mkdir(parents=True, exist_ok=True)
    scs = scenarios(args.full)
    if args.only:
        keep = set(args.only.split(","))
        scs = [sc for sc in scs if sc.key in keep]
    if args.rounds:
        for sc in scs:
            sc.rounds = args.rounds
    mode = "full" if args.full else "SHORT (make bench-full for everything)"
    print(f"chatproto benchmarks, {mode}; results in {outdir}")
    if not args.full:
        print("  short run: fewer rounds (3, drain/storm 1) and 2 s windows; the 500-pair "
              "scenario is skipped and 2,000 idle connections stand in for 10,000")
    runner = Runner(args, outdir)
    print(f"  server/relay on core {runner.server_core}, load generator on core "
          f"{runner.gen_core}; {len(os.sched_getaffinity(0))} cores")
    t0 = time.monotonic()
    bound: dict[str, Any] = {}
    try:
        if any(sc.key == "storm" for sc in scs):
            bound = runner.argon2_bound()
            print(f"  Argon2id (m=19 MiB, t=2, p=1): {bound['per_core_hashes_per_s']:.1f} "
                  f"hashes/s per core x {bound['server_cores']} server core(s) = "
                  f"{bound['bound_logins_per_s']:.1f} logins/s bound")
        for sc in scs:
            print(f"- {sc.title}" + (f" [{sc.note}]" if sc.note else ""), flush=True)
            try:
                runner.run_scenario(sc)
            except Exception as e:  # one broken scenario must not lose the others
                print(f"  {sc.key}: FAILED: {e}")
                sc.results.setdefault("server", []).append({"error": str(e)})
    finally:
        runner.close()
    rows = evaluate(scs, bound)
    header = ["scenario", "figure", "chatproto", "baseline", "ratio", "target", "result"]
    table = markdown(rows, header)
    elapsed = time.monotonic() - t0
    meta = {"date": date, "host": host, "mode": "full" if args.full else "short",
            "elapsed_s": elapsed, "cores": len(os.sched_getaffinity(0)),
            "server_core": runner.server_core, "gen_core": runner.gen_core,
            "python": sys.version.split()[0], "argon2": bound}
    (outdir / "results.json").write_text(json.dumps({
        "meta": meta,
        "rows": [r.__dict__ for r in rows],
        "scenarios": {sc.key: {"title": sc.title, "params": sc.params, "rounds": sc.rounds,
                               "backend": sc.backend, "note": sc.note, "results": sc.results,
                               "discarded": sc.discarded} for sc in scs},
    }, indent=1, default=str))
    made = plots(scs, rows, outdir)
    notes = [f"- {r.scenario}: {r.note}" for r in rows if r.note] + machine_state(scs)
    md = (f"# chatproto benchmarks ({meta['mode']}, {date}, {host})\n\n"
          f"{meta['cores']} cores; server and relay pinned to core {runner.server_core}, "
          f"load generator to core {runner.gen_core}. Medians of the rounds.\n\n{table}\n"
          + ("\n" + "\n".join(notes) + "\n" if notes else "")
          + "".join(f"\n![{p}]({p})\n" for p in made))
    (outdir / "results.md").write_text(md)
    print()
    print(table)
    for n in notes:
        print(n)
    missed = sum(1 for r in rows if r.passed is False)
    print(f"\n{sum(1 for r in rows if r.passed)} PASS, {missed} MISS; {elapsed:.0f} s; "
          f"results in {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
