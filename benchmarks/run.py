"""Run the chatproto benchmarks against the baseline relay and print PASS/MISS per target.

``python -m benchmarks.run`` (``make bench``) is the short version: fewer rounds and shorter
windows, the 500-pair scenario skipped and 2,000 instead of 10,000 idle connections.
``python -m benchmarks.run --full`` (``make bench-full``) runs everything.

For each scenario it starts a fresh server (``twistd chatserver``: fresh SQLite database,
fresh identity) and a fresh baseline relay (``benchmarks/relay.py``), each pinned to core 0,
and runs ``benchmarks/loadgen.py`` pinned to core 1 (when there are two cores), once per
round. Figures are medians over the rounds; ratios compare with the relay measured in the same
run. The ``scaling`` scenario is benchmarks/scaling.py's (unpinned servers on PostgreSQL and
Redis). Rows, targets and PASS/MISS come from benchmarks/report.py, the plots from
benchmarks/plots.py. Results go to ``benchmarks/results/<date>-<host>/``: ``results.json``,
``results.md``, ``throughput.png``, ``latency_cdf.png``, ``memory.png``, ``scaling.png`` and
the processes' logs. Everything talks to 127.0.0.1 only; every process is killed at the end,
also on errors.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import scaling, xmpp_loadgen
from benchmarks.common import raise_nofile
from benchmarks.plots import plots
from benchmarks.report import (
    NOISE,
    Scenario,
    brief,
    evaluate,
    machine_state,
    markdown,
    noisiest,
)

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


#: Rounds of each placement in the scaling scenario, whatever the run's length.
PLACEMENT_ROUNDS = 3


def scenarios(full: bool) -> list[Scenario]:
    r = 5 if full else 3
    d, w = (5.0, 1.5) if full else (2.0, 1.0)
    flood_chats = 100_000 if full else 30_000
    readers = 8 if full else 4
    out = [
        Scenario("pipelined", "direct chat, pipelined (50 pairs x 100 in flight, 100 B)",
                 "direct", dict(pairs=50, window=100, warmup=w, duration=d), rounds=r),
        Scenario("one50", "direct chat, one in flight (50 pairs)", "direct",
                 dict(pairs=50, window=1, warmup=w, duration=d), rounds=r),
    ]
    # --durability relaxed beside FULL (the default), server only: reported beside FULL.
    rr = r if full else 1
    relaxed = ("--durability", "relaxed")
    out += [
        Scenario("pipelined-relaxed", "direct chat, pipelined, --durability relaxed", "direct",
                 dict(pairs=50, window=100, warmup=w, duration=d), targets=("server",),
                 server_args=relaxed, rounds=rr, note="" if full else "short run: 1 round"),
        Scenario("one50-relaxed", "direct chat, one in flight (50 pairs), --durability relaxed",
                 "direct", dict(pairs=50, window=1, warmup=w, duration=d),
                 targets=("server",), server_args=relaxed, rounds=rr,
                 note="" if full else "short run: 1 round"),
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
        Scenario("images", "64 KiB images, each different (20 pairs x 4 in flight)", "direct",
                 dict(pairs=20, window=4, warmup=w, duration=d, image_bytes=64 * 1024,
                      distinct_images=True),
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
        # Back-pressure (#11): memory and the other users' latency under one client's flood;
        # memory under clients that never read. Server only, loopback, bounded in count and
        # time (limit_s; the write-stall timeout is longer than the run: nobody is closed).
        Scenario("flood", f"flood of {flood_chats:,} Chats from one client, 10 pairs chatting "
                 "one in flight", "flood",
                 dict(chats=flood_chats, pairs=10, warmup=w, limit_s=120.0),
                 targets=("server",), rounds=3 if full else 1,
                 note="" if full else f"short run: {flood_chats:,} Chats instead of "
                 "100,000, 1 round"),
        Scenario("neverread", f"{readers} clients that never read, 2 senders each x 16 in "
                 "flight, 1,000 B", "neverread",
                 dict(readers=readers, senders=2, window=16, body_bytes=1000,
                      duration=10.0 if full else 4.0),
                 targets=("server",), rounds=3 if full else 1,
                 note="" if full else "short run: 4 s, 1 round"),
        # Scale-out (#12): one worker against two on PostgreSQL + Redis, same-node against
        # cross-node; run by benchmarks/scaling.py's functions (their own servers, unpinned).
        Scenario("scaling", "scaling on PostgreSQL + Redis: 1 worker vs 2, same vs cross node",
                 "scaling", dict(pairs=50, warmup=w, duration=d), targets=(),
                 backend="postgres", rounds=3 if full else 1,
                 note="" if full else "short run: 1 round of workers, 3 of each placement"),
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

    def start_server(self, key: str, hashing: str, backend: str = "sqlite",
                     extra: tuple[str, ...] = ()) -> tuple[Proc, int]:
        port = free_port()
        data = self.tmp / f"{key}-{port}"
        data.mkdir()
        database = f"sqlite:{data / 'chat.sqlite'}"
        if backend == "postgres":
            database = self.postgres_schema(f"bench_{key.replace('-', '_')}_{port}")
        argv = [str(TWISTD), "-n", "--pidfile=", "chatserver",
                "--listen", f"tcp:{port}:interface=127.0.0.1",
                "--database", database,
                "--identity", str(data / "identity.key"), *OPEN_LIMITS, *extra]
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
        if sc.loadgen == "scaling":
            self.run_scaling(sc)
            return
        for target in sc.targets:
            if target == "relay":
                proc, port = self.start_relay(sc.key)
            elif target.startswith("prosody"):
                proc, port = self.start_prosody(sc.key, archive=target == "prosody-mam")
            else:
                proc, port = self.start_server(sc.key, sc.hashing, sc.backend, sc.server_args)
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

    def run_scaling(self, sc: Scenario) -> None:
        """#12's scaling scenario through benchmarks/scaling.py: its servers (one worker, two
        workers, two nodes) on fresh PostgreSQL schemas and Redis key prefixes."""
        workdir = self.tmp / "scaling"
        workdir.mkdir()
        key = scaling.identity(workdir)

        def record(name: str, res: dict[str, Any], rnd: int, load: list[float]) -> None:
            res = {**res, "loadavg": load}
            sc.results.setdefault(name, []).append(res)
            print(f"  {sc.key:12} {name:18} round {rnd + 1} (load {load[0]:.2f}): "
                  f"{brief(sc, res)}", flush=True)

        p = sc.params
        for workers in (1, 2):
            scaling.scenario_workers(workdir, key, workers, p["duration"], warmup=p["warmup"],
                                     pairs=p["pairs"], rounds=sc.rounds, logdir=self.outdir,
                                     record=record)
        # At least three rounds of each placement, in turn: one round's p99 swings by a
        # third either way on this machine, more than the effect measured.
        scaling.scenario_placement(workdir, key, p["duration"], warmup=p["warmup"],
                                   pairs=p["pairs"], rounds=max(sc.rounds, PLACEMENT_ROUNDS),
                                   logdir=self.outdir, record=record)

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
        print("  short run: fewer rounds (3; drain, storm, flood, never-reading clients, "
              "scaling and relaxed durability 1) and 2 s windows; Prosody and the 500-pair "
              "scenario are skipped, 2,000 idle connections stand in for 10,000 and a flood of "
              "30,000 Chats for 100,000")
    runner = Runner(args, outdir)
    print(f"  server/relay on core {runner.server_core}, load generator on core "
          f"{runner.gen_core}; {len(os.sched_getaffinity(0))} cores")
    t0 = time.monotonic()
    bound: dict[str, Any] = {}
    durations: dict[str, float] = {}  # wall-clock seconds per scenario
    try:
        if any(sc.key == "storm" for sc in scs):
            bound = runner.argon2_bound()
            print(f"  Argon2id (m=19 MiB, t=2, p=1): {bound['per_core_hashes_per_s']:.1f} "
                  f"hashes/s per core x {bound['server_cores']} server core(s) = "
                  f"{bound['bound_logins_per_s']:.1f} logins/s bound")
        for sc in scs:
            print(f"- {sc.title}" + (f" [{sc.note}]" if sc.note else ""), flush=True)
            started = time.monotonic()
            try:
                runner.run_scenario(sc)
            except Exception as e:  # one broken scenario must not lose the others
                print(f"  {sc.key}: FAILED: {e}")
                sc.results.setdefault("server", []).append({"error": str(e)})
            durations[sc.key] = time.monotonic() - started
    finally:
        runner.close()
    rows = evaluate(scs, bound)
    header = ["scenario", "figure", "chatproto", "baseline", "ratio", "target", "result"]
    table = markdown(rows, header)
    elapsed = time.monotonic() - t0
    meta = {"date": date, "host": host, "mode": "full" if args.full else "short",
            "elapsed_s": elapsed, "cores": len(os.sched_getaffinity(0)),
            "server_core": runner.server_core, "gen_core": runner.gen_core,
            "python": sys.version.split()[0], "argon2": bound, "scenario_s": durations}
    (outdir / "results.json").write_text(json.dumps({
        "meta": meta,
        "rows": [r.__dict__ for r in rows],
        "scenarios": {sc.key: {"title": sc.title, "params": sc.params, "rounds": sc.rounds,
                               "backend": sc.backend, "server_args": sc.server_args,
                               "note": sc.note, "results": sc.results,
                               "discarded": sc.discarded} for sc in scs},
    }, indent=1, default=str))
    made = plots(scs, rows, outdir)
    notes = ([f"- {r.scenario}: {r.note}" for r in rows if r.note] + machine_state(scs)
             + [f"- {elapsed:.0f} s in all: " + ", ".join(f"{k} {v:.0f} s"
                                                         for k, v in durations.items())])
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
