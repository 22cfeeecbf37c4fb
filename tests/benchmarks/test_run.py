"""benchmarks/run.py without load: the scenario lists and the repetition of noisy baseline
rounds (the rounds are synthetic; no process is started)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import run
from benchmarks.report import Scenario


class ScriptedRunner(run.Runner):
    """A Runner whose rounds return the next of ``figures`` instead of running a generator."""

    def __init__(self, outdir: Path, figures: list[float]) -> None:
        super().__init__(argparse.Namespace(), outdir)
        self.figures = iter(figures)
        self.asked: list[int] = []

    def round(self, sc: Scenario, target: str, port: int, pid: int, rnd: int
              ) -> dict[str, Any]:
        self.asked.append(rnd)
        return {"msgs_per_s": next(self.figures), "loadavg": [0.0, 0.0, 0.0]}


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[ScriptedRunner]:
    r = ScriptedRunner(tmp_path, [])
    yield r
    r.close()


def rounds(*figures: float) -> list[dict[str, Any]]:
    return [{"msgs_per_s": f} for f in figures]


def test_a_noisy_baseline_round_is_run_again_and_kept_aside(runner: ScriptedRunner) -> None:
    sc = Scenario("pipelined", "p", "direct", {}, rounds=3)
    runs = rounds(100.0, 60.0, 104.0)
    runner.figures = iter([99.0])
    runner.repeat_noisy(sc, "relay", 0, 0, runs)
    assert runner.asked == [1]
    assert [r["msgs_per_s"] for r in runs] == [100.0, 99.0, 104.0]
    assert sc.discarded == {"relay": [{"msgs_per_s": 60.0}]}


def test_rounds_within_the_noise_are_kept(runner: ScriptedRunner) -> None:
    sc = Scenario("pipelined", "p", "direct", {}, rounds=3)
    runs = rounds(100.0, 81.0, 119.0)
    runner.repeat_noisy(sc, "relay", 0, 0, runs)
    assert runner.asked == []
    assert sc.discarded == {}


def test_repeats_are_bounded_by_the_rounds(runner: ScriptedRunner) -> None:
    sc = Scenario("pipelined", "p", "direct", {}, rounds=3)
    runs = rounds(100.0, 10.0, 100.0)
    runner.figures = iter([10.0, 1000.0, 10.0, 5.0])
    runner.repeat_noisy(sc, "relay", 0, 0, runs)
    assert len(runner.asked) == 3
    assert len(sc.discarded["relay"]) == 3


def test_the_noise_figure_of_images_and_fanout() -> None:
    assert Scenario("images", "", "direct", {}).figure == "mb_per_s"
    assert Scenario("fanout", "", "fanout", {}).figure == "deliveries_per_s"
    assert Scenario("one50", "", "direct", {}).figure == "msgs_per_s"


def test_short_and_full_scenarios() -> None:
    short = {sc.key: sc for sc in run.scenarios(full=False)}
    full = {sc.key: sc for sc in run.scenarios(full=True)}
    assert set(full) - set(short) == {"peer-pipelined", "peer-one50", "one500"}
    for scs in (short, full):
        for key in ("pipelined-relaxed", "one50-relaxed"):
            assert scs[key].server_args == ("--durability", "relaxed")
            assert scs[key].targets == ("server",)
        assert scs["scaling"].loadgen == "scaling"
        assert scs["flood"].targets == scs["neverread"].targets == ("server",)
    assert full["flood"].params["chats"] == 100_000
    assert short["flood"].params["chats"] < 100_000
    assert short["flood"].note and not full["flood"].note
    assert full["pipelined"].server_args == ()
