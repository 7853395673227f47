"""Turning shard rows into training samples: decode, check, augment. Runs in the training worker's decode
threads (`data.decode: worker`) or inside Ray Data tasks (`data.decode: ray`), with the same results."""

from __future__ import annotations

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
    labeled: bool  # False: masks are ignored even when present

    @classmethod
    def from_config(cls, cfg, num_classes: int, seed: int, labeled: bool) -> RowSpec:
        return cls(WeakAugment.from_config(cfg), SampleChecks(num_classes, cfg.ignore_index), int(seed), labeled)


def row_where(path: Any, row_id: Any) -> str:
    return f"in shard {path} row id {row_id!r}"


def process_row(spec: RowSpec, image: bytes, mask: bytes | None, height: Any, width: Any, where: str,
                rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode + check + weak augmentation of one row. Raises BadSampleError naming `where`."""
    if spec.labeled and mask is None:
        raise BadSampleError(where, "a labelled row has no mask")
    img, msk = decode_sample(image, mask if spec.labeled else None, _int(height), _int(width), spec.checks, where)
    return spec.augment(img, msk, rng)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def decode_rows_to_numpy(batch: dict[str, np.ndarray], spec: RowSpec, epoch: int | None, stream: int,
                         where_column: str) -> dict[str, np.ndarray]:
    """A Ray Data `map_batches` body: raw rows -> decoded, augmented arrays plus an `error` column (""
    for good rows). Bad rows are kept (zeros) so the worker counts or raises them under its policy.
    Augmentation keys: (seed, epoch, stream, position) when the batch has positions (deterministic plan),
    otherwise fresh entropy."""
    n = len(batch["id"])
    crop = spec.augment.crop_size
    images = np.zeros((n, 3, crop, crop), dtype=np.uint8)
    masks = np.zeros((n, crop, crop), dtype=np.uint8) if spec.labeled else None
    errors = np.full(n, "", dtype=object)
    positions = batch.get("position")
    for i in range(n):
        where = row_where(batch[where_column][i], batch["id"][i])
        if positions is not None and epoch is not None:
            rng = sample_rng(spec.seed, epoch, stream, int(positions[i]))
        else:
            rng = np.random.default_rng()
        try:
            img, msk = process_row(spec, batch["image"][i], batch["mask"][i] if "mask" in batch else None,
                                   batch["height"][i], batch["width"][i], where, rng)
        except BadSampleError as exc:
            errors[i] = str(exc)
            continue
        images[i] = img.numpy()
        if masks is not None and msk is not None:
            masks[i] = msk.numpy()
    out = {"id": np.asarray(batch["id"], dtype=object), "image": images, "error": errors}
    if masks is not None:
        out["mask"] = masks
    if positions is not None:
        out["position"] = np.asarray(positions, dtype=np.int64)
    return out
