"""Following the README in the checkout leaves nothing untracked behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_run_writes_no_pid_file() -> None:
    """``make run`` starts twistd with ``--pidfile=`` (no ``twistd.pid`` in the checkout)."""
    recipe = subprocess.run(["make", "-n", "run"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30, check=True).stdout
    # (make -n also lists the venv recipe when the venv is out of date: pick the twistd call)
    line = next(x for x in recipe.splitlines() if "bin/twistd " in x)
    assert "--pidfile= " in line


def test_files_of_the_quick_start_and_examples_are_ignored() -> None:
    """What the quick start, the terminal client and the examples write into the checkout
    (database, key, downloads, received images, state files) is in .gitignore."""
    written = ["chatserver.db", "chatserver.key", "twistd.pid", "downloads/bob-1.png",
               "received/from-alice.png", "bot.state.json", "alice.outbox"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert sorted(result.stdout.split()) == sorted(written)
