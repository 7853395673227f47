"""What the per-worker loop needs from its surroundings, so that the loop itself does not import Ray.

`RaySession` (u2pl_ray.engine.ray_session) is the one inside Ray Train workers.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol


class Session(Protocol):
    rank: int
    world_size: int
    local_rank: int

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, checkpoint_name: str | None) -> None:
        """Publishes metrics (and a finished checkpoint directory) for this rank. A barrier."""

    def latest_checkpoint(self) -> AbstractContextManager[Path | None]:
        """A context-managed local directory of the newest usable checkpoint, or None."""

    def data_iterators(self) -> tuple[Any, Any]:
        """This rank's (labelled, unlabelled) stream shards."""

    def progress(self, values: dict[str, Any]) -> None:
        """Light, non-blocking progress for the driver (rank 0 only calls it)."""

    def stop_requested(self) -> bool:
        """True once the driver asked the run to stop with a checkpoint (Ctrl-C / SIGTERM)."""
