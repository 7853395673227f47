"""Running means of per-step metrics between two reports, and counters."""

from __future__ import annotations

import time
from collections import defaultdict


class MetricsWindow:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.totals: dict[str, float] = defaultdict(float)
        self.images = 0
        self.started = time.perf_counter()

    def add(self, metrics: dict[str, float], images: int = 0) -> None:
        for key, value in metrics.items():
            self.sums[key] += value
            self.counts[key] += 1
        self.images += images

    def add_time(self, key: str, seconds: float) -> None:
        self.add({key: seconds})

    def add_count(self, key: str, n: int) -> None:
        self.totals[key] += n

    def peek(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k]}
        out.update(self.totals)
        return out

    def summary(self) -> dict[str, float]:
        out = self.peek()
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        out["images_per_s"] = self.images / elapsed
        return out
