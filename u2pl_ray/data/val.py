"""Validation samples: each rank reads its contiguous share of the val rows, whole images, uint8.

Rank r of W gets rows [N*r//W, N*(r+1)//W): every image is scored exactly once (the official
DistributedSampler pads the list by repeating images, which counts some twice). Only the shards that
overlap the share are read, and decoding runs a few images ahead in threads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from u2pl_ray.data.codec import SampleChecks, decode_sample
from u2pl_ray.data.errors import BadSampleError
from u2pl_ray.data.fs import resolve_filesystem
from u2pl_ray.data.info import DatasetInfo
from u2pl_ray.data.rows import row_where
from u2pl_ray.data.shards import iter_part_rows, shard_where

log = logging.getLogger(__name__)


def val_range(num_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    world = max(1, world_size)
    return num_rows * rank // world, num_rows * (rank + 1) // world


def iter_val_samples(
    cfg,
    info: DatasetInfo,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(id, image uint8 [3, H, W], label uint8 [H, W]) for this rank's share of the val set, in order.
    Bad rows raise BadSampleError, or are skipped with a warning under `data.on_bad_sample: skip`."""
    lo, hi = val_range(info.num_val, rank, world_size)
    if hi <= lo:
        return
    fs, root = resolve_filesystem(info.root)
    checks = SampleChecks(info.num_classes, cfg.ignore_index)
    rows = iter_part_rows(fs, root, info.val, info.root, lo, hi)

    def decode(entry):
        ref, _, row = entry
        where = row_where(shard_where(info.root, ref.path), row["id"])
        try:
            if row["mask"] is None:
                raise BadSampleError(where, "a validation row has no mask")
            image, label = decode_sample(row["image"], row["mask"], row["height"], row["width"], checks, where)
            return row["id"], image, label
        except BadSampleError as exc:
            return exc

    lookahead = max(2, 2 * cfg.decode_threads)
    with ThreadPoolExecutor(cfg.decode_threads, thread_name_prefix="decode-val") as pool:
        pending = []
        for entry in rows:
            pending.append(pool.submit(decode, entry))
            if len(pending) >= lookahead:
                yield from _emit(pending.pop(0).result(), cfg.on_bad_sample)
        for future in pending:
            yield from _emit(future.result(), cfg.on_bad_sample)


def _emit(result, policy: str) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    if isinstance(result, BadSampleError):
        if policy == "error":
            raise result
        log.warning("skipped %s", result)
        return
    yield result
