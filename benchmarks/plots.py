"""The benchmark's plots (matplotlib, the ``bench`` extra): throughput against the baselines,
the latency CDFs, the server's memory under the flood and the never-reading clients, and the
scaling on PostgreSQL + Redis. Each is written only when its scenarios ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report import MIB, Row, Scenario, write_bound

#: The bar charts of throughput.png: rows with these figures.
BAR_FIGURES = ("delivered msgs/s", "throughput", "deliveries/s", "server RSS per connection",
               "logins/s (baseline: Argon2id bound)")


def plots(scs: list[Scenario], rows: list[Row], outdir: Path) -> list[str]:
    """Write every plot that has data into ``outdir``; the file names written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots")
        return []
    made = []
    for name, draw in (("throughput.png", throughput), ("latency_cdf.png", latency_cdf),
                       ("memory.png", memory), ("scaling.png", scaling)):
        fig = draw(plt, scs, rows)
        if fig is not None:
            fig.tight_layout()
            fig.savefig(outdir / name, dpi=100)
            plt.close(fig)
            made.append(name)
    return made


def throughput(plt: Any, scs: list[Scenario], rows: list[Row]) -> Any:
    bars = [r for r in rows if r.value is not None and r.figure in BAR_FIGURES]
    if not bars:
        return None
    fig, axes = plt.subplots(1, len(bars), figsize=(3.2 * len(bars), 4), squeeze=False)
    for ax, r in zip(axes[0], bars, strict=True):
        labels = ["chatproto"] + (["baseline"] if r.baseline else [])
        values = [r.value] + ([r.baseline] if r.baseline else [])
        _bar_panel(ax, r, labels, values, ["tab:blue", "tab:gray"][: len(values)], r.figure)
    return fig


def _bar_panel(ax: Any, r: Row, labels: list[str], values: list[float], colors: list[str],
               figure: str) -> None:
    """One row as bars, titled with its scenario and ``figure``, its target and result below."""
    ax.bar(labels, values, color=colors)
    ax.set_title(f"{r.scenario}\n{figure}", fontsize=8)
    ax.set_ylabel(r.unit)
    ax.tick_params(labelsize=8)
    if r.passed is not None:
        ax.set_xlabel(r.target + (" PASS" if r.passed else " MISS"), fontsize=8)


def median_round(runs: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The round with the median ``key`` among those that have a CDF."""
    ok = [r for r in runs if r.get("cdf_ms") and isinstance(r.get(key), int | float)]
    if not ok:
        return None
    ok.sort(key=lambda r: r[key])
    return ok[len(ok) // 2]


def latency_cdf(plt: Any, scs: list[Scenario], rows: list[Row]) -> Any:
    curves = []
    for sc in scs:
        for target, runs in sc.results.items():
            if sc.key == "storm":
                for phase in ("idle", "storm"):
                    ok = [r[phase] for r in runs if phase in r and r[phase].get("cdf_ms")]
                    if ok:
                        curves.append((f"storm: chat during {phase}", ok[len(ok) // 2]["cdf_ms"]))
            elif sc.key.startswith("one") or sc.key == "flood":
                r = median_round(runs, "msgs_per_s")
                if r is not None:
                    label = "flood: the others" if sc.key == "flood" else f"{sc.key} {target}"
                    curves.append((label, r["cdf_ms"]))
            elif sc.key == "scaling" and (target.endswith("-one") or target in ("same",
                                                                               "cross")):
                r = median_round(runs, "msgs_per_s")
                if r is not None:
                    curves.append((f"scaling {target}", r["cdf_ms"]))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, cdf in curves:
        ys = [i / (len(cdf) - 1) for i in range(len(cdf))]
        ax.plot(cdf, ys, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("latency send -> Deliver at the recipient (ms, log)")
    ax.set_ylabel("fraction of messages")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def memory(plt: Any, scs: list[Scenario], rows: list[Row]) -> Any:
    """The server's RSS over time (median round) during the flood and the never-reading
    clients, against their targets."""
    panels = []
    for sc in scs:
        if sc.key not in ("flood", "neverread"):
            continue
        ok = sorted((x for x in sc.results.get("server", []) if x.get("rss_samples")
                     and isinstance(x.get("rss_growth_kib"), int | float)),
                    key=lambda x: x["rss_growth_kib"])
        if not ok:
            continue
        r = ok[len(ok) // 2]
        limit = 16 * MIB if sc.key == "flood" else write_bound(sc.server_args) * r["readers"]
        panels.append((sc, r, limit))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (sc, r, limit) in zip(axes[0], panels, strict=True):
        t = [s[0] for s in r["rss_samples"]]
        grown = [(s[1] - r["rss0_kib"]) / 1024 for s in r["rss_samples"]]
        ax.plot(t, grown, label="server RSS growth")
        ax.axhline(limit / MIB, color="red", linestyle=":",
                   label="target" if sc.key == "flood"
                   else f"configured bound x {r['readers']} connections")
        if isinstance(r.get("start_s"), int | float):
            ax.axvline(r["start_s"], color="gray", linestyle="--", linewidth=1,
                       label="flood starts" if sc.key == "flood" else "sending starts")
        ax.set_title(sc.title, fontsize=9)
        ax.set_xlabel("seconds since the start")
        ax.set_ylabel("MiB over the start")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def scaling(plt: Any, scs: list[Scenario], rows: list[Row]) -> Any:
    """Messages per server CPU-second and msgs/s, one worker against two; p99 same-node
    against cross-node."""
    mine = [r for r in rows if r.scenario.startswith("scaling") and r.value is not None]
    if not mine:
        return None
    fig, axes = plt.subplots(1, len(mine), figsize=(3.2 * len(mine), 4), squeeze=False)
    for ax, r in zip(axes[0], mine, strict=True):
        cross = "cross-node" in r.figure
        labels = ["same node", "cross node"] if cross else ["1 worker", "2 workers"]
        _bar_panel(ax, r, labels, [r.baseline or 0.0, r.value], ["tab:gray", "tab:blue"],
                   r.figure.split(" (")[0])
    return fig
