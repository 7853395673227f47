"""Batch inference over many inputs with Ray Data: a pool of actors, each holding the model once
(on a GPU when the cluster has them), reads its share of the inputs and writes their outputs itself,
so only small records travel back to the driver."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from u2pl_ray.serving.inputs import InputItem

RECORD_KEYS = ("input", "ok", "error", "mask", "overlay", "height", "width")


class PredictActor:
    """The `map_batches` callable class: built once per actor, called per batch of input rows."""

    def __init__(self, checkpoint: str, out_uri: str, options: dict[str, Any], threads: int | None = None):
        import torch

        from u2pl_ray.serving.predictor import Segmenter

        if threads:
            torch.set_num_threads(threads)  # an actor gets its CPU share, not the whole machine
        self.out_uri = out_uri
        self.segmenter = Segmenter.from_checkpoint(checkpoint, **options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = [
            self.segmenter.predict_to(InputItem(str(u), str(r)), self.out_uri)
            for u, r in zip(batch["uri"], batch["rel"])
        ]
        columns: dict[str, list[Any]] = {k: [] for k in RECORD_KEYS}
        for record in records:
            columns["input"].append(record["input"])
            columns["ok"].append(bool(record["ok"]))
            columns["error"].append(record.get("error", ""))
            columns["mask"].append(record.get("mask", ""))
            columns["overlay"].append(record.get("overlay", ""))
            columns["height"].append(int(record.get("height", 0)))
            columns["width"].append(int(record.get("width", 0)))
        return {k: np.asarray(v) for k, v in columns.items()}


def predict_with_ray(
    items: Sequence[InputItem],
    checkpoint: str,
    out_uri: str,
    options: dict[str, Any],
    *,
    concurrency: int = 1,
    batch_size: int = 4,
    num_gpus: float = 0.0,
    num_cpus: float = 1.0,
) -> list[dict[str, Any]]:
    """Runs `PredictActor` over the inputs on the current Ray cluster (init it first). Returns one record
    per input, in no particular order."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError("predict_with_ray needs ray.init() first")
    rows = [{"uri": item.uri, "rel": item.rel} for item in items]
    blocks = max(1, min(len(rows), concurrency * 4))  # a few blocks per actor keep them all busy
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    device = "cuda" if num_gpus > 0 else "cpu"
    options = {**options, "device": device}
    threads = max(1, int(num_cpus)) if num_gpus == 0 else None
    results = dataset.map_batches(
        PredictActor,
        fn_constructor_kwargs={"checkpoint": checkpoint, "out_uri": out_uri, "options": options, "threads": threads},
        batch_size=batch_size,
        concurrency=concurrency,
        num_gpus=num_gpus,
        num_cpus=num_cpus,
        batch_format="numpy",
    )
    out = []
    for row in results.iter_rows():
        record = {k: row[k].item() if hasattr(row[k], "item") else row[k] for k in RECORD_KEYS}
        keep = ("input", "ok", "mask", "overlay", "height", "width") if record["ok"] else ("input", "ok", "error")
        out.append({k: record[k] for k in keep})
    return out
