"""The Ray edge of the per-worker loop: `train_loop_per_worker` and the `RaySession` it runs with."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import Checkpoint, CheckpointUploadMode

from u2pl_ray.config import build_config
from u2pl_ray.engine.checkpoint import CheckpointError, checkpoint_dirs, upload_files, verify_checkpoint
from u2pl_ray.engine.collectives import barrier
from u2pl_ray.engine.tracking import Tracker

log = logging.getLogger(__name__)


def resume_candidates(latest: Checkpoint | None, fs: Any, folder: str | None) -> list[Checkpoint]:
    """Every checkpoint to try, newest first: the run folder's (on `fs`) and Ray's latest, by name (names
    carry the iteration). Ray's checkpoint list is saved after each checkpoint, so it may lag behind a
    sealed newer one (a lost store, a killed driver): the folder, not the list, says what is newest."""
    paths: dict[str, Checkpoint] = {}
    if latest is not None:
        paths[latest.path.rstrip("/")] = latest
        if folder is None:
            fs, folder = latest.filesystem, latest.path.rstrip("/").rsplit("/", 1)[0]
    if folder is not None:
        try:
            for path in checkpoint_dirs(fs, folder):
                paths.setdefault(path.rstrip("/"), Checkpoint(path, filesystem=fs))
        except OSError as exc:
            log.warning("cannot list %s for checkpoints: %s", folder, exc)
    return [paths[p] for p in sorted(paths, key=lambda p: p.rsplit("/", 1)[-1], reverse=True)]


@contextlib.contextmanager
def _local_copy(checkpoint: Checkpoint, rank: int) -> Iterator[str]:
    """The checkpoint as a local folder this rank alone reads. Ray's `as_directory` shares one download
    folder between the ranks of a node and may delete or refill it while another rank still loads."""
    from pyarrow.fs import LocalFileSystem

    if isinstance(checkpoint.filesystem, LocalFileSystem):
        yield checkpoint.path
        return
    with tempfile.TemporaryDirectory(prefix=f"u2pl-resume-rank{rank}-") as tmp:
        yield checkpoint.to_directory(tmp)


class RaySession:
    def __init__(self, board: Any = None, run_uri: str | None = None, tracker: Tracker | None = None):
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()
        self.board = board
        self.run_uri = run_uri
        self.tracker = tracker  # rank 0's MLflow / W&B logging, when configured

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None, checkpoint_name: str | None) -> None:
        if checkpoint_dir is None:
            ray.train.report(metrics)
            return
        # Uploaded here rather than by Ray, which copies each rank's folder in listing order and in parallel
        # with the other ranks: meta.json must land after every rank's files, or it seals nothing.
        storage = ray.train.get_context().get_storage()
        fs = storage.storage_filesystem
        dest = storage.build_checkpoint_path_from_name(checkpoint_name)
        upload_files(checkpoint_dir, fs, dest, meta=False)
        barrier()
        checkpoint = None
        if self.rank == 0:
            upload_files(checkpoint_dir, fs, dest, meta=True)
            checkpoint = Checkpoint(dest, filesystem=fs)
        ray.train.report(
            metrics,
            checkpoint=checkpoint,
            checkpoint_dir_name=checkpoint_name,
            checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD,
        )
        if self.tracker is not None and self.tracker.active:
            self._track_checkpoint(metrics, dest)

    def _track_checkpoint(self, metrics: dict[str, Any], dest: str) -> None:
        """Rank 0: the report's metrics, the validation's picture, where the (best) checkpoint is."""
        assert self.tracker is not None
        step = int(metrics.get("iteration", 0))
        self.tracker.metrics(metrics, step)
        self.tracker.tag("u2pl.last_checkpoint", dest)
        if "val/miou" not in metrics:
            return
        if metrics.get("best_iteration") == metrics.get("iteration"):
            self.tracker.tag("u2pl.best_checkpoint", dest)
        if self.run_uri:
            from u2pl_ray.data.fs import exists, join_uri, read_bytes

            name = f"val_{step:08d}.png"
            picture = join_uri(self.run_uri, "images", name)
            if exists(picture):
                self.tracker.picture(read_bytes(picture), name, step)

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[Path | None]:
        fs, folder = None, None
        if self.run_uri:
            from u2pl_ray.data.fs import resolve_filesystem

            fs, folder = resolve_filesystem(self.run_uri)
        candidates = resume_candidates(ray.train.get_checkpoint(), fs, folder)
        if not candidates:
            yield None
            return
        for candidate in candidates:
            with _local_copy(candidate, self.rank) as directory:
                try:
                    verify_checkpoint(directory)
                except CheckpointError as exc:
                    log.warning("skipping unusable checkpoint: %s", exc)
                    continue
                yield Path(directory)
                return
        raise CheckpointError(f"no usable checkpoint next to {candidates[0].path}: every one failed verification")

    def data_iterators(self) -> tuple[Any, Any]:
        return ray.train.get_dataset_shard("labeled"), ray.train.get_dataset_shard("unlabeled")

    def progress(self, values: dict[str, Any]) -> None:
        if self.board is not None:
            self.board.push.remote(values)
        if self.tracker is not None:
            self.tracker.metrics(values, int(values.get("iteration", 0)))

    def stop_requested(self) -> bool:
        if self.board is None:
            return False
        try:
            return bool(ray.get(self.board.stop_requested.remote(), timeout=10))
        except Exception:  # a lost driver must not stop training
            return False


def _apply_train_log_level(level: str) -> None:
    """RunConfig's LoggingConfig filters the `ray.train.*` loggers only; the worker's report lines (the whole
    metrics dict, at INFO) come from a logger Ray names by its file path, so it gets the same level here."""
    suffix = os.path.join("ray", "train", "v2", "_internal", "execution", "context.py")
    for name in list(logging.root.manager.loggerDict):
        if name.endswith(suffix):
            logging.getLogger(name).setLevel(level)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Entry point of every Ray Train worker."""
    from u2pl_ray.engine.runner import Runner

    logging.basicConfig(level=os.environ.get("U2PL_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    cfg = build_config(loop_config["config"], source="run config")
    _apply_train_log_level(cfg.ray_train_log_level)
    run_uri = loop_config.get("run_uri")
    tracker = None
    if ray.train.get_context().get_world_rank() == 0 and (cfg.tracking.mlflow or cfg.tracking.wandb):
        name = (run_uri or "run").split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        tracker = Tracker(cfg, loop_config["config"], name, run_uri)
    session = RaySession(loop_config.get("board"), run_uri, tracker)
    runner = Runner(cfg, session, loop_config["dataset_info"], loop_config["iters_per_epoch"], run_uri=run_uri)
    try:
        runner.run()
    finally:
        if tracker is not None:
            tracker.close()
