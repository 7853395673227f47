"""Running means of per-step metrics, kept over two spans at once: since the last validation or
checkpoint (`summary`, what a checkpoint's metrics and the history hold) and since the last progress
report (`recent`, what the driver prints and TensorBoard plots, so a curve shows each report's own steps)."""

from __future__ import annotations

import time
from collections import defaultdict


class _Span:
    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.images = 0
        self.started = time.perf_counter()

    def means(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums if self.counts[k]}
        out["images_per_s"] = self.images / max(time.perf_counter() - self.started, 1e-9)
        return out


class MetricsWindow:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Starts a new period (after a validation); counters in `totals` restart too."""
        self.period = _Span()
        self.latest = _Span()
        self.totals: dict[str, float] = defaultdict(float)

    def add(self, metrics: dict[str, float], images: int = 0) -> None:
        for span in (self.period, self.latest):
            for key, value in metrics.items():
                span.sums[key] += value
                span.counts[key] += 1
            span.images += images

    def add_time(self, key: str, seconds: float) -> None:
        self.add({key: seconds})

    def add_count(self, key: str, n: int) -> None:
        self.totals[key] += n

    def summary(self) -> dict[str, float]:
        """Means since the period began, and the counters."""
        return {**self.period.means(), **self.totals}

    def recent(self) -> dict[str, float]:
        """Means since the previous call (or the period's start), and the counters; starts a new span."""
        out = {**self.latest.means(), **self.totals}
        self.latest = _Span()
        return out
