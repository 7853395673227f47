"""Strong augmentation of the unlabelled batch: CutMix, CutOut, ClassMix and the per-iteration gate (spec §3.4).

Every draw comes from an explicit torch.Generator, in the official order: one gate draw per semi
iteration, then per sample the box width, box x, box y (CutMix/CutOut) or one permutation (ClassMix).
"""

from __future__ import annotations

import torch
from torch import Tensor

STRONG_AUGS = ("cutmix", "cutout", "classmix", "none")


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high) (numpy's randint convention)."""
    return int(torch.randint(low, high, (1,), generator=generator).item())


def gate(prob: float, generator: torch.Generator) -> bool:
    """The 50 % coin: drawn every semi iteration, whether or not an augmentation is configured."""
    return float(torch.rand((), generator=generator).item()) < prob


def cutmix_box(height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a box of area ~H*W/2: w uniform in [W//2+1, W), h = round(H*W/2 / w).

    numpy's randint truncates the float bound W/2+1 to W//2+1; Python's round, like np.round, rounds
    half to even.
    """
    if width < 3 or height < 2:
        raise ValueError(f"CutMix needs an image of at least 2x3 pixels, given {height}x{width}")
    box_w = _randint(width // 2 + 1, width, generator)
    box_h = int(round(height * width / 2 / box_w))
    x0 = _randint(0, width - box_w + 1, generator)
    y0 = _randint(0, height - box_h + 1, generator)
    return y0, y0 + box_h, x0, x0 + box_w


def box_masks(batch: int, height: int, width: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """[B,H,W] bool, True outside each sample's box (the pixels a sample keeps), one box per sample."""
    keep = torch.ones(batch, height, width, dtype=torch.bool, device=device)
    for i in range(batch):
        y0, y1, x0, x1 = cutmix_box(height, width, generator)
        keep[i, y0:y1, x0:x1] = False
    return keep


def classmix_masks(pseudo_label: Tensor, generator: torch.Generator) -> Tensor:
    """[B,H,W] bool: per sample, the pixels whose pseudo-label is in a random n // 2 of its n classes (the
    official `generate_class_mask`: 3 classes give 1, a single class gives none)."""
    masks = []
    for labels_i in pseudo_label:
        classes = torch.unique(labels_i)  # ascending
        order = torch.randperm(len(classes), generator=generator).to(classes.device)
        chosen = classes[order][: len(classes) // 2]
        masks.append(torch.isin(labels_i, chosen))
    return torch.stack(masks)


def _mix(x: Tensor, keep: Tensor) -> Tensor:
    """x_i where keep, else x_{(i+1) mod B}: the box comes from the next image, cyclically."""
    nxt = torch.roll(x, shifts=-1, dims=0)
    while keep.dim() < x.dim():
        keep = keep.unsqueeze(1)
    return torch.where(keep, x, nxt)


def strong_augment(
    image: Tensor,
    pseudo_label: Tensor,
    confidence: Tensor,
    mode: str,
    generator: torch.Generator,
    *,
    ignore_index: int = 255,
) -> tuple[Tensor, Tensor, Tensor]:
    """Mix the unlabelled batch: image [B,3,H,W], pseudo_label [B,H,W] long, confidence [B,H,W].

    cutmix/classmix: image, pseudo-label and confidence of sample i take the next sample's pixels where
    the sample's mask is False (one mask shared by the three). cutout: the box is zeroed in the image
    and the confidence and its pseudo-label set to `ignore_index`. The inputs are not modified.
    """
    batch, _, height, width = image.shape
    if mode == "none":
        return image, pseudo_label, confidence
    if mode == "classmix":
        keep = classmix_masks(pseudo_label, generator)
    elif mode in ("cutmix", "cutout"):
        keep = box_masks(batch, height, width, generator, image.device)
    else:
        raise ValueError(f"method.strong_aug must be one of {STRONG_AUGS}, given {mode!r}")
    if mode == "cutout":
        image = image * keep.unsqueeze(1).to(image.dtype)
        pseudo_label = pseudo_label.masked_fill(~keep, ignore_index)
        confidence = confidence * keep.to(confidence.dtype)
        return image, pseudo_label, confidence
    return _mix(image, keep), _mix(pseudo_label, keep), _mix(confidence, keep)
