"""Profile the real server under one benchmark load with py-spy, and list the top entries.

``python -m benchmarks.profile_server --scenario pipelined --out DIR`` starts ``twistd
chatserver`` as the benchmark does (pinned to the server core, fresh database; ``--backend
postgres`` for a fresh PostgreSQL schema), runs the load generator, and meanwhile records the
server with ``py-spy record --gil --native`` (the thread holding the GIL, C frames included,
so the cyclic collector shows as ``gc_collect_main``). It writes the collapsed stacks to
``DIR/stacks.txt`` and the top self and inclusive entries to ``DIR/top.txt``. Needs py-spy
(``pip install py-spy``) and the ptrace permission (root, or ``ptrace_scope`` 0).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import run

#: Load shapes: the benchmark's, with a longer window so the profile has enough samples.
SHAPES: dict[str, dict[str, Any]] = {
    "pipelined": dict(pairs=50, window=100),
    "one50": dict(pairs=50, window=1),
    "images": dict(pairs=20, window=4, image_bytes=64 * 1024),
    # The same, every image different: each is written and fsynced (the benchmark's images
    # are one image sent again and again, which the content-addressed store writes once).
    "images-distinct": dict(pairs=20, window=4, image_bytes=64 * 1024, distinct_images=True),
}

_FRAME = re.compile(r"\s*\((?:/[^)]*/)?([^/)]*?)(?::\d+)?\)")


def top_entries(stacks: Path, count: int) -> str:
    """The ``count`` biggest self and inclusive entries of a py-spy raw profile, as text."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        samples = int(n)
        total += samples
        frames = [_FRAME.sub(r" (\1)", f) for f in stack.split(";")[1:]]
        if frames:
            own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{total} samples (py-spy --gil --native)", "", "self:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(count)]
    lines += ["", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(count)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SHAPES), default="pipelined")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(run.BIN / "py-spy")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runner = run.Runner(args, out)
    try:
        proc, port = runner.start_server(args.scenario, "fast", args.backend)
        params = dict(SHAPES[args.scenario], warmup=1.0, duration=args.seconds + 2.0)
        sc = run.Scenario(args.scenario, args.scenario, "direct", params, targets=("server",))
        result: dict[str, Any] = {}
        load = threading.Thread(
            target=lambda: result.update(runner.loadgen(sc, "server", port, proc.pid, 0)))
        load.start()
        time.sleep(1.5)  # past the sign-ins and the warm-up's start
        subprocess.run([pyspy, "record", "--gil", "--native", "-r", "250", "-d",
                        str(args.seconds), "-p", str(proc.pid), "--format", "raw",
                        "-o", str(out / "stacks.txt")], check=True, capture_output=True)
        load.join()
    finally:
        runner.close()
    summary = {k: result.get(k) for k in ("msgs_per_s", "mb_per_s", "server_cpu_us_per_msg",
                                          "server_cpu_pct", "loadavg", "error")}
    text = (f"# {args.scenario} on {args.backend}: {json.dumps(summary)}\n\n"
            + top_entries(out / "stacks.txt", args.top))
    (out / "top.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
