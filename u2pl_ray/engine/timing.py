"""Where a training step's time goes: named phases timed around the U2PL step's own phase hooks.

On the CPU the wall clock is exact. On a GPU, kernels run asynchronously, so phases are only timed
when asked (`step_timing: on`), at the price of a device synchronisation around each phase.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import torch

# How the U2PL step's phases add up to the figures of a report.
FORWARD = ("student_forward", "teacher_forward", "teacher_pseudo_label", "partner_pseudo_label")
U2PL_EXTRA = ("strong_aug", "entropy_thresholds", "unsup_loss", "contrastive")


class PhaseTimer:
    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = enabled
        self._sync: Callable[[], None] = (
            (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        )
        self.totals: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.totals[name] += time.perf_counter() - start

    def wrap(self, name: str, fn: Callable) -> Callable:
        """`fn` timed as phase `name` (the memory bank's all-gather)."""

        def timed(*args, **kwargs):
            with self(name):
                return fn(*args, **kwargs)

        return timed

    def pop(self) -> dict[str, float]:
        """This step's breakdown in seconds: forward, u2pl_extra (without the all-gather), allgather,
        backward (with the optimiser step), ema; then the counters start again."""
        t, self.totals = self.totals, defaultdict(float)
        if not self.enabled:
            return {}
        gather = t.get("allgather", 0.0)
        return {
            "time/forward_s": sum(t.get(k, 0.0) for k in FORWARD),
            "time/u2pl_extra_s": max(sum(t.get(k, 0.0) for k in U2PL_EXTRA) - gather, 0.0),
            "time/allgather_s": gather,
            "time/contrastive_s": max(t.get("contrastive", 0.0) - gather, 0.0),  # without its all-gather
            "time/sup_loss_s": t.get("sup_loss", 0.0),
            "time/backward_s": t.get("backward", 0.0),
            "time/ema_s": t.get("ema", 0.0),
        }


def timing_enabled(setting: str, device: torch.device) -> bool:
    return setting == "on" or (setting == "auto" and device.type != "cuda")
