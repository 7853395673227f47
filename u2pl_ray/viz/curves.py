"""Training curves of a run: losses, mIoU (student / teacher), reliable-pixel share and drop percent
against the iteration, read from the newest checkpoint's `meta.json` history (validations) and the
TensorBoard event files under RUN/tensorboard/ (training scalars), local or in object storage."""

from __future__ import annotations

import io
import json
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Series = list[tuple[int, float]]

LOSS_TAGS = ("train/total", "train/sup", "train/unsup", "train/contra")
MIOU_TAGS = ("val/student/miou", "val/teacher/miou")
RELIABLE_TAG = "train/reliable_share"
DROP_TAG = "train/drop_percent"
PANELS = {  # file stem -> (title, y label, tags)
    "losses": ("losses", "loss", LOSS_TAGS),
    "miou": ("validation mIoU", "mIoU", MIOU_TAGS),
    "reliable_share": ("reliable pseudo-label pixels", "share of unlabelled pixels", (RELIABLE_TAG,)),
    "drop_percent": ("drop percent (entropy percentile kept)", "percent", (DROP_TAG,)),
}


@dataclass
class RunCurves:
    series: dict[str, Series] = field(default_factory=dict)  # tag -> sorted (iteration, value)
    sources: list[str] = field(default_factory=list)

    def get(self, tag: str) -> Series:
        return self.series.get(tag, [])


def _merge(into: dict[str, dict[int, float]], tag: str, points: Iterable[tuple[int, float]]) -> None:
    bucket = into.setdefault(tag, {})
    for step, value in points:
        bucket[int(step)] = float(value)  # a later source (or a resumed run) overrides the same step


def history_series(history: Iterable[dict[str, Any]]) -> dict[str, Series]:
    """Series from a checkpoint's validation history: one point per validation and numeric key."""
    out: dict[str, dict[int, float]] = {}
    for entry in history:
        if "iteration" not in entry:
            continue
        step = int(entry["iteration"])
        for key, value in entry.items():
            if key not in ("iteration", "epoch") and isinstance(value, (int, float)):
                _merge(out, key, [(step, value)])
    return {k: sorted(v.items()) for k, v in out.items()}


def tensorboard_series(directory: str | Path) -> dict[str, Series]:
    """All scalar series in the event files under `directory` (each folder holding event files is read
    with TensorBoard's EventAccumulator, which also drops steps orphaned by a restart)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Its directory watcher logs "No path found after <file>" at INFO when it reaches the last file.
    logging.getLogger("tensorboard").setLevel(logging.WARNING)
    out: dict[str, dict[int, float]] = {}
    folders = sorted({p.parent for p in Path(directory).rglob("events.out.tfevents.*")})
    for folder in folders:
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            _merge(out, tag, [(e.step, e.value) for e in acc.Scalars(tag)])
    return {k: sorted(v.items()) for k, v in out.items()}


def _copy_tree(uri: str, target: Path) -> bool:
    """Copies a remote folder to `target`; False when it does not exist."""
    import pyarrow.fs as pafs

    from u2pl_ray.data.fs import resolve_filesystem

    fs, path = resolve_filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return False
    pafs.copy_files(path, str(target), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return True


def _run_history(run_uri: str) -> tuple[list[dict[str, Any]], str | None]:
    """(history, where) from the newest checkpoint's meta.json, else summary.json."""
    from u2pl_ray.data.fs import exists, join_uri, read_text
    from u2pl_ray.engine.artifacts import resolve_checkpoint_uri
    from u2pl_ray.engine.checkpoint import CheckpointError

    try:
        newest = resolve_checkpoint_uri(run_uri, prefer="latest")
        meta = json.loads(read_text(join_uri(newest, "meta.json")))
        return list(meta.get("history", [])), join_uri(newest, "meta.json")
    except CheckpointError:
        pass
    summary_uri = join_uri(run_uri, "summary.json")
    if exists(summary_uri):
        return list(json.loads(read_text(summary_uri)).get("history", [])), summary_uri
    return [], None


def read_run_curves(run_uri: str) -> RunCurves:
    """Everything that can be plotted for a run folder (local path or s3://...)."""
    from u2pl_ray.data.fs import is_local, join_uri, split_query

    history, where = _run_history(run_uri)
    merged: dict[str, dict[int, float]] = {}
    sources = []
    board_uri = join_uri(run_uri, "tensorboard")
    if is_local(split_query(board_uri)[0]):
        board = Path(board_uri.removeprefix("file://")).expanduser()
        scalars = tensorboard_series(board) if board.is_dir() else {}
    else:
        with tempfile.TemporaryDirectory(prefix="u2pl-tb-") as tmp:
            scalars = tensorboard_series(tmp) if _copy_tree(board_uri, Path(tmp)) else {}
    if scalars:
        sources.append(board_uri)
    for tag, points in scalars.items():
        _merge(merged, tag, points)
    for tag, points in history_series(history).items():  # the checkpoint's validations win
        _merge(merged, tag, points)
    if where:
        sources.append(where)
    if DROP_TAG not in merged and "drop_percent" in merged:  # no TensorBoard: the validations' record of it
        merged[DROP_TAG] = merged["drop_percent"]
    return RunCurves({k: sorted(v.items()) for k, v in merged.items()}, sources)


def _figure(curves: RunCurves, panels: list[str], columns: int) -> Any:
    from matplotlib.figure import Figure

    rows = (len(panels) + columns - 1) // columns
    fig = Figure(figsize=(5.2 * columns, 3.4 * rows), dpi=100, layout="constrained")
    for index, stem in enumerate(panels):
        title, ylabel, tags = PANELS[stem]
        ax = fig.add_subplot(rows, columns, index + 1)
        drawn = False
        for tag in tags:
            points = curves.get(tag)
            if points:
                steps, values = zip(*points)
                ax.plot(
                    steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=tag.split("/", 1)[1]
                )
                drawn = True
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not recorded in this run", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_curves(curves: RunCurves, out_uri: str) -> list[str]:
    """Writes curves.png (all four panels) and curves_<panel>.png for each panel under `out_uri`
    (a local folder or an s3:// prefix). Returns the URIs written."""
    from u2pl_ray.data.fs import join_uri, write_bytes_atomic

    written = []
    pictures = {"curves.png": _figure(curves, list(PANELS), 2)}
    pictures.update({f"curves_{stem}.png": _figure(curves, [stem], 1) for stem in PANELS})
    for name, fig in pictures.items():
        uri = join_uri(out_uri, name)
        write_bytes_atomic(uri, _png(fig))
        written.append(uri)
    return written


def write_run_curves(run_uri: str, out_uri: str | None = None) -> list[str]:
    """Reads a run's curves and draws them into RUN/plots/ (or `out_uri`)."""
    from u2pl_ray.data.fs import join_uri

    return write_curves(read_run_curves(run_uri), out_uri or join_uri(run_uri, "plots"))
