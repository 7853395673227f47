"""Controller-side hook of Ray Train: forwards reports to the driver's progress board and keeps an
export of the best checkpoint beside Ray's last-K checkpoints."""

from __future__ import annotations

import json
import logging
from typing import Any

from ray.train import Checkpoint, UserCallback

log = logging.getLogger(__name__)

BEST_POINTER = "best.json"


class RunCallback(UserCallback):
    def __init__(self, board: Any = None):
        self.board = board

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None) -> None:
        rank0 = dict(metrics[0]) if metrics else {}
        if self.board is not None and rank0:
            kind = "validation" if "val/miou" in rank0 else "report"
            self.board.push.remote({"kind": kind, **rank0})
        if checkpoint is not None and _is_new_best(rank0):
            try:
                keep_best(checkpoint, rank0)
            except OSError as exc:  # the run goes on; the periodic checkpoints are still there
                log.warning("could not export the best checkpoint: %s", exc)


def _is_new_best(metrics: dict[str, Any]) -> bool:
    return "val/miou" in metrics and metrics.get("best_iteration") == metrics.get("iteration")


def keep_best(checkpoint: Checkpoint, metrics: dict[str, Any]) -> str:
    """Copies the checkpoint to RUN/best_<iteration>, points RUN/best.json at it (one small write, so
    readers never see a half-copied best), then removes the previous best copy."""
    from pyarrow.fs import FileSelector, FileType, copy_files

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    assert fs is not None
    run_dir = path.rsplit("/", 1)[0]
    name = f"best_{int(metrics['iteration']):08d}"
    target = f"{run_dir}/{name}"
    fs.create_dir(target, recursive=True)
    copy_files(path, target, source_filesystem=fs, destination_filesystem=fs, use_threads=False)  # apache/arrow#32372
    pointer = {
        "checkpoint": name,
        "iteration": int(metrics["iteration"]),
        "miou": float(metrics["val/miou"]),
        "epoch": int(metrics.get("epoch", 0)),
    }
    with fs.open_output_stream(f"{run_dir}/{BEST_POINTER}") as out:
        out.write(json.dumps(pointer, indent=1).encode())
    for info in fs.get_file_info(FileSelector(run_dir)):
        if info.type == FileType.Directory and info.base_name.startswith("best_") and info.base_name != name:
            fs.delete_dir(info.path)
    return target
