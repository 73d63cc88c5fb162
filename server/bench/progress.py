"""A small progress bar for long CLI work (stderr, redrawn in place)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int, width: int = 30) -> None:
        self.label, self.total, self.width = label, max(total, 1), width
        self.done, self.started, self._drawn = 0, time.perf_counter(), 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._drawn > 0.2 or self.done >= self.total:
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        share = min(self.done / self.total, 1.0)
        bar = "#" * int(share * self.width)
        rate = self.done / max(now - self.started, 1e-9)
        sys.stderr.write(f"\r{self.label:<22} [{bar:<{self.width}}] {share:6.1%} {self.done:>9,}/{self.total:,} "
                         f"{rate:,.0f}/s")
        sys.stderr.flush()

    def close(self) -> None:
        self._draw(time.perf_counter())
        sys.stderr.write("\n")
        sys.stderr.flush()
