"""A 20-second three-node soak (the full one is ``python -m tests.soak.cluster_soak``)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.postgres
def test_short_cluster_soak() -> None:
    """Six clients for 20 s over three nodes through proxies cutting connections every ~2 s,
    a random node SIGKILLed every 8 s (restarted after 1 s), Redis restarted at 10 s and,
    where a private PostgreSQL can run (its server binaries are installed), PostgreSQL
    crashed at 15 s and started again 1 s later (one send in flight per client then): no
    message lost, duplicated or out of order, and every send acknowledged."""
    from tests.scaleout.postgres import unavailable
    from tests.services import require_postgres

    require_postgres()
    postgres = unavailable() is None
    out = subprocess.run(
        [sys.executable, "-m", "tests.soak.cluster_soak", "--minutes", str(20 / 60),
         "--clients", "6", "--seed", "7",
         *(("--postgres-restart-at", "0.75", "--in-flight", "1") if postgres else ())],
        capture_output=True, text=True, timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lost=0 duplicated=0 out_of_order=0" in out.stdout
    assert "node_kills=2 redis_restarts=1" in out.stdout
    assert f"postgres_restarts={int(postgres)}" in out.stdout
