"""Helpers shared by the relay, the load generator and the orchestrator (no Twisted here)."""

from __future__ import annotations

import hashlib
import os
import resource
import struct

#: The relay's plaintext preamble: connection index, group id (0 = direct pairing i <-> i^1).
RELAY_HELLO = struct.Struct(">IQ")

#: Clock ticks per second for /proc/PID/stat.
_TICKS = os.sysconf("SC_CLK_TCK")


def relay_keys(index: int) -> tuple[bytes, bytes, bytes, bytes]:
    """The fixed keys of relay connection ``index``: (c2s key, c2s iv, s2c key, s2c iv)."""
    seed = hashlib.sha512(b"chatproto-bench-relay" + index.to_bytes(4, "big")).digest()
    more = hashlib.sha256(seed).digest()
    return seed[:32], seed[32:44], more, seed[44:56]


def pin_to(core: int | None) -> list[int]:
    """Pin this process to ``core`` if it exists; the affinity set in effect afterwards."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        if core in available and len(available) > 1:
            os.sched_setaffinity(0, {core})
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def self_cpu() -> float:
    """CPU seconds (user + system) used by this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def proc_cpu(pid: int) -> float:
    """CPU seconds (utime + stime) of process ``pid`` from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def proc_rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]
