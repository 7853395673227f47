"""Supervised losses on labelled pixels: cross-entropy and OHEM, each with the optional aux head (spec §1.6)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from u2pl_ray.method.base import output


def upsample(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear, align_corners=True, in float32: how every prediction reaches the crop size (spec §2)."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits  # align_corners=True at the same size is the identity
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def ce_loss(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """Mean cross-entropy over the pixels whose target is not `ignore_index`; a batch without any such
    pixel contributes zero (torch's mean would be 0/0 = NaN), as the unsupervised loss does."""
    if not bool((target != ignore_index).any()):
        return 0.0 * logits.float().sum()
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index)


def ohem_loss(logits: Tensor, target: Tensor, *, thresh: float, min_kept: int, ignore_index: int = 255) -> Tensor:
    """Online hard example mining over one (per-worker) batch.

    With at least `min_kept` valid pixels, the kept pixels are those whose target-class probability
    is <= max(thresh, the min_kept-th smallest such probability); the loss is the CE mean over them.
    With fewer valid pixels than `min_kept`, every valid pixel is kept. min_kept = 0 is plain
    cross-entropy, as the official `OhemCrossEntropy2dTensor` is then (no pixel dropped).
    """
    logits = logits.float()
    valid = target != ignore_index
    num_valid = int(valid.sum())
    if num_valid == 0:
        return 0.0 * logits.sum()
    if 0 < min_kept <= num_valid:
        with torch.no_grad():
            prob = torch.softmax(logits, dim=1)
            safe_target = target.masked_fill(~valid, 0)
            p_target = prob.gather(1, safe_target.unsqueeze(1)).squeeze(1)
            threshold = torch.tensor(thresh, dtype=p_target.dtype, device=p_target.device)
            kth = torch.kthvalue(p_target[valid], min_kept).values
            threshold = torch.maximum(threshold, kth)
            kept = valid & (p_target <= threshold)
        if not bool(kept.any()):
            return 0.0 * logits.sum()
        target = target.masked_fill(~kept, ignore_index)
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def supervised_loss(
    pred: Tensor,
    label: Tensor,
    *,
    aux: Tensor | None = None,
    criterion: str = "ce",
    aux_weight: float = 0.4,
    ohem_thresh: float = 0.7,
    ohem_min_kept: int = 100_000,
    ignore_index: int = 255,
) -> Tensor:
    """`criterion(pred) + aux_weight * criterion(aux)`; pred/aux are logits at any resolution,
    upsampled here to the label size."""
    size = (label.shape[-2], label.shape[-1])

    def one(logits: Tensor) -> Tensor:
        logits = upsample(logits, size)
        if criterion == "ce":
            return ce_loss(logits, label, ignore_index)
        if criterion == "ohem":
            return ohem_loss(logits, label, thresh=ohem_thresh, min_kept=ohem_min_kept, ignore_index=ignore_index)
        raise ValueError(f"method.criterion must be 'ce' or 'ohem', given {criterion!r}")

    loss = one(pred)
    if aux is not None and aux_weight > 0:
        loss = loss + aux_weight * one(aux)
    return loss


def labelled_loss(out: dict, label: Tensor, cfg: Any, ignore_index: int, num_labeled: int | None = None) -> Tensor:
    """The supervised loss of a model's dict output ('pred', optional 'aux') as the method config sets
    it (criterion, OHEM settings, aux weight); `num_labeled`: the labelled rows lead a larger batch."""
    pred, aux = output(out, "pred", "student"), out.get("aux")
    if num_labeled is not None:
        pred = pred[:num_labeled]
        aux = aux[:num_labeled] if aux is not None else None
    return supervised_loss(
        pred,
        label,
        aux=aux,
        criterion=cfg.criterion,
        aux_weight=cfg.aux_weight,
        ohem_thresh=cfg.ohem_thresh,
        ohem_min_kept=cfg.ohem_min_kept,
        ignore_index=ignore_index,
    )
