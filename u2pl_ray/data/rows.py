"""Turning shard rows into training samples: decode, check, augment. Runs in the training worker's decode
threads (`data.decode: worker`) or inside Ray Data tasks (`data.decode: ray`), with the same results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from u2pl_ray.data.augment import WeakAugment, sample_rng
from u2pl_ray.data.codec import SampleChecks, decode_sample
from u2pl_ray.data.errors import BadSampleError

# Columns of a row batch handed from reading to decoding (numpy format: one array per column).
RAW_COLUMNS = ("id", "image", "mask", "height", "width")


@dataclass(frozen=True)
class RowSpec:
    """Everything a process needs to turn a raw row into a sample (picklable, sent to Ray tasks)."""

    augment: WeakAugment
    checks: SampleChecks
    seed: int
    labeled: bool  # False: masks are ignored even when present; the sample's mask is its padding mask
    views: int = 1  # independent weak views of each unlabelled image (UniMatch's CutMix partner: 2)

    @classmethod
    def from_config(cls, cfg, num_classes: int, seed: int, labeled: bool, views: int = 1) -> RowSpec:
        return cls(
            WeakAugment.from_config(cfg),
            SampleChecks(num_classes, cfg.ignore_index),
            int(seed),
            labeled,
            1 if labeled else int(views),
        )


def row_where(path: Any, row_id: Any) -> str:
    return f"in shard {path} row id {row_id!r}"


View = tuple[torch.Tensor, torch.Tensor]  # uint8 image [3,c,c], mask [c,c] (labels, or the padding mask)


def process_row(
    spec: RowSpec,
    image: bytes,
    mask: bytes | None,
    height: Any,
    width: Any,
    where: str,
    rngs: Sequence[np.random.Generator],
) -> list[View]:
    """Decode + check + weak augmentation of one row: one view per generator (`spec.views` of them),
    decoded once. Raises BadSampleError naming `where`."""
    if spec.labeled and mask is None:
        raise BadSampleError(where, "a labelled row has no mask")
    img, msk = decode_sample(image, mask if spec.labeled else None, _int(height), _int(width), spec.checks, where)
    if spec.labeled:
        out, label = spec.augment(img, msk, rngs[0])
        assert label is not None
        return [(out, label)]
    return [spec.augment.unlabeled(img, rng) for rng in rngs]


def view_rngs(spec: RowSpec, epoch: int | None, stream: int, position: int | None) -> list[np.random.Generator]:
    """The generators of a sample's views: keyed by (seed, epoch, stream, position, view) when the sample
    has a plan position (deterministic mode), else fresh entropy."""
    if position is None or epoch is None:
        return [np.random.default_rng() for _ in range(spec.views)]
    return [sample_rng(spec.seed, epoch, stream, position, view) for view in range(spec.views)]


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def decode_rows_to_numpy(
    batch: dict[str, np.ndarray], spec: RowSpec, epoch: int | None, stream: int, where_column: str
) -> dict[str, np.ndarray]:
    """A Ray Data `map_batches` body: raw rows -> decoded, augmented arrays plus an `error` column (""
    for good rows). Bad rows are kept (zeros) so the worker counts or raises them under its policy.
    Columns `image`, `mask` (labels, or an unlabelled view's padding mask), and `image_<v>`, `mask_<v>`
    for the further views v >= 1. Augmentation keys as `view_rngs`."""
    n = len(batch["id"])
    crop = spec.augment.crop_size
    images = np.zeros((spec.views, n, 3, crop, crop), dtype=np.uint8)
    masks = np.zeros((spec.views, n, crop, crop), dtype=np.uint8)
    errors = np.full(n, "", dtype=object)
    positions = batch.get("position")
    for i in range(n):
        where = row_where(batch[where_column][i], batch["id"][i])
        rngs = view_rngs(spec, epoch, stream, int(positions[i]) if positions is not None else None)
        try:
            views = process_row(
                spec,
                batch["image"][i],
                batch["mask"][i] if "mask" in batch else None,
                batch["height"][i],
                batch["width"][i],
                where,
                rngs,
            )
        except BadSampleError as exc:
            errors[i] = str(exc)
            continue
        for v, (img, msk) in enumerate(views):
            images[v, i] = img.numpy()
            masks[v, i] = msk.numpy()
    out = {"id": np.asarray(batch["id"], dtype=object), "error": errors}
    for v in range(spec.views):
        suffix = f"_{v}" if v else ""
        out[f"image{suffix}"], out[f"mask{suffix}"] = images[v], masks[v]
    if positions is not None:
        out["position"] = np.asarray(positions, dtype=np.int64)
    return out
