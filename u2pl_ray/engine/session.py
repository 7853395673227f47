"""What the per-worker loop needs from its surroundings, so that the loop itself does not import Ray.

`RaySession` (u2pl_ray.engine.ray_session) is the real one inside Ray Train workers; tests may run
the loop with `LocalSession` in one process.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol


class Session(Protocol):
    rank: int
    world_size: int
    local_rank: int

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, checkpoint_name: str | None) -> None:
        """Publishes metrics (and a finished checkpoint directory) for this rank. A barrier."""

    def latest_checkpoint(self) -> Iterator[Path | None]:
        """A context-managed local directory of the newest usable checkpoint, or None."""

    def data_iterators(self) -> tuple[Any, Any]:
        """This rank's (labelled, unlabelled) stream shards."""

    def progress(self, values: dict[str, Any]) -> None:
        """Light, non-blocking progress for the driver (rank 0 only calls it)."""

    def stop_requested(self) -> bool:
        """True once the driver asked the run to stop with a checkpoint (Ctrl-C / SIGTERM)."""


@dataclass
class LocalSession:
    """One process, no Ray: reports and checkpoints are kept in memory / a local folder."""

    labeled: Any = None
    unlabeled: Any = None
    checkpoint_root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="u2pl-ckpt-")))
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    reports: list[dict[str, Any]] = field(default_factory=list)
    progress_log: list[dict[str, Any]] = field(default_factory=list)
    resume_from: Path | None = None
    stop_after_progress: int | None = None

    def report(self, metrics, checkpoint_dir, checkpoint_name):
        self.reports.append(dict(metrics))
        if checkpoint_dir is not None:
            import shutil

            target = self.checkpoint_root / (checkpoint_name or f"checkpoint_{len(self.reports):06d}")
            shutil.copytree(checkpoint_dir, target, dirs_exist_ok=True)
            self.resume_from = target

    def latest_checkpoint(self):
        from contextlib import nullcontext

        return nullcontext(self.resume_from)

    def data_iterators(self):
        return self.labeled, self.unlabeled

    def progress(self, values):
        self.progress_log.append(dict(values))

    def stop_requested(self):
        return self.stop_after_progress is not None and len(self.progress_log) >= self.stop_after_progress
