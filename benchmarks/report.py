"""The benchmark's evaluation: the rows of the results table, their targets and PASS/MISS.

Pure functions over the rounds' raw results (no processes, no load), so they are tested with
synthetic results (tests/benchmarks/). ``benchmarks.run`` measures; this module judges.

A scenario's results are ``{target: [round, ...]}``, a round being the load generator's
``RESULT`` dictionary; figures are medians over the rounds; a ratio compares two figures of the
same run.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.abstract import FileDescriptor

from chatproto.server.limits import LimitSettings

#: A baseline round deviating by more than this from the other rounds' median is repeated.
NOISE = 0.20

#: Twisted's write-buffer high-water mark (64 KiB): the server stops pushing live deliveries
#: to a connection whose send buffer holds more than this.
HIGH_WATER = FileDescriptor.bufferSize
#: The server's default ``--max-write-backlog`` (16 MiB).
DEFAULT_WRITE_BACKLOG = LimitSettings().max_write_backlog

MIB = 1024 * 1024


@dataclass
class Scenario:
    key: str
    title: str
    loadgen: str
    params: dict[str, Any]
    targets: tuple[str, ...] = ("server", "relay")
    hashing: str = "fast"  # or "argon2": the server keeps OWASP's Argon2id cost
    backend: str = "sqlite"  # or "postgres": a fresh schema in the local test database
    #: Extra options of ``twistd chatserver`` (e.g. ``--durability relaxed``).
    server_args: tuple[str, ...] = ()
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


def write_bound(server_args: Sequence[str]) -> int:
    """The configured bound of what the server holds for a connection that never reads:
    the high-water mark plus ``--max-write-backlog`` (its default unless given)."""
    backlog = DEFAULT_WRITE_BACKLOG
    args = list(server_args)
    for i, a in enumerate(args):
        if a == "--max-write-backlog" and i + 1 < len(args):
            backlog = int(args[i + 1])
        elif a.startswith("--max-write-backlog="):
            backlog = int(a.split("=", 1)[1])
    return HIGH_WATER + backlog


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


def med(runs: Sequence[Mapping[str, Any]], *path: str) -> float | None:
    """The median over ``runs`` of the number at ``path`` (None if no round has one)."""
    values = []
    for r in runs:
        v: Any = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v:
            values.append(float(v))
    return statistics.median(values) if values else None


def per_cpu_second(runs: Sequence[Mapping[str, Any]]) -> float | None:
    """Median over the rounds of delivered messages per CPU-second of the server processes."""
    values = [r["delivered"] / r["server_cpu_s"] for r in runs
              if isinstance(r.get("delivered"), int | float) and r.get("server_cpu_s")]
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


def at_least(v: float | None, b: float | None, ratio: float) -> bool | None:
    """v >= ratio x b; None when either figure is missing."""
    return None if v is None or not b else v >= ratio * b


def at_most(v: float | None, b: float | None, ratio: float) -> bool | None:
    """v <= ratio x b; None when either figure is missing."""
    return None if v is None or not b else v <= ratio * b


def evaluate(scs: list[Scenario], bound: Mapping[str, Any]) -> list[Row]:
    """The table: one row per figure, with its baseline, target and PASS/MISS. ``bound`` is
    the Argon2id bound of the login storm (``bound_logins_per_s``)."""
    rows: list[Row] = []
    by = {sc.key: sc for sc in scs}

    def runs(key: str, target: str = "server") -> list[dict[str, Any]]:
        sc = by.get(key)
        return sc.results.get(target, []) if sc is not None else []

    def pair(key: str, *path: str) -> tuple[float | None, float | None]:
        return med(runs(key), *path), med(runs(key, "relay"), *path)

    def ratio_row(key: str, name: str, figure: str, unit: str, path: tuple[str, ...],
                  min_ratio: float | None) -> None:
        if key not in by:
            return
        v, b = pair(key, *path)
        target = f">= {min_ratio:.0%} of relay" if min_ratio is not None else ""
        ok = at_least(v, b, min_ratio) if min_ratio is not None else None
        rows.append(Row(name, figure, v, unit, b, target, ok))

    ratio_row("pipelined", "pipelined", "delivered msgs/s", "msg/s", ("msgs_per_s",), 0.50)
    ratio_row("pipelined", "pipelined", "server CPU per msg", "us", ("server_cpu_us_per_msg",),
              None)
    for key, name in (("one50", "one in flight, 50 pairs"),
                      ("one500", "one in flight, 500 pairs")):
        ratio_row(key, name, "delivered msgs/s", "msg/s", ("msgs_per_s",),
                  0.65 if key == "one50" else None)
        ratio_row(key, name, "p50 latency", "ms", ("latency", "p50_ms"), None)
        if key in by:
            v, b = pair(key, "latency", "p99_ms")
            limited = key == "one50"
            rows.append(Row(name, "p99 latency", v, "ms", b,
                            "<= 2x relay p99" if limited else "",
                            at_most(v, b, 2.0) if limited else None))
    durability_rows(rows, by)
    for key, base, name in (("pipelined-pg", "pipelined", "pipelined, PostgreSQL"),
                            ("one50-pg", "one50", "one in flight, 50 pairs, PostgreSQL")):
        if key in by and base in by:
            v, b = med(runs(key), "msgs_per_s"), med(runs(base), "msgs_per_s")
            rows.append(Row(name, "delivered msgs/s (baseline: SQLite)", v, "msg/s", b,
                            ">= 80% of SQLite", at_least(v, b, 0.8)))
            v, b = med(runs(key), "latency", "p99_ms"), med(runs(base), "latency", "p99_ms")
            rows.append(Row(name, "p99 latency (baseline: SQLite)", v, "ms", b))
    peer_rows(rows, by)
    if "images" in by:
        v, b = pair("images", "mb_per_s")
        rows.append(Row("64 KiB images", "throughput", v, "MB/s", b, ">= 60% of relay",
                        at_least(v, b, 0.60)))
    if "fanout" in by:
        v, b = pair("fanout", "deliveries_per_s")
        rows.append(Row("group fan-out, 100 members", "deliveries/s", v, "/s", b,
                        ">= 100% of relay", at_least(v, b, 1.0)))
    if "drain" in by:
        v = med(runs("drain"), "drain_s")
        rows.append(Row("offline drain", "Sync -> SyncDone, 10,000 msgs", v, "s", None,
                        "<= 0.5 s", None if v is None else v <= 0.5))
    if "idle" in by:
        v, b = pair("idle", "rss_per_conn_bytes")
        rows.append(Row("idle connections", "server RSS per connection", v, "B", b,
                        "<= 6 KB", None if v is None else v <= 6000, by["idle"].note))
    memory_rows(rows, by)
    if "storm" in by:
        storm_rows(rows, runs("storm"), bound)
    scaling_rows(rows, by)
    return rows


def durability_rows(rows: list[Row], by: Mapping[str, Scenario]) -> None:
    """``--durability relaxed`` beside FULL (the default), same run: reported, no target."""
    for key, base, name in (("pipelined-relaxed", "pipelined", "pipelined, durability relaxed"),
                            ("one50-relaxed", "one50",
                             "one in flight, 50 pairs, durability relaxed")):
        if key not in by or base not in by:
            continue
        ours, full = by[key].results.get("server", []), by[base].results.get("server", [])
        rows.append(Row(name, "delivered msgs/s (baseline: full)", med(ours, "msgs_per_s"),
                        "msg/s", med(full, "msgs_per_s"), note=by[key].note))
        rows.append(Row(name, "p99 latency (baseline: full)", med(ours, "latency", "p99_ms"),
                        "ms", med(full, "latency", "p99_ms")))


def peer_rows(rows: list[Row], by: Mapping[str, Scenario]) -> None:
    """Our SQLite server (durable) beside Prosody without storage (target >= 1x) and with
    mod_mam (reported)."""
    for key, ours, name in (("peer-pipelined", "pipelined", "pipelined vs Prosody"),
                            ("peer-one50", "one50", "one in flight, 50 pairs, vs Prosody")):
        if key not in by or ours not in by:
            continue
        mine = by[ours].results.get("server", [])
        v, cpu = med(mine, "msgs_per_s"), med(mine, "server_cpu_us_per_msg")
        peer = by[key].results
        for target, label in (("prosody", "Prosody, no storage"),
                              ("prosody-mam", "Prosody + mod_mam (SQLite)")):
            b = med(peer.get(target, []), "msgs_per_s")
            bcpu = med(peer.get(target, []), "server_cpu_us_per_msg")
            first = target == "prosody"
            rows.append(Row(name, f"msgs/s (baseline: {label})", v, "msg/s", b,
                            ">= 1x" if first else "", at_least(v, b, 1.0) if first else None))
            rows.append(Row(name, f"server CPU per msg (baseline: {label})", cpu, "us", bcpu))


def memory_rows(rows: list[Row], by: Mapping[str, Scenario]) -> None:
    """The flood (RSS growth, the other users' p99) and the never-reading clients (RSS growth
    per such connection against the configured bound)."""
    if "flood" in by:
        sc = by["flood"]
        res = sc.results.get("server", [])
        chats = sc.params.get("chats", 0)
        name = f"flood of {chats:,} Chats from one client"
        growth = med(res, "rss_growth_kib")
        cut = [r for r in res if r.get("flooder_closed")]
        note = "; ".join(filter(None, [sc.note, f"the server closed the flooder in {len(cut)} "
                                       f"of {len(res)} round(s) before it had sent everything"
                                       if cut else ""]))
        rows.append(Row(name, "server RSS growth", None if growth is None else growth / 1024,
                        "MiB", None, "<= 16 MiB",
                        None if growth is None else growth <= 16 * 1024, note))
        p99 = med(res, "latency", "p99_ms")
        rows.append(Row(name, "others' p99 latency during the flood", p99, "ms", None,
                        "<= 50 ms", None if p99 is None else p99 <= 50.0))
        rows.append(Row(name, "flood stored (msgs/s)", med(res, "flood_msgs_per_s"), "msg/s"))
    if "neverread" in by:
        sc = by["neverread"]
        res = sc.results.get("server", [])
        limit = write_bound(sc.server_args)
        readers = sc.params.get("readers", 0)
        v = med(res, "rss_growth_per_reader_bytes")
        rows.append(Row(f"{readers} clients that never read", "server RSS growth per such "
                        "connection (baseline: configured bound)", None if v is None
                        else v / MIB, "MiB", limit / MIB, "<= the configured bound",
                        None if v is None else v <= limit, sc.note))


def storm_rows(rows: list[Row], res: list[dict[str, Any]], bound: Mapping[str, Any]) -> None:
    bnd = bound.get("bound_logins_per_s")
    v = med(res, "logins_per_s_alone")
    rows.append(Row("login storm", "logins/s (baseline: Argon2id bound)", v, "/s", bnd,
                    ">= 80% of bound", at_least(v, bnd, 0.8)))
    rows.append(Row("login storm", "logins/s while 10 pairs chat", med(res, "logins_per_s"),
                    "/s", bnd))
    idle, storm = med(res, "idle_p99_ms"), med(res, "storm_p99_ms")
    rows.append(Row("login storm", "chat p99 during storm (baseline: idle p99)", storm,
                    "ms", idle, "<= 2x idle", at_most(storm, idle, 2.0)))


def scaling_rows(rows: list[Row], by: Mapping[str, Scenario]) -> None:
    """#12's scaling on PostgreSQL + Redis: work per server CPU-second with two workers against
    one (target >= 0.85), cross-node against same-node p99 (<= 1.5x), absolute msgs/s."""
    if "scaling" not in by:
        return
    res = by["scaling"].results
    for mode, label in (("pipelined", "pipelined"), ("one", "one in flight, 50 pairs")):
        one, two = res.get(f"workers1-{mode}", []), res.get(f"workers2-{mode}", [])
        name = f"scaling, {label}, PostgreSQL + Redis"
        v, b = per_cpu_second(two), per_cpu_second(one)
        rows.append(Row(name, "msgs per server CPU-s, 2 workers (baseline: 1 worker)", v,
                        "msg/CPU-s", b, ">= 85% of 1 worker", at_least(v, b, 0.85),
                        by["scaling"].note if mode == "pipelined" else ""))
        rows.append(Row(name, "delivered msgs/s, 2 workers (baseline: 1 worker)",
                        med(two, "msgs_per_s"), "msg/s", med(one, "msgs_per_s")))
    v, b = med(res.get("cross", []), "latency", "p99_ms"), med(res.get("same", []), "latency",
                                                                "p99_ms")
    rows.append(Row("scaling, 2 nodes, one in flight, 50 pairs", "cross-node p99 (baseline: "
                    "same-node p99)", v, "ms", b, "<= 1.5x same-node", at_most(v, b, 1.5)))


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


def brief(sc: Scenario, res: dict[str, Any]) -> str:
    """One line per round for the console."""
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
    if sc.key == "flood":
        return (f"{res['flood_acked']:,} of {res['chats']:,} flood Chats answered in "
                f"{res['flood_s']:.1f} s, RSS +{res['rss_growth_kib'] / 1024:.1f} MiB, others' "
                f"p99 {res['latency']['p99_ms']:.1f} ms"
                + (" (the server closed the flooder)" if res.get("flooder_closed") else "")
                + errs)
    if sc.key == "neverread":
        return (f"RSS +{res['rss_growth_kib'] / 1024:.1f} MiB for {res['readers']} never-"
                f"reading clients ({res['rss_growth_per_reader_bytes'] / MIB:.2f} MiB each), "
                f"{res['sent']:,} sent to them, {res['closed']} closed{errs}")
    lat = res.get("latency", {})
    return (f"{res['msgs_per_s']:.0f} msgs/s {res['mb_per_s']:.1f} MB/s p50 "
            f"{lat.get('p50_ms', 0):.2f} ms p99 {lat.get('p99_ms', 0):.2f} ms, "
            f"gen CPU {res['gen_cpu_pct']:.0f}% server CPU {res.get('server_cpu_pct', 0):.0f}%"
            f"{errs}")
