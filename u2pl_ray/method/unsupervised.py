"""Unsupervised loss on the reliable pseudo-labelled pixels with the adaptive weight (spec §3.3)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from u2pl_ray.method.thresholds import percentile


class UnsupervisedResult(NamedTuple):
    loss: Tensor  # float32, differentiable w.r.t. the student logits
    reliable_share: Tensor  # kept / valid pixels, 0-d, no grad
    threshold: Tensor  # the entropy percentile used, 0-d float32 (nan when no valid pixel)


def unsupervised_loss(
    pred_student: Tensor,
    pseudo_label: Tensor,
    teacher_entropy: Tensor,
    drop_percent: float,
    *,
    ignore_index: int = 255,
    threshold: Tensor | None = None,
) -> UnsupervisedResult:
    """CE of the student on the pixels whose teacher entropy is below the `drop_percent` percentile.

    pred_student [B,C,H,W] logits at the label size; pseudo_label [B,H,W] (not modified);
    teacher_entropy [B,H,W], from the train-mode teacher on the same (mixed) images. Pixels with
    entropy >= threshold are dropped (a pixel exactly at the threshold is dropped). The CE mean is
    weighted by B*H*W / #kept (computed as reciprocal(#kept) * B*H*W, the float32 rounding of the
    official `int / tensor`). `threshold` may be passed when the caller already computed it.
    """
    batch, _, height, width = pred_student.shape
    with torch.no_grad():
        valid = pseudo_label != ignore_index
        num_valid = valid.sum()
        if threshold is None:
            if int(num_valid) == 0:
                threshold = torch.tensor(float("nan"), device=pred_student.device)
            else:
                threshold = percentile(teacher_entropy[valid], drop_percent)
        kept = valid & ~(teacher_entropy >= threshold)
        num_kept = kept.sum()
        target = pseudo_label.masked_fill(~kept, ignore_index)
        share = num_kept.float() / num_valid.clamp_min(1).float()
    if int(num_kept) == 0:
        # The official code returns nan here (0/0); a zero loss keeps the graph and the run alive.
        return UnsupervisedResult(0.0 * pred_student.float().sum(), share, threshold)
    weight = num_kept.float().reciprocal() * (batch * height * width)
    loss = weight * F.cross_entropy(pred_student.float(), target, ignore_index=ignore_index)
    return UnsupervisedResult(loss, share, threshold)
