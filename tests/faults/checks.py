"""Checking conversations for loss, duplication and order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatproto.client import ConnectionLost, ServerError
from chatproto.wire import messages as m


@dataclass
class Tally:
    """Counts of problems found (all zero when delivery was exactly once and in order)."""

    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    details: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.out_of_order == 0

    def line(self) -> str:
        return f"lost={self.lost} duplicated={self.duplicated} out_of_order={self.out_of_order}"

    def check(self, what: str, got: list[int], expected: list[int]) -> None:
        """``got``: message numbers as received, in order; ``expected``: all numbers sent."""
        seen: set[int] = set()
        last = -1
        for n in got:
            if n in seen:
                self.duplicated += 1
                self.details.append(f"{what}: {n} twice")
                continue
            seen.add(n)
            if n < last:
                self.out_of_order += 1
                self.details.append(f"{what}: {n} after {last}")
            last = max(last, n)
        missing = sorted(set(expected) - seen)
        if missing:
            self.lost += len(missing)
            more = "..." if len(missing) > 10 else ""
            self.details.append(f"{what}: missing {missing[:10]}{more}")


async def full_history(session: Any, peer: str | int) -> list[m.HistoryEntry]:
    """Every entry of a conversation, oldest first."""
    await session.wait_connected()
    entries: list[m.HistoryEntry] = []
    before = 0
    failures = 0
    while True:
        try:
            page = await session.history(peer, before, 100)
        except ConnectionLost:
            await session.wait_connected()
            continue
        except ServerError as e:  # a transient server failure: history is safe to repeat
            failures += 1
            if e.code < 500 or failures > 5:
                raise
            continue
        entries.extend(page.entries)
        if not page.has_more or not page.entries:
            break
        before = min(e.conv_seq for e in page.entries)
    entries.reverse()
    return entries
