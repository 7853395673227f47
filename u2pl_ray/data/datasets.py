"""The Ray Datasets of training.

Default (`data.deterministic: false`): `build_train_datasets` reads the labelled and unlabelled shards
with Ray Data (file order shuffled at every epoch; the labelled files listed ceil(N_u/N_l) times, so
one pass holds the resampled labelled list of spec §6.3), optionally decodes in a `map_batches` stage,
and Ray Train splits each stream across the workers (`train_dataset_config`).

Deterministic: every worker builds, per epoch, a Ray Dataset of its own plan segments (u2pl_ray.data.plan)
with order preserved; the datasets given to Ray Train are then left unsplit and unread.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from u2pl_ray.data.errors import DataError
from u2pl_ray.data.fs import resolve_filesystem, storage_error
from u2pl_ray.data.info import DatasetInfo, labeled_repeats
from u2pl_ray.data.plan import STREAM_LABELED, STREAM_UNLABELED, Segment
from u2pl_ray.data.rows import RowSpec, decode_rows_to_numpy
from u2pl_ray.data.shards import shard_where

ROLE_STREAM = {"labeled": STREAM_LABELED, "unlabeled": STREAM_UNLABELED}


def role_columns(role: str) -> list[str]:
    return ["id", "image", "mask", "height", "width"] if role == "labeled" else ["id", "image", "height", "width"]


def train_dataset_config(cfg) -> Any:
    """The `dataset_config` for TorchTrainer: split both streams across workers, or none of them in
    deterministic mode (each worker reads its own plan)."""
    from ray.train import DataConfig as RayDataConfig

    return RayDataConfig(datasets_to_split=[] if cfg.deterministic else "all")


def build_train_datasets(cfg, info: DatasetInfo, mode: str = "u2pl") -> dict[str, Any]:
    """{"labeled": Dataset, "unlabeled": Dataset}. "unlabeled" is an empty dataset in supervised mode or
    when the split has no unlabelled images, so `get_dataset_shard("unlabeled")` always works."""
    import ray.data

    labeled = _files_dataset(cfg, info, "labeled", labeled_repeats(info, mode))
    if mode == "u2pl" and info.num_unlabeled > 0:
        unlabeled = _files_dataset(cfg, info, "unlabeled", 1)
    else:
        unlabeled = ray.data.from_items([])
    return {"labeled": labeled, "unlabeled": unlabeled}


def _files_dataset(cfg, info: DatasetInfo, role: str, repeats: int) -> Any:
    """One read task per shard (listed `repeats` times: the labelled list of spec §6.3 in one pass), in
    a new random order at every epoch; rows decoded in the task when data.decode is 'ray'."""
    import ray.data

    part = info.part(role)
    items = [{"segment": json.dumps({"paths": [s.path], "rows": [s.rows]})} for s in part.shards] * repeats
    ds = ray.data.from_items(items, override_num_blocks=len(items)).randomize_block_order()
    spec = RowSpec.from_config(cfg, info.num_classes, seed=0, labeled=role == "labeled") \
        if cfg.decode == "ray" else None
    kwargs = {"root": info.root, "columns": role_columns(role), "spec": spec, "epoch": None,
              "stream": ROLE_STREAM[role]}
    return ds.map_batches(_read_segments, batch_size=1, batch_format="numpy", fn_kwargs=kwargs,
                          num_cpus=cfg.ray_task_cpus)


# --- deterministic: one dataset per worker, epoch and stream -------------------------------------


def plan_dataset(cfg, info: DatasetInfo, role: str, segments: Sequence[Segment], spec: RowSpec, epoch: int) -> Any:
    """A Ray Dataset yielding the rows of `segments` in plan order (decoded when data.decode is 'ray')."""
    import ray.data

    part = info.part(role)
    items = [{"segment": json.dumps({"paths": [part.shards[i].path for i in seg.shards],
                                     "rows": [part.shards[i].rows for i in seg.shards],
                                     "entries": seg.entries, "positions": seg.positions})}
             for seg in segments]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    kwargs = {"root": info.root, "columns": role_columns(role), "spec": spec if cfg.decode == "ray" else None,
              "epoch": epoch, "stream": ROLE_STREAM[role]}
    ds = ds.map_batches(_read_segments, batch_size=1, batch_format="numpy", fn_kwargs=kwargs,
                        num_cpus=cfg.ray_task_cpus)
    ds.context.execution_options.preserve_order = True  # the plan order is the point
    return ds


def _read_segments(batch: dict[str, np.ndarray], root: str, columns: list[str], spec: RowSpec | None, epoch: int,
                   stream: int) -> Any:
    fs, root_path = resolve_filesystem(root)
    pieces, indices, positions = [], [], []
    offset = 0
    for text in batch["segment"]:
        seg = json.loads(str(text))
        starts = []
        for rel, rows in zip(seg["paths"], seg["rows"]):
            table = _read_shard(fs, root_path, root, rel, rows, columns)
            pieces.append(table.append_column("where", pa.array([shard_where(root, rel)] * table.num_rows)))
            starts.append(offset)
            offset += table.num_rows
        if "entries" in seg:  # a plan segment: these rows, in this order
            indices.extend(starts[local] + row for local, row in seg["entries"])
            positions.extend(seg["positions"])
        else:  # whole shards
            indices.extend(range(starts[0], offset))
    if not pieces:
        return {"id": np.asarray([], dtype=object)}
    raw = pa.concat_tables(pieces).take(pa.array(indices, type=pa.int64()))
    if positions:
        raw = raw.append_column("position", pa.array(positions, type=pa.int64()))
    if spec is None:
        return raw  # bytes go to the training worker, which decodes them
    out = {name: raw.column(name).to_numpy(zero_copy_only=False) for name in raw.column_names}
    return decode_rows_to_numpy(out, spec, epoch=epoch, stream=stream, where_column="where")


def _read_shard(fs: Any, root_path: str, root: str, rel: str, rows: int, columns: list[str]) -> pa.Table:
    where = shard_where(root, rel)
    try:
        table = pq.read_table(posixpath.join(root_path, rel), filesystem=fs, columns=columns)
    except FileNotFoundError:
        raise DataError(f"missing shard {where} (listed in the manifest)") from None
    except (pa.ArrowInvalid, KeyError) as exc:
        raise DataError(f"shard {where} cannot be read as a u2pl-ray shard: {exc}") from None
    except OSError as exc:
        raise storage_error(exc, where, "read shard") from None
    if table.num_rows != rows:
        raise DataError(f"shard {where} has {table.num_rows} rows, the manifest says {rows}")
    return table
