"""UniMatch (V1, CVPR 2023): weak-to-strong consistency with two strong views and a feature-perturbation
stream, as the official code (LiheYoung/UniMatch, `unimatch.py`) computes one iteration. No teacher: the
student makes its own pseudo-labels.

1. The CutMix partner is a second weak view of the same unlabelled images (the official code zips one
   unlabelled loader with itself: same indices, independent augmentation). Its pseudo-labels come from
   an **eval-mode** forward without gradients; its strong views are pasted into this batch's strong
   views inside each sample's CutMix box.
2. One train-mode forward of cat(labelled, weak unlabelled) with feature perturbation: the decoder runs
   once over cat(features, dropout2d(features, 0.5)); the clean half gives the labelled logits and the
   weak view's logits, whose detached softmax gives the pseudo-labels (confidence, argmax); the
   perturbed half's unlabelled rows are the feature-perturbation predictions.
3. One train-mode forward of cat(strong view 1, strong view 2).
4. Losses at the crop size (logits upsampled bilinearly, align_corners=True): the supervised criterion on
   the labelled rows; for each unsupervised stream, per-pixel cross-entropy against the (CutMix-mixed)
   pseudo-labels, kept where confidence >= `conf_thresh` and the pixel is not crop padding, **summed and
   divided by the number of non-padding pixels** (not by the kept ones). Total
   (sup + 0.25 s1 + 0.25 s2 + 0.5 fp) / 2.
5. The learning rate of iteration i is the poly value of iteration i - 1: the official loop sets it
   after the optimiser step (`lr_iteration`).

Differences from the official code, documented in method/VARIANTS.md: the strong photometric views
and boxes are drawn on the device (u2pl_ray.method.unimatch_aug); the normaliser is clamped to 1 where
a crop is all padding (official: a division by zero).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from u2pl_ray.method.base import Method, MethodContext, StepBatch, metrics_of, output, zero_of_outputs
from u2pl_ray.method.supervised import labelled_loss, upsample
from u2pl_ray.method.unimatch_aug import cutmix_box, photometric

STRONG_WEIGHT, FP_WEIGHT = 0.25, 0.5  # per strong view, and the feature-perturbation stream
PADDED = 255


@dataclass
class StrongViews:
    """What the official dataset draws per unlabelled sample: two strong views of this batch and of the
    partner batch, and two CutMix boxes (1 inside)."""

    s1: Tensor
    s2: Tensor
    s1_mix: Tensor
    s2_mix: Tensor
    box1: Tensor  # [B, H, W] bool
    box2: Tensor


def masked_ce(logits: Tensor, target: Tensor, keep: Tensor, valid: Tensor) -> Tensor:
    """Σ CE over the kept pixels / the number of valid (non-padding) pixels (at least 1)."""
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return (ce * keep).sum() / valid.sum().clamp_min(1)


class UniMatch(Method):
    name = "unimatch"
    needs_unlabeled = True
    unlabeled_views = 2  # the CutMix partner: the same images, weak-augmented again

    def __init__(self, cfg: Any, ctx: MethodContext) -> None:
        self.cfg = cfg
        self.ignore_index = ctx.ignore_index
        self.phase = ctx.phase
        self.device = torch.device(ctx.device)
        self.mean = torch.tensor(ctx.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(ctx.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.generator = torch.Generator().manual_seed(ctx.seed)  # per rank: ranks draw differently

    @staticmethod
    def lr_iteration(iteration: int) -> int:
        return max(iteration - 1, 0)

    # -- the strong views ----------------------------------------------------------------------
    def strong_views(self, image_u: Tensor, image_u2: Tensor) -> StrongViews:
        """Draws both strong views of both weak views (photometric, on [0, 1] pixels) and the two boxes,
        per sample in the official order: s1, its box, s2, its box; then the partner's s1 and s2."""
        g, size = self.generator, image_u.shape[-1]
        if image_u.shape[-2] != size:
            raise ValueError(f"UniMatch's CutMix boxes need square crops, given {tuple(image_u.shape[-2:])}")
        pixels, pixels2 = self._to_unit(image_u), self._to_unit(image_u2)
        s1, s2, s1_mix, s2_mix, box1, box2 = [], [], [], [], [], []
        for i in range(image_u.shape[0]):
            s1.append(photometric(pixels[i], g))
            box1.append(cutmix_box(size, g))
            s2.append(photometric(pixels[i], g))
            box2.append(cutmix_box(size, g))
        for i in range(image_u2.shape[0]):
            s1_mix.append(photometric(pixels2[i], g))
            cutmix_box(size, g)  # the partner's boxes are drawn and unused, as in the official loop
            s2_mix.append(photometric(pixels2[i], g))
            cutmix_box(size, g)
        return StrongViews(
            self._from_unit(torch.stack(s1)),
            self._from_unit(torch.stack(s2)),
            self._from_unit(torch.stack(s1_mix)),
            self._from_unit(torch.stack(s2_mix)),
            torch.stack(box1).to(self.device).bool(),
            torch.stack(box2).to(self.device).bool(),
        )

    def _to_unit(self, image: Tensor) -> Tensor:
        return ((image.float() * self.std + self.mean) / 255.0).clamp(0, 1).cpu()

    def _from_unit(self, image: Tensor) -> Tensor:
        return (image.to(self.device) * 255.0 - self.mean) / self.std

    # -- the loss ------------------------------------------------------------------------------
    def losses(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        batch: StepBatch,
        *,
        epoch: int,
        iteration: int,
        autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    ) -> tuple[Tensor, dict[str, float]]:
        if batch.image_u is None or batch.image_u2 is None:
            raise ValueError("method.name='unimatch' needs two weak views of an unlabelled batch (image_u, image_u2)")
        with self.phase("strong_aug"), torch.no_grad():
            views = self.strong_views(batch.image_u, batch.image_u2)
        return self.losses_with_views(student, batch, views, autocast)

    def losses_with_views(
        self,
        student: nn.Module,
        batch: StepBatch,
        views: StrongViews,
        autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    ) -> tuple[Tensor, dict[str, float]]:
        """One iteration given its random strong views (what the official dataset hands the loop)."""
        cfg = self.cfg
        assert batch.image_u is not None and batch.image_u2 is not None
        image_l, label_l, image_u = batch.image_l, batch.label_l, batch.image_u
        num_lb = image_l.shape[0]
        size = (label_l.shape[-2], label_l.shape[-1])
        ignore = _padding(batch.ignore_u, image_u)
        ignore_mix = _padding(batch.ignore_u2, batch.image_u2)

        with self.phase("partner_pseudo_label"), torch.no_grad():
            student.eval()
            with autocast():
                logits_mix = upsample(output(student(batch.image_u2), "pred", "student"), size)
            conf_mix, mask_mix = logits_mix.softmax(dim=1).max(dim=1)
            student.train()
        box1, box2 = views.box1, views.box2
        image_s1 = torch.where(box1.unsqueeze(1), views.s1_mix, views.s1)
        image_s2 = torch.where(box2.unsqueeze(1), views.s2_mix, views.s2)

        with self.phase("student_forward"), autocast():
            out = student(torch.cat([image_l, image_u]), feature_dropout=cfg.fp_dropout)
            out_s = student(torch.cat([image_s1, image_s2]))
        preds = upsample(output(out, "pred", "student"), size)
        pred_u_w = preds[num_lb:].detach()
        pred_u_w_fp = upsample(output(out, "pred_fp", "student")[num_lb:], size)
        pred_u_s1, pred_u_s2 = upsample(output(out_s, "pred", "student"), size).chunk(2)
        conf_u_w, mask_u_w = pred_u_w.softmax(dim=1).max(dim=1)

        mask1, conf1, ignore1 = (
            torch.where(box1, a, b) for a, b in ((mask_mix, mask_u_w), (conf_mix, conf_u_w), (ignore_mix, ignore))
        )
        mask2, conf2, ignore2 = (
            torch.where(box2, a, b) for a, b in ((mask_mix, mask_u_w), (conf_mix, conf_u_w), (ignore_mix, ignore))
        )

        with self.phase("sup_loss"):
            labelled = {"pred": out["pred"][:num_lb]}
            if "aux" in out:
                labelled["aux"] = out["aux"][:num_lb]
            sup = labelled_loss(labelled, label_l, cfg, self.ignore_index)
        with self.phase("unsup_loss"):
            thr = cfg.conf_thresh
            loss_s1 = masked_ce(pred_u_s1, mask1, (conf1 >= thr) & (ignore1 != PADDED), ignore1 != PADDED)
            loss_s2 = masked_ce(pred_u_s2, mask2, (conf2 >= thr) & (ignore2 != PADDED), ignore2 != PADDED)
            used = (conf_u_w >= thr) & (ignore != PADDED)
            loss_fp = masked_ce(pred_u_w_fp, mask_u_w, used, ignore != PADDED)
        # the representation and aux heads of the other forwards have no loss here: keep them in the graph
        zero = zero_of_outputs({k: v for k, v in out.items() if k not in ("pred", "pred_fp", "aux")}) + zero_of_outputs(
            out_s
        )
        total = (sup + STRONG_WEIGHT * loss_s1 + STRONG_WEIGHT * loss_s2 + FP_WEIGHT * loss_fp) / 2.0 + zero
        share = used.sum() / (ignore != PADDED).sum().clamp_min(1)
        return total, metrics_of(
            sup=sup,
            unsup=(loss_s1 + loss_s2) / 2.0,
            fp=loss_fp,
            total=total,
            reliable_share=share,
            strong_box_share=(box1.float().mean() + box2.float().mean()) / 2,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])


def _padding(pad: Tensor | None, image: Tensor) -> Tensor:
    """The unlabelled view's padding mask (255 = padded), or none padded when the stream gave none."""
    if pad is not None:
        return pad.long()
    return torch.zeros(image.shape[0], *image.shape[-2:], dtype=torch.long, device=image.device)
