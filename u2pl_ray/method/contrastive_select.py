"""Which pixels are anchors, prototype members and negative keys of each class (spec §5.1-5.2, Eq. 9-15).

All selections work on cat(labelled, unlabelled) at the representation resolution h x w. The two
variants differ only in the masks built here:

* official: one-hot with the batch quirk (slot 0 of each half = multi-hot union of the half, the
  other slots empty), unlabelled anchors from the lowest alpha_t % entropy, prototype over all
  low-valid pixels, negatives = high-valid & (labelled: top-r_l & not the class -> always empty;
  unlabelled: rank in [r_l, r_h)).
* paper: per-sample one-hot, unlabelled anchors = reliable pixels (H <= gamma_t), prototype = mean of
  the anchor set, labelled negatives = y != c with c in the top r_l, unlabelled negatives = unreliable
  pixels with c ranked in [r_l, r_h), no pseudo-label condition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Selection:
    anchor_flat: Tensor  # [K] flat pixel index b*h*w + y*w + x, class-major, (b, y, x) order within
    anchor_counts: list[int]  # per class
    has_low_valid: list[bool]  # per class: some pixel of the class passes the low mask (official valid class)
    proto_mask: Tensor  # [B, C, h*w] bool, pixels averaged into each class's prototype
    neg_flat: Tensor  # [M] flat pixel index of each negative key, class-major
    neg_class: Tensor  # [M] its class


def downsample_nearest(maps: list[Tensor], size: tuple[int, int]) -> list[Tensor]:
    """Legacy nearest (F.interpolate mode='nearest', src = floor(dst * in/out)) of [B,H,W] maps.

    Label values (<= 255) and booleans are exact in float32; one interpolate call for all maps.
    """
    stacked = torch.stack([m.float() for m in maps], dim=1)
    small = F.interpolate(stacked, size=size, mode="nearest")
    return [small[:, i].to(m.dtype) for i, m in enumerate(maps)]


def full_res_masks(
    label_l: Tensor,
    pseudo_u: Tensor,
    entropy_u: Tensor,
    low_thresh: Tensor,
    high_thresh: Tensor,
    *,
    variant: str,
    negative_high_entropy: bool = True,
    ignore_index: int = 255,
) -> tuple[Tensor, Tensor]:
    """Anchor ("low") and negative ("high") pixel masks of cat(labelled, unlabelled), [B,H,W] bool.

    Labelled pixels: label != ignore in both. Unlabelled anchors: entropy <= low_thresh (official,
    the alpha_t percentile) or entropy <= high_thresh (paper, gamma_t = the 100 - alpha_t percentile);
    unlabelled negatives: entropy >= high_thresh, or every (valid) pixel when negative_high_entropy is off.
    """
    valid_l = label_l != ignore_index
    valid_u = pseudo_u != ignore_index
    anchor_thresh = low_thresh if variant == "official" else high_thresh
    low_u = (entropy_u <= anchor_thresh) & valid_u
    if negative_high_entropy:
        high_u = (entropy_u >= high_thresh) & valid_u
    elif variant == "official":
        high_u = torch.ones_like(valid_u)  # its one-hot already excludes ignored pixels
    else:
        high_u = valid_u  # paper negatives have no label condition, so keep CutOut's 255 out here
    return torch.cat([valid_l, low_u]), torch.cat([valid_l, high_u])


def membership(label: Tensor, num_labeled: int, num_classes: int, *, variant: str, ignore_index: int = 255) -> Tensor:
    """[B,C,h,w] bool: pixel (b,y,x) counts as a member of class c.

    paper: label[b] == c. official (label_onehot quirk, spec §5.1): within each half, slot 0 holds at
    (y,x) every class that any sample of the half has there (255 read as class 0), cleared where
    sample 0 is ignore; slots 1.. are empty.
    """
    classes = torch.arange(num_classes, device=label.device).view(1, -1, 1, 1)
    if variant == "paper":
        return label.unsqueeze(1) == classes
    out = torch.zeros(label.shape[0], num_classes, *label.shape[1:], dtype=torch.bool, device=label.device)
    for lo, hi in ((0, num_labeled), (num_labeled, label.shape[0])):
        if hi <= lo:
            continue
        half = label[lo:hi]
        as_class = half.masked_fill(half == ignore_index, 0)
        union = (as_class.unsqueeze(1) == classes).any(dim=0)  # [C,h,w]
        out[lo] = union & (half[0] != ignore_index)
    return out


def class_ranks(prob: Tensor) -> Tensor:
    """[M,C] rank of each class in the descending order of `prob` [M,C] (0 = most likely); ties by class id."""
    order = torch.argsort(prob, dim=1, descending=True, stable=True)
    positions = torch.arange(prob.shape[1], device=prob.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _pixels(x: Tensor, flat: Tensor) -> Tensor:
    """Rows [M,C] of a [B,C,h,w] tensor at flat pixel indices."""
    per_image = x.shape[2] * x.shape[3]
    return x.flatten(2)[flat // per_image, :, flat % per_image]


def _class_major(mask: Tensor) -> tuple[Tensor, Tensor]:
    """(class, flat pixel) of the True entries of [B,C,h,w], sorted by class then (b,y,x)."""
    num_classes = mask.shape[1]
    nz = mask.transpose(0, 1).reshape(num_classes, -1).nonzero()
    return nz[:, 0], nz[:, 1]


def select(
    prob: Tensor,
    label: Tensor,
    low_mask: Tensor,
    high_mask: Tensor,
    *,
    num_labeled: int,
    variant: str,
    anchor_threshold: float,
    negative_threshold: float,
    low_rank: int,
    high_rank: int,
    ignore_index: int = 255,
) -> Selection:
    """prob [B,C,h,w] (train-mode teacher softmax); label, low_mask, high_mask [B,h,w] at h x w."""
    if variant not in ("official", "paper"):
        raise ValueError(f"method.variant must be 'official' or 'paper', given {variant!r}")
    num_classes = prob.shape[1]
    member = membership(label, num_labeled, num_classes, variant=variant, ignore_index=ignore_index)
    low_valid = member & low_mask.unsqueeze(1)
    anchors = low_valid & (prob > anchor_threshold)
    proto_mask = low_valid if variant == "official" else anchors

    # Negatives are decided per candidate pixel, so the class ranks are computed only there.
    # official: high_valid needs the class in the one-hot while the labelled rank mask needs it
    # absent, so labelled pixels never qualify; unlabelled ones must be one-hot members.
    per_image = label.shape[1] * label.shape[2]
    candidates = high_mask.clone()
    if variant == "official":
        candidates[:num_labeled] = False
        candidates &= member.any(dim=1)
    pix = candidates.flatten().nonzero().squeeze(1)
    p = _pixels(prob, pix)
    ranks = class_ranks(p)
    labelled = (pix < num_labeled * per_image).unsqueeze(1)
    is_member = _pixels(member, pix)
    top = ranks < low_rank
    mid = (ranks >= low_rank) & (ranks < high_rank)
    negatives = (p < negative_threshold) & torch.where(labelled, top & ~is_member, mid)
    if variant == "official":
        negatives &= is_member

    anchor_class, anchor_flat = _class_major(anchors)
    counts = torch.stack(
        [
            low_valid.transpose(0, 1).reshape(num_classes, -1).any(dim=1).long(),  # as long, to stack
            torch.bincount(anchor_class, minlength=num_classes),
        ]
    ).tolist()  # one device-to-host copy
    neg_class, neg_row = negatives.t().nonzero().unbind(1)  # class-major, (b, y, x) order within
    neg_flat = pix[neg_row]
    return Selection(
        anchor_flat=anchor_flat,
        anchor_counts=counts[1],
        has_low_valid=[bool(n) for n in counts[0]],
        proto_mask=proto_mask.flatten(2),
        neg_flat=neg_flat,
        neg_class=neg_class,
    )


def gather_pixels(features: Tensor, flat: Tensor) -> Tensor:
    """Rows [M, D] of features [B,D,h,w] at flat pixel indices b*h*w + y*w + x (differentiable)."""
    batch, dim = features.shape[:2]
    per_image = features.shape[2] * features.shape[3]
    flat = flat.to(features.device)
    return features.reshape(batch, dim, per_image)[flat // per_image, :, flat % per_image]
