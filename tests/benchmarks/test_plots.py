"""benchmarks/plots.py on synthetic results: each plot is written when its data exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.plots import plots
from benchmarks.report import Scenario, evaluate

pytest.importorskip("matplotlib")


def test_every_plot_is_written(tmp_path: Path) -> None:
    cdf = [float(i) for i in range(1, 201)]
    direct = {"msgs_per_s": 100.0, "latency": {"p99_ms": 5.0}, "cdf_ms": cdf,
              "delivered": 200, "server_cpu_s": 1.0}
    samples = [[0.0, 1000], [0.1, 1500], [0.2, 1200]]
    scs = [
        Scenario("one50", "one", "direct", {}, results={"server": [direct],
                                                        "relay": [direct]}),
        Scenario("flood", "flood", "flood", {"chats": 10}, targets=("server",), results={
            "server": [{**direct, "rss0_kib": 1000, "rss_growth_kib": 500,
                        "rss_samples": samples, "start_s": 0.1}]}),
        Scenario("neverread", "deaf", "neverread", {"readers": 2}, targets=("server",),
                 results={"server": [{"readers": 2, "rss0_kib": 1000, "rss_growth_kib": 500,
                                      "rss_growth_per_reader_bytes": 256000.0,
                                      "rss_samples": samples, "start_s": 0.1}]}),
        Scenario("scaling", "scaling", "scaling", {}, targets=(), results={
            name: [direct] for name in ("workers1-pipelined", "workers2-pipelined",
                                        "workers1-one", "workers2-one", "same", "cross")}),
    ]
    made = plots(scs, evaluate(scs, {}), tmp_path)
    assert made == ["throughput.png", "latency_cdf.png", "memory.png", "scaling.png"]
    for name in made:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_nothing_to_plot(tmp_path: Path) -> None:
    assert plots([], [], tmp_path) == []
    assert list(tmp_path.iterdir()) == []
