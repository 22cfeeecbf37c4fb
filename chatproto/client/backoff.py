"""Reconnection delays (:class:`Backoff`) and the session's state file, written so that a
crash never leaves a torn one (:func:`write_json_atomically`)."""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["Backoff", "write_json_atomically"]


class Backoff:
    """Exponential backoff with full jitter: the n-th delay (n = 0, 1, ...) is uniform in
    ``[0, min(maximum, initial * factor ** n)]``.

    Args:
        initial: The cap of the first delay, in seconds.
        maximum: The largest cap.
        factor: The growth of the cap per attempt.
        rng: The random source (tests pass a seeded ``random.Random``).
    """

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0,
                 rng: random.Random | None = None) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError("need 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.rng = rng if rng is not None else random.Random()  # noqa: S311 - not crypto
        self.attempt = 0

    def cap(self) -> float:
        """The upper bound of the next delay."""
        return min(self.maximum, self.initial * self.factor ** min(self.attempt, 64))

    def next_delay(self) -> float:
        """The next delay (and count the attempt)."""
        delay = self.rng.uniform(0, self.cap())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start again from ``initial`` (after a successful connection)."""
        self.attempt = 0


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to a temporary file in the same directory, fsync it, then rename it
    over ``path`` (readers see the old or the new file, never a torn one)."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
