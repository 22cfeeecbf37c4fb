"""A 20-second soak run (the full one is ``python -m tests.soak.soak --minutes N``)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_short_soak() -> None:
    """Three clients for 20 s through a proxy cutting connections every ~1 s, the server
    SIGKILLed and restarted every 7 s: no message lost, duplicated or out of order, and every
    send acknowledged."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.soak.soak", "--minutes", str(20 / 60), "--clients", "3",
         "--database", "sqlite", "--drop-every", "1", "--restart-every", "7", "--seed", "7"],
        capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lost=0 duplicated=0 out_of_order=0" in out.stdout
