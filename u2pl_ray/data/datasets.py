"""The Ray Datasets of training.

Default (`data.deterministic: false`): `build_train_datasets` reads the labelled and unlabelled shards
with Ray Data (file order shuffled at every epoch; each stream's files listed as often as an epoch of
every worker needs: the labelled ones at least ceil(N_u/N_l) times, so one pass holds the resampled
labelled list of spec §6.3), optionally decodes in a `map_batches` stage, and Ray Train splits each
stream across the workers (`train_dataset_config`).

Deterministic: every worker builds, per epoch, a Ray Dataset of its own plan segments (u2pl_ray.data.plan)
with order preserved; the datasets given to Ray Train are then left unsplit and unread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from u2pl_ray.data.errors import DataError
from u2pl_ray.data.info import DatasetInfo, stream_repeats
from u2pl_ray.data.plan import STREAM_LABELED, STREAM_UNLABELED, Segment
from u2pl_ray.data.readtask import read_segments
from u2pl_ray.data.rows import RowSpec

ROLE_STREAM = {"labeled": STREAM_LABELED, "unlabeled": STREAM_UNLABELED}
# A read task hands rows on in blocks of about this size as it goes (Ray's default, 128 MiB, would hold
# a whole shard back until its last row is decoded).
OUTPUT_BLOCK_BYTES = 4 << 20


def role_columns(role: str) -> list[str]:
    return ["id", "image", "mask", "height", "width"] if role == "labeled" else ["id", "image", "height", "width"]


def train_dataset_config(cfg) -> Any:
    """The `dataset_config` for TorchTrainer: split both streams across workers, or none of them in
    deterministic mode (each worker reads its own plan)."""
    from ray.train import DataConfig as RayDataConfig

    return RayDataConfig(datasets_to_split=[] if cfg.deterministic else "all")


def check_cpu_budget(cfg, num_workers: int, cpus_per_worker: float, cluster_cpus: float) -> None:
    """DataError when the training workers' CPU reservations leave none for a Ray Data task: the stream
    would wait forever (ray-notes: two 1-CPU workers on a 2-CPU machine hang)."""
    left = float(cluster_cpus) - max(0, int(num_workers)) * float(cpus_per_worker)
    if left + 1e-9 < cfg.ray_task_cpus:
        raise DataError(
            f"{num_workers} training worker(s) x {cpus_per_worker:g} CPU leave {max(left, 0):g} of {cluster_cpus:g} "
            f"CPUs, less than one Ray Data task needs (data.ray_task_cpus={cfg.ray_task_cpus:g}): the data stream "
            "would wait forever. Lower scaling.cpus_per_worker (e.g. 0.5 on a 2-core machine) or data.ray_task_cpus"
        )


def build_train_datasets(
    cfg,
    info: DatasetInfo,
    *,
    needs_unlabeled: bool = True,
    iters_per_epoch: int,
    world_size: int,
    unlabeled_views: int = 1,
) -> dict[str, Any]:
    """{"labeled": Dataset, "unlabeled": Dataset}. "unlabeled" is an empty dataset for a method that reads
    no unlabelled images (supervised), so `get_dataset_shard("unlabeled")` always works. Each stream
    lists its files often enough that one pass covers an epoch of every worker (`stream_repeats`).
    `unlabeled_views`: independent weak views per unlabelled image (decoded in Ray when data.decode is 'ray')."""
    import ray.data

    needed = iters_per_epoch * cfg.batch_size * max(1, world_size)
    labeled = _files_dataset(cfg, info, "labeled", stream_repeats(info, "labeled", needs_unlabeled, needed))
    if needs_unlabeled and info.num_unlabeled > 0:
        unlabeled = _files_dataset(
            cfg, info, "unlabeled", stream_repeats(info, "unlabeled", needs_unlabeled, needed), views=unlabeled_views
        )
    else:
        unlabeled = ray.data.from_items([])
    return {"labeled": labeled, "unlabeled": unlabeled}


def _files_dataset(cfg, info: DatasetInfo, role: str, repeats: int, views: int = 1) -> Any:
    """One read task per shard (listed `repeats` times: the labelled list of spec §6.3 in one pass), in
    a new random order at every epoch; rows decoded in the task when data.decode is 'ray'."""
    import ray.data

    part = info.part(role)
    items = [{"segment": json.dumps({"paths": [s.path], "rows": [s.rows]})} for s in part.shards] * repeats
    ds = ray.data.from_items(items, override_num_blocks=len(items)).randomize_block_order()
    spec = (
        RowSpec.from_config(cfg, info.num_classes, seed=0, labeled=role == "labeled", views=views)
        if cfg.decode == "ray"
        else None
    )
    kwargs = {
        "root": info.root,
        "columns": role_columns(role),
        "spec": spec,
        "epoch": None,
        "stream": ROLE_STREAM[role],
    }
    ds = ds.map_batches(read_segments, batch_size=1, batch_format="numpy", fn_kwargs=kwargs, num_cpus=cfg.ray_task_cpus)
    _set_context(ds, cfg)
    return ds


def _set_context(ds: Any, cfg) -> None:
    ctx = ds.context
    ctx.target_max_block_size = OUTPUT_BLOCK_BYTES
    if not cfg.ray_progress:
        # Every epoch of every stream would otherwise print bars and an execution plan on the driver.
        ctx.enable_progress_bars = False
        ctx.enable_operator_progress_bars = False
        ctx.print_on_execution_start = False


# --- deterministic: one dataset per worker, epoch and stream -------------------------------------


def segment_json(info: DatasetInfo, role: str, seg: Segment) -> str:
    """One plan segment as the read task takes it: its shards' paths and rows, its entries and positions."""
    part = info.part(role)
    return json.dumps(
        {
            "paths": [part.shards[i].path for i in seg.shards],
            "rows": [part.shards[i].rows for i in seg.shards],
            "entries": seg.entries,
            "positions": seg.positions,
        }
    )


def plan_dataset(cfg, info: DatasetInfo, role: str, segments: Sequence[Segment], spec: RowSpec, epoch: int) -> Any:
    """A Ray Dataset yielding the rows of `segments` in plan order (decoded when data.decode is 'ray')."""
    import ray.data

    items = [{"segment": segment_json(info, role, seg)} for seg in segments]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    kwargs = {
        "root": info.root,
        "columns": role_columns(role),
        "spec": spec if cfg.decode == "ray" else None,
        "epoch": epoch,
        "stream": ROLE_STREAM[role],
    }
    ds = ds.map_batches(read_segments, batch_size=1, batch_format="numpy", fn_kwargs=kwargs, num_cpus=cfg.ray_task_cpus)
    ds.context.execution_options.preserve_order = True  # the plan order is the point
    _set_context(ds, cfg)
    return ds


def local_plan_rows(info: DatasetInfo, role: str, segments: Sequence[Segment]) -> Iterator[dict[str, Any]]:
    """The rows of `segments` in plan order, read in this process (data.reader: local): the read task's
    own body, without Ray Data; the batches have the columns Ray's numpy batches have."""
    for seg in segments:
        item = {"segment": np.array([segment_json(info, role, seg)])}
        for table in read_segments(
            item, root=info.root, columns=role_columns(role), spec=None, epoch=None, stream=ROLE_STREAM[role]
        ):
            yield {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
