"""Builders shared by the eval / predict / export / viz tests (no tests here): a tiny dataset in the
real shard format, tiny checkpoints written with the engine's own checkpoint functions, and a "model"
whose predictions are drawn by hand into its input image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from u2pl_ray.config import build_config, dump_config
from u2pl_ray.data.codec import encode_png
from u2pl_ray.data.schema import ClassInfo
from u2pl_ray.data.shards import Sample
from u2pl_ray.data.writer import DatasetWriter
from u2pl_ray.engine.checkpoint import SHARED, save_torch, write_meta
from u2pl_ray.model import build_model

NUM_CLASSES = 4
CLASSES = [
    ClassInfo(0, "background", (0, 0, 0)),
    ClassInfo(1, "disc", (200, 30, 30)),
    ClassInfo(2, "bar", (30, 200, 30)),
    ClassInfo(3, "ring", (30, 30, 200)),
]
VAL_SIZES = [(24, 40), (40, 30), (33, 33), (20, 52), (45, 28)]
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


def sample_arrays(index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured image and a mask with a few class blobs and some ignored pixels."""
    rng = np.random.default_rng(100 + index)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    for cls in range(1, NUM_CLASSES):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(4, 10)
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        mask[blob] = cls
        image[blob] = (np.array(CLASSES[cls].color) * 0.7 + image[blob] * 0.3).astype(np.uint8)
    mask[0, :3] = 255
    return image, mask


def make_dataset(root: str | Path, sizes: list[tuple[int, int]] = VAL_SIZES) -> str:
    """A dataset root with val rows of the given sizes and a split '1_2' (one labelled, one unlabelled)."""
    uri = str(root)
    writer = DatasetWriter(uri, "eval-test", CLASSES, shard_rows=2)
    for i, (h, w) in enumerate(sizes):
        image, mask = sample_arrays(i, h, w)
        writer.val().add(
            Sample(
                f"val_{i:03d}",
                encode_png(image),
                encode_png(mask),
                h,
                w,
                np.bincount(mask[mask < NUM_CLASSES], minlength=NUM_CLASSES),
            )
        )
    image, mask = sample_arrays(99, 32, 32)
    writer.part("1_2", "labeled").add(Sample("train_0", encode_png(image), encode_png(mask), 32, 32))
    writer.part("1_2", "unlabeled").add(Sample("train_1", encode_png(image), None, 32, 32))
    writer.finish()
    return uri


def tiny_config(data_root: str | None, **sections: dict[str, Any]) -> Any:
    data = {
        "model": {
            "backbone": "tiny",
            "num_classes": NUM_CLASSES,
            "decoder_channels": 16,
            "low_level_channels": 8,
            "rep_dim": 8,
        },
        "data": {"root": data_root, "split": "1_2", "crop_size": 32},
        "eval": {"mode": "center"},
        "schedule": {"epochs": 4},
        "storage": {"path": "/tmp/unused"},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return build_config(data, source="test")


def _trained(cfg: Any, seed: int, steps: int) -> nn.Module:
    """The tiny network fitted for a few steps to the val images, so that its predictions vary over the
    image (a freshly initialised one predicts nearly one class everywhere)."""
    torch.manual_seed(seed)
    model = build_model(cfg.model.model_copy(update={"pretrained": None}), NUM_CLASSES)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    images, masks = [], []
    for i, (h, w) in enumerate(VAL_SIZES):
        image, mask = sample_arrays(i, h, w)
        images.append((torch.from_numpy(image).permute(2, 0, 1).float() - mean[0]) / std[0])
        masks.append(torch.from_numpy(mask).long())
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    side = 20  # one 20x20 crop of each image per step: a batch of 5 (BN needs more than one)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on the shared 2 cores
    try:
        _fit(model, optimiser, images, masks, gen, side, steps)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _fit(model, optimiser, images, masks, gen, side, steps):
    for _ in range(steps):
        batch, target = [], []
        for image, mask in zip(images, masks):
            y = int(torch.randint(0, image.shape[1] - side + 1, (1,), generator=gen))
            x = int(torch.randint(0, image.shape[2] - side + 1, (1,), generator=gen))
            batch.append(image[:, y : y + side, x : x + side])
            target.append(mask[y : y + side, x : x + side])
        logits = nn.functional.interpolate(
            model(torch.stack(batch))["pred"], size=(side, side), mode="bilinear", align_corners=True
        )
        loss = nn.functional.cross_entropy(logits, torch.stack(target), ignore_index=255)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def make_checkpoint(
    directory: str | Path,
    cfg: Any,
    *,
    iteration: int = 120,
    epoch: int = 3,
    classes: list[dict[str, Any]] | None = None,
    history: list[dict[str, Any]] | None = None,
    metrics: dict[str, Any] | None = None,
    steps: int = 40,
) -> Path:
    """A sealed checkpoint folder as the trainer writes it, student and teacher with different weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    student, teacher = _trained(cfg, 1, steps), _trained(cfg, 2, steps)
    save_torch(
        {
            "student": student.state_dict(),
            "teacher": teacher.state_dict(),
            "optimizer": {},
            "progress": {"iteration": iteration, "epoch": epoch},
        },
        directory / SHARED,
    )
    (directory / "config.yaml").write_text(dump_config(cfg))
    if classes is None:
        classes = [{"id": c.id, "name": c.name, "color": list(c.color)} for c in CLASSES]
    write_meta(
        directory,
        {
            "iteration": iteration,
            "epoch": epoch,
            "metrics": metrics or {"val/miou": 0.25},
            "num_classes": NUM_CLASSES,
            "classes": classes,
            "history": history or [],
        },
    )
    return directory


class HandMade(nn.Module):
    """Predicts, at every pixel, the class id written into the image's red channel (pixel value = id).

    The evaluation pipeline normalises the image; this undoes it, so a test chooses the prediction of
    every pixel by hand and runs it through the real evaluation code."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.num_classes = num_classes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        ids = (x[:, 0] * STD[0] + MEAN[0]).round().long().clamp(0, self.num_classes - 1)
        return {"pred": nn.functional.one_hot(ids, self.num_classes).permute(0, 3, 1, 2).float() * 10}
