"""The benchmark's evaluation (benchmarks/report.py) on synthetic results: rows, targets,
PASS/MISS, the noisy-round rule. No process is started and nothing is timed."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.report import (
    HIGH_WATER,
    MIB,
    Row,
    Scenario,
    brief,
    evaluate,
    machine_state,
    markdown,
    med,
    noisiest,
    per_cpu_second,
    write_bound,
)
from chatproto.server.limits import LimitSettings


def direct(msgs: float, p99: float = 1.0, cpu_us: float = 50.0, load: float = 0.5
           ) -> dict[str, Any]:
    return {"msgs_per_s": msgs, "mb_per_s": msgs * 1e-4, "server_cpu_us_per_msg": cpu_us,
            "latency": {"p50_ms": p99 / 2, "p99_ms": p99}, "gen_cpu_pct": 40.0,
            "loadavg": [load, load, load]}


def sc(key: str, results: dict[str, list[dict[str, Any]]], **kw: Any) -> Scenario:
    return Scenario(key, key, "direct", kw.pop("params", {}), results=results, **kw)


def row(rows: list[Row], scenario: str, figure: str) -> Row:
    found = [r for r in rows if r.scenario == scenario and r.figure == figure]
    assert len(found) == 1, [(r.scenario, r.figure) for r in rows]
    return found[0]


class TestIssue11Targets:
    def test_pipelined_needs_half_of_the_relay(self) -> None:
        def verdict(ours: float) -> bool | None:
            rows = evaluate([sc("pipelined", {"server": [direct(ours)],
                                              "relay": [direct(10_000)]})], {})
            r = row(rows, "pipelined", "delivered msgs/s")
            assert r.target == ">= 50% of relay"
            assert r.baseline == 10_000
            return r.passed

        assert verdict(5_000) is True
        assert verdict(4_999) is False

    def test_one_in_flight_ratio_and_p99_against_the_relay_p99(self) -> None:
        results = {"server": [direct(6_500, p99=8.0)], "relay": [direct(10_000, p99=4.0)]}
        rows = evaluate([sc("one50", results)], {})
        tput = row(rows, "one in flight, 50 pairs", "delivered msgs/s")
        p99 = row(rows, "one in flight, 50 pairs", "p99 latency")
        assert (tput.target, tput.passed) == (">= 65% of relay", True)
        assert (p99.target, p99.passed, p99.value, p99.baseline) == ("<= 2x relay p99", True,
                                                                     8.0, 4.0)
        results["server"] = [direct(6_499, p99=8.1)]
        rows = evaluate([sc("one50", results)], {})
        assert row(rows, "one in flight, 50 pairs", "delivered msgs/s").passed is False
        assert row(rows, "one in flight, 50 pairs", "p99 latency").passed is False

    def test_one500_is_reported_without_a_target(self) -> None:
        rows = evaluate([sc("one500", {"server": [direct(1)], "relay": [direct(100)]})], {})
        assert all(r.target == "" and r.passed is None for r in rows)

    def test_images_fanout_and_idle(self) -> None:
        rows = evaluate([
            sc("images", {"server": [{"mb_per_s": 60.0}], "relay": [{"mb_per_s": 100.0}]}),
            sc("fanout", {"server": [{"deliveries_per_s": 99.0}],
                          "relay": [{"deliveries_per_s": 100.0}]}),
            sc("idle", {"server": [{"rss_per_conn_bytes": 6000.0}],
                        "relay": [{"rss_per_conn_bytes": 3000.0}]}),
        ], {})
        images = row(rows, "64 KiB images", "throughput")
        fanout = row(rows, "group fan-out, 100 members", "deliveries/s")
        idle = row(rows, "idle connections", "server RSS per connection")
        assert (images.target, images.passed) == (">= 60% of relay", True)
        assert (fanout.target, fanout.passed) == (">= 100% of relay", False)
        assert (idle.target, idle.passed) == ("<= 6 KB", True)
        rows = evaluate([sc("idle", {"server": [{"rss_per_conn_bytes": 6001.0}]})], {})
        assert row(rows, "idle connections", "server RSS per connection").passed is False

    def test_postgresql_needs_80_percent_of_sqlite_both_ways(self) -> None:
        rows = evaluate([
            sc("pipelined", {"server": [direct(1000)]}),
            sc("one50", {"server": [direct(500)]}),
            sc("pipelined-pg", {"server": [direct(800)]}),
            sc("one50-pg", {"server": [direct(399)]}),
        ], {})
        pipe = row(rows, "pipelined, PostgreSQL", "delivered msgs/s (baseline: SQLite)")
        one = row(rows, "one in flight, 50 pairs, PostgreSQL",
                  "delivered msgs/s (baseline: SQLite)")
        assert (pipe.target, pipe.passed, pipe.baseline) == (">= 80% of SQLite", True, 1000)
        assert (one.passed, one.baseline) == (False, 500)

    def test_prosody_without_storage_pipelined_and_one_in_flight(self) -> None:
        prosody = {"prosody": [direct(1000)], "prosody-mam": [direct(50)]}
        rows = evaluate([
            sc("pipelined", {"server": [direct(1000)]}),
            sc("one50", {"server": [direct(999)]}),
            sc("peer-pipelined", dict(prosody), targets=("prosody", "prosody-mam")),
            sc("peer-one50", dict(prosody), targets=("prosody", "prosody-mam")),
        ], {})
        bare = "msgs/s (baseline: Prosody, no storage)"
        assert row(rows, "pipelined vs Prosody", bare).passed is True
        assert row(rows, "one in flight, 50 pairs, vs Prosody", bare).passed is False
        mam = row(rows, "pipelined vs Prosody", "msgs/s (baseline: Prosody + mod_mam (SQLite))")
        assert (mam.baseline, mam.target, mam.passed) == (50, "", None)

    def test_relaxed_durability_is_reported_beside_full(self) -> None:
        rows = evaluate([
            sc("pipelined", {"server": [direct(1000, p99=30.0)]}),
            sc("pipelined-relaxed", {"server": [direct(1500, p99=20.0)]}),
            sc("one50", {"server": [direct(400)]}),
            sc("one50-relaxed", {"server": [direct(600)]}),
        ], {})
        pipe = row(rows, "pipelined, durability relaxed", "delivered msgs/s (baseline: full)")
        assert (pipe.value, pipe.baseline, pipe.passed) == (1500, 1000, None)
        lat = row(rows, "pipelined, durability relaxed", "p99 latency (baseline: full)")
        assert (lat.value, lat.baseline) == (20.0, 30.0)
        one = row(rows, "one in flight, 50 pairs, durability relaxed",
                  "delivered msgs/s (baseline: full)")
        assert (one.value, one.baseline) == (600, 400)

    def test_flood_memory_and_the_others_p99(self) -> None:
        def rows_for(growth_kib: float, p99: float) -> list[Row]:
            res = {"rss_growth_kib": growth_kib, "latency": {"p99_ms": p99},
                   "flood_msgs_per_s": 7000.0}
            return evaluate([sc("flood", {"server": [res]}, params={"chats": 100_000})], {})

        name = "flood of 100,000 Chats from one client"
        rows = rows_for(16 * 1024, 50.0)
        growth = row(rows, name, "server RSS growth")
        assert (growth.value, growth.unit, growth.target, growth.passed) == (16.0, "MiB",
                                                                             "<= 16 MiB", True)
        p99 = row(rows, name, "others' p99 latency during the flood")
        assert (p99.target, p99.passed) == ("<= 50 ms", True)
        rows = rows_for(16 * 1024 + 1, 50.1)
        assert row(rows, name, "server RSS growth").passed is False
        assert row(rows, name, "others' p99 latency during the flood").passed is False

    def test_never_reading_clients_against_the_configured_bound(self) -> None:
        figure = "server RSS growth per such connection (baseline: configured bound)"
        bound = HIGH_WATER + 2 * MIB
        args = ("--max-write-backlog", str(2 * MIB))
        for per_reader, passed in ((bound, True), (bound + 1, False)):
            rows = evaluate([sc("neverread", {"server": [
                {"rss_growth_per_reader_bytes": per_reader}]}, params={"readers": 8},
                server_args=args)], {})
            r = row(rows, "8 clients that never read", figure)
            assert r.passed is passed
            assert r.baseline == pytest.approx(bound / MIB)

    def test_a_missing_figure_is_neither_pass_nor_miss(self) -> None:
        rows = evaluate([
            sc("pipelined", {"server": [{"error": "boom"}], "relay": [direct(1000)]}),
            sc("flood", {"server": [{"error": "boom"}]}, params={"chats": 10}),
        ], {})
        assert rows and all(r.passed is None for r in rows)


class TestScaling:
    @staticmethod
    def scaling(one: float, two: float, same_p99: float, cross_p99: float) -> Scenario:
        def w(per_cpu: float) -> dict[str, Any]:
            return {"delivered": per_cpu * 2, "server_cpu_s": 2.0, "msgs_per_s": per_cpu,
                    "latency": {"p99_ms": 5.0}}

        return sc("scaling", {
            "workers1-pipelined": [w(one)], "workers2-pipelined": [w(two)],
            "workers1-one": [w(one)], "workers2-one": [w(two * 2)],
            "same": [{"latency": {"p99_ms": same_p99}}],
            "cross": [{"latency": {"p99_ms": cross_p99}}],
        }, targets=())

    def test_work_per_cpu_second_and_cross_node_p99(self) -> None:
        rows = evaluate([self.scaling(1000, 850, 10.0, 15.0)], {})
        pipe = row(rows, "scaling, pipelined, PostgreSQL + Redis",
                   "msgs per server CPU-s, 2 workers (baseline: 1 worker)")
        assert (pipe.value, pipe.baseline, pipe.target, pipe.passed) == (
            850, 1000, ">= 85% of 1 worker", True)
        cross = row(rows, "scaling, 2 nodes, one in flight, 50 pairs",
                    "cross-node p99 (baseline: same-node p99)")
        assert (cross.target, cross.passed) == ("<= 1.5x same-node", True)
        absolute = row(rows, "scaling, pipelined, PostgreSQL + Redis",
                       "delivered msgs/s, 2 workers (baseline: 1 worker)")
        assert (absolute.value, absolute.baseline, absolute.passed) == (850, 1000, None)

    def test_misses(self) -> None:
        rows = evaluate([self.scaling(1000, 849, 10.0, 15.1)], {})
        verdicts = {r.figure.split(",")[0] + r.scenario: r.passed for r in rows
                    if r.passed is not None}
        assert verdicts == {
            "msgs per server CPU-s" + "scaling, pipelined, PostgreSQL + Redis": False,
            "msgs per server CPU-s" + "scaling, one in flight, 50 pairs, PostgreSQL + Redis":
                True,
            "cross-node p99 (baseline: same-node p99)"
            + "scaling, 2 nodes, one in flight, 50 pairs": False,
        }

    def test_per_cpu_second_is_the_median_over_rounds_and_skips_errors(self) -> None:
        runs = [{"delivered": 100, "server_cpu_s": 1.0}, {"delivered": 300, "server_cpu_s": 1.0},
                {"delivered": 900, "server_cpu_s": 3.0}, {"error": "x"},
                {"delivered": 5, "server_cpu_s": 0.0}]
        assert per_cpu_second(runs) == 300.0
        assert per_cpu_second([{"error": "x"}]) is None


class TestNoise:
    def test_the_round_furthest_from_the_median(self) -> None:
        runs = [{"msgs_per_s": 100.0}, {"msgs_per_s": 130.0}, {"msgs_per_s": 98.0}]
        worst, dev = noisiest(runs, "msgs_per_s")
        assert worst == 1
        assert dev == pytest.approx(0.30)

    def test_an_error_round_counts_as_fully_off(self) -> None:
        runs = [{"msgs_per_s": 100.0}, {"error": "x"}, {"msgs_per_s": 98.0},
                {"msgs_per_s": 101.0}]
        assert noisiest(runs, "msgs_per_s") == (1, 1.0)

    def test_fewer_than_three_usable_rounds_are_never_judged(self) -> None:
        assert noisiest([{"msgs_per_s": 1.0}, {"msgs_per_s": 100.0}], "msgs_per_s") == (None,
                                                                                       0.0)


class TestHelpers:
    def test_med_follows_the_path_and_ignores_non_numbers(self) -> None:
        runs = [{"latency": {"p99_ms": 3.0}}, {"latency": {"p99_ms": 1.0}}, {"latency": {}},
                {"latency": {"p99_ms": float("nan")}}, {"error": "x"}]
        assert med(runs, "latency", "p99_ms") == 2.0
        assert med([{"ok": True}], "ok") is None

    def test_write_bound_defaults_and_overrides(self) -> None:
        assert write_bound(()) == HIGH_WATER + LimitSettings().max_write_backlog
        assert HIGH_WATER == 64 * 1024  # Twisted's FileDescriptor.bufferSize
        assert write_bound(("--max-write-backlog", "3000000")) == HIGH_WATER + 3_000_000
        assert write_bound(("--max-write-backlog=4000000",)) == HIGH_WATER + 4_000_000

    def test_markdown_table_and_cells(self) -> None:
        rows = [Row("pipelined", "delivered msgs/s", 5000.0, "msg/s", 10_000.0,
                    ">= 50% of relay", True), Row("x", "y", None, "ms")]
        text = markdown(rows, ["scenario", "figure", "chatproto", "baseline", "ratio",
                               "target", "result"])
        lines = text.splitlines()
        assert len(lines) == 4
        assert [c.strip() for c in lines[2].strip("|").split("|")] == [
            "pipelined", "delivered msgs/s", "5,000 msg/s", "10,000 msg/s", "50.0%",
            ">= 50% of relay", "PASS"]
        assert [c.strip() for c in lines[3].strip("|").split("|")] == [
            "x", "y", "-", "-", "", "", ""]

    def test_machine_state_lists_load_and_repeated_rounds(self) -> None:
        s = sc("pipelined", {"relay": [direct(1, load=0.5), direct(1, load=1.5)]})
        s.discarded = {"relay": [direct(9)]}
        assert machine_state([s]) == [
            "- pipelined: load average (1 min) before the rounds 0.50-1.50; 1 baseline "
            "round(s) repeated (> 20% off the others)"]

    def test_brief_lines_of_the_new_scenarios(self) -> None:
        flood = {"flood_acked": 30_000, "chats": 30_000, "flood_s": 4.0,
                 "rss_growth_kib": 2048, "latency": {"p99_ms": 12.5}}
        assert brief(sc("flood", {}), flood) == (
            "30,000 of 30,000 flood Chats answered in 4.0 s, RSS +2.0 MiB, others' p99 "
            "12.5 ms")
        deaf = {"rss_growth_kib": 1024, "readers": 4, "rss_growth_per_reader_bytes": MIB / 4,
                "sent": 12_000, "closed": 0}
        assert brief(sc("neverread", {}), deaf) == (
            "RSS +1.0 MiB for 4 never-reading clients (0.25 MiB each), 12,000 sent to them, "
            "0 closed")


def test_a_flooder_closed_by_the_server_is_noted() -> None:
    res = [{"rss_growth_kib": 10.0, "latency": {"p99_ms": 1.0}, "flooder_closed": True},
           {"rss_growth_kib": 12.0, "latency": {"p99_ms": 1.0}, "flooder_closed": False}]
    rows = evaluate([sc("flood", {"server": res}, params={"chats": 5})], {})
    growth = row(rows, "flood of 5 Chats from one client", "server RSS growth")
    assert growth.note == ("the server closed the flooder in 1 of 2 round(s) before it had "
                           "sent everything")
