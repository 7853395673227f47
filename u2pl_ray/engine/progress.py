"""Progress from the workers to the driver, off the training path.

Rank 0 pushes small dicts to a `ProgressBoard` actor every few iterations (fire-and-forget: a
`ray.train.report` costs ~2 s, a push a millisecond). The driver drains the board, prints one line
(updated in place on a terminal, at most every `interval_s` otherwise), writes TensorBoard scalars,
and asks the workers to stop with a checkpoint on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import ray


@ray.remote(num_cpus=0)
class ProgressBoard:
    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._stop = False

    def push(self, values: dict[str, Any]) -> None:
        self._events.append(values)

    def drain(self) -> list[dict[str, Any]]:
        events, self._events = self._events, []
        return events

    def request_stop(self) -> None:
        self._stop = True

    def stop_requested(self) -> bool:
        return self._stop


def start_board() -> Any:
    """A ProgressBoard pinned to the caller's (the driver's) node: placed anywhere, it could land on a
    worker node, and losing that node would break the driver's progress loop."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ProgressBoard.options(scheduling_strategy=here).remote()  # type: ignore[attr-defined]


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class ProgressPrinter:
    """Turns board events into terminal lines and TensorBoard scalars."""

    def __init__(
        self,
        total_epochs: int,
        stream: TextIO | None = None,
        interval_s: float = 30.0,
        tensorboard_dir: Path | None = None,
        on_validation: Callable[[], None] | None = None,
    ):
        self.total_epochs = total_epochs
        self.stream = stream or sys.stdout  # looked up now: sys.stdout may have been swapped since import
        self.tty = self.stream.isatty()
        self.interval_s = 1.0 if self.tty else interval_s
        self.started = time.monotonic()
        self._last_line = 0.0
        self.latest: dict[str, Any] = {}
        self.last_miou: float | None = None
        self.writer = None
        self._last_report_step = -1
        self.on_validation = on_validation  # e.g. copy the TensorBoard files of an s3:// run to storage
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            tensorboard_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(tensorboard_dir))

    def handle(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            step = int(event.get("iteration", 0))
            if self.writer is not None:
                self._write_scalars(event, step)
            if event.get("kind") == "validation":
                self.last_miou = event.get("val/miou")
                self._emit(self._validation_line(event), force=True)
                if self.on_validation is not None:
                    if self.writer is not None:
                        self.writer.flush()
                    self.on_validation()
            else:
                self.latest = event
        if self.latest:
            self._emit(self._line(self.latest))

    def _write_scalars(self, event: dict[str, Any], step: int) -> None:
        assert self.writer is not None
        # A validation's training values are means over the whole validation period: at a step that a
        # progress report already wrote, they would overwrite its values with that longer average.
        validation = event.get("kind") == "validation"
        train_done = validation and step == self._last_report_step
        if not validation:
            self._last_report_step = step
        for key, value in event.items():
            if not isinstance(value, (int, float)) or key in ("iteration", "epoch", "max_iters"):
                continue
            if train_done and not (key.startswith("val/") or key.startswith("time/validation")):
                continue
            self.writer.add_scalar(key if "/" in key else f"train/{key}", value, step)

    def _line(self, e: dict[str, Any]) -> str:
        it, total = int(e.get("iteration", 0)), int(e.get("max_iters", 0)) or 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / it * (total - it) if it else float("nan")
        parts = [
            f"epoch {int(e.get('epoch', 0)) + 1}/{self.total_epochs}",
            f"it {it}/{total} ({100 * it / total:.1f}%)",
        ]
        if "total" in e:
            parts.append(f"loss {e['total']:.3f}")
        if "images_per_s" in e:
            parts.append(f"{e['images_per_s']:.1f} img/s")
        parts.append(f"ETA {format_duration(eta)}")
        if self.last_miou is not None:
            parts.append(f"mIoU {100 * self.last_miou:.2f}")
        return " | ".join(parts)

    @staticmethod
    def _validation_line(e: dict[str, Any]) -> str:
        scores = [
            f"{k.split('/')[1]} {100 * v:.2f}"
            for k, v in sorted(e.items())
            if k.startswith("val/") and k.endswith("/miou") and k.count("/") == 2
        ]
        best = e.get("best_miou", float("nan"))
        return f"validation at it {int(e.get('iteration', 0))}: mIoU " + ", ".join(scores) + f" (best {100 * best:.2f})"

    def _emit(self, line: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_line < self.interval_s:
            return
        self._last_line = now
        if self.tty and not force:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(("\r\033[K" if self.tty else "") + line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
        if self.writer is not None:
            self.writer.close()
