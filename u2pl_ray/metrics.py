"""Segmentation metrics from a confusion matrix that sums across batches and workers.

The official mIoU (spec §7) sums intersections and unions over the whole validation set and all
GPUs, then takes mean_c I_c / (U_c + 1e-10) over **all** C classes, so a class that never occurs
in targets nor predictions counts as IoU 0. A confusion matrix holds the same information.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

EPS = 1e-10


class ConfusionMatrix:
    """Counts `mat[target, prediction]` over the pixels whose target is not `ignore_index`."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, given {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch. `pred` is class indices shaped like `target`, or logits [B,C,H,W]."""
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
        valid = target != self.ignore_index
        t = target[valid].long()
        p = pred[valid].long()
        c = self.num_classes
        if t.numel() and (t.min() < 0 or t.max() >= c):
            bad = t[(t < 0) | (t >= c)][0].item()
            raise ValueError(f"target label {bad} outside [0, {c}) and not ignore_index {self.ignore_index}")
        if p.numel() and (p.min() < 0 or p.max() >= c):
            bad = p[(p < 0) | (p >= c)][0].item()
            raise ValueError(f"predicted label {bad} outside [0, {c})")
        counts = torch.bincount(t * c + p, minlength=c * c).view(c, c)
        self.mat += counts.to(self.mat.device)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge confusion matrices of {other.num_classes} and {self.num_classes} classes")
        self.mat += other.mat.to(self.mat.device)
        return self

    def all_reduce(self, fn: Callable[[torch.Tensor], object]) -> ConfusionMatrix:
        """Sum across workers: `fn` sums a tensor in place across ranks (identity in one process)."""
        fn(self.mat)
        return self

    def reset(self) -> None:
        self.mat.zero_()

    def intersection_union(self) -> tuple[torch.Tensor, torch.Tensor]:
        inter = self.mat.diag()
        union = self.mat.sum(0) + self.mat.sum(1) - inter
        return inter, union

    def iou_per_class(self) -> torch.Tensor:
        inter, union = self.intersection_union()
        return inter.double() / (union.double() + EPS)

    def miou(self) -> float:
        """Mean over all classes, absent ones included (the official definition)."""
        return self.iou_per_class().mean().item()

    def pixel_accuracy(self) -> float:
        total = self.mat.sum().item()
        return self.mat.diag().sum().item() / total if total else 0.0
