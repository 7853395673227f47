"""Validation sharded across workers and reduced into one mIoU: every rank evaluates its share of the
val set, then one all-reduce sums the confusion matrices."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from u2pl_ray.config import Config
from u2pl_ray.data.stream import iter_val_samples
from u2pl_ray.engine import collectives as coll
from u2pl_ray.engine.inference import InferenceSpec, predict_logits
from u2pl_ray.metrics import ConfusionMatrix


def inference_spec(cfg: Config) -> InferenceSpec:
    return InferenceSpec(
        mode=cfg.eval.mode,
        crop_size=cfg.eval.crop_size or cfg.data.crop_size,
        stride_ratio=cfg.eval.stride_ratio,
        scales=tuple(cfg.eval.scales),
        flip=cfg.eval.flip,
        label_pad_value=cfg.data.label_pad_value if cfg.data.label_pad_value is not None else cfg.data.ignore_index,
    )


@torch.no_grad()
def confusion_over(
    model: nn.Module,
    samples: Iterable[tuple[Any, torch.Tensor, torch.Tensor]],
    cfg: Config,
    num_classes: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
) -> ConfusionMatrix:
    spec = inference_spec(cfg)
    mean = torch.tensor(cfg.data.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data.std, device=device).view(1, 3, 1, 1)
    matrix = ConfusionMatrix(num_classes, ignore_index=cfg.data.ignore_index, device=device)
    for _, image, label in samples:
        image = (image.to(device).float().unsqueeze(0) - mean) / std
        label = label.to(device).long()
        with autocast():
            logits, scored = predict_logits(model, image, label, spec, num_classes)
        assert scored is not None
        matrix.update(logits.argmax(1)[0], scored)
    return matrix


def run_validation(
    model: nn.Module,
    cfg: Config,
    info: Any,
    session: Any,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
) -> dict[str, float]:
    num_classes = cfg.model.num_classes or info.num_classes
    samples = iter_val_samples(cfg.data, info, session.rank, session.world_size)
    matrix = confusion_over(model, samples, cfg, num_classes, device, autocast)
    matrix.all_reduce(coll.all_reduce_sum_)
    scores = {"miou": float(matrix.miou()), "pixel_acc": float(matrix.pixel_accuracy())}
    names = getattr(info, "class_names", None) or [str(i) for i in range(num_classes)]
    for name, iou in zip(names, matrix.iou_per_class().tolist()):
        scores[f"iou/{name}"] = float(iou)
    return scores
