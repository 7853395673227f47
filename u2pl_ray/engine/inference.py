"""Turning a segmentation network into per-pixel logits for one image: whole, centre crop, sliding window.

Pure PyTorch, shared by in-training validation, `u2pl_ray.evaluate`, `predict` and `export` checks.
Images are normalised float tensors [1, 3, H, W]; labels are int64 [H, W] with the ignore index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Mode = Literal["whole", "center", "slide"]


@dataclass(frozen=True)
class InferenceSpec:
    mode: Mode = "whole"
    crop_size: int = 513
    stride_ratio: float = 2 / 3
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    label_pad_value: int = 255  # centre mode pads labels with this (the official VOC protocol uses 0)

    @property
    def stride(self) -> int:
        return max(1, math.ceil(self.crop_size * self.stride_ratio))


def _upsample(logits: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


def forward_logits(model: nn.Module, image: Tensor) -> Tensor:
    """The network's class logits, upsampled to the input size, in float32."""
    out = model(image)
    logits = out["pred"] if isinstance(out, dict) else out
    return _upsample(logits.float(), (int(image.shape[-2]), int(image.shape[-1])))


def _pad_to(image: Tensor, height: int, width: int) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pads (the mean colour once normalised) bottom/right up to at least height x width."""
    pad_h, pad_w = max(height - image.shape[-2], 0), max(width - image.shape[-1], 0)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
    return image, (pad_h, pad_w)


def sliding_window_logits(model: nn.Module, image: Tensor, crop: int, stride: int, num_classes: int) -> Tensor:
    """Logits summed over crop x crop windows with the given stride, divided by the per-pixel count."""
    height, width = image.shape[-2:]
    padded, _ = _pad_to(image, crop, crop)
    ph, pw = padded.shape[-2:]
    rows = math.ceil(max(ph - crop, 0) / stride) + 1
    cols = math.ceil(max(pw - crop, 0) / stride) + 1
    total = padded.new_zeros((image.shape[0], num_classes, ph, pw))
    count = padded.new_zeros((1, 1, ph, pw))
    for r in range(rows):
        for c in range(cols):
            y0, x0 = min(r * stride, ph - crop), min(c * stride, pw - crop)
            window = padded[..., y0 : y0 + crop, x0 : x0 + crop]
            total[..., y0 : y0 + crop, x0 : x0 + crop] += forward_logits(model, window)
            count[..., y0 : y0 + crop, x0 : x0 + crop] += 1
    return (total / count)[..., :height, :width]


def center_crop(image: Tensor, label: Tensor, crop: int, label_pad_value: int) -> tuple[Tensor, Tensor]:
    """Pads (image with 0, label with `label_pad_value`) to at least crop x crop, then takes the centre.

    Padding is split pad//2 before and the rest after, as the official `Crop` does.
    """
    height, width = image.shape[-2:]
    pad_h, pad_w = max(crop - height, 0), max(crop - width, 0)
    if pad_h or pad_w:
        border = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        image = F.pad(image, border, value=0.0)
        label = F.pad(label, border, value=label_pad_value)
    height, width = image.shape[-2:]
    y0, x0 = (height - crop) // 2, (width - crop) // 2
    return image[..., y0 : y0 + crop, x0 : x0 + crop], label[..., y0 : y0 + crop, x0 : x0 + crop]


def _single_scale(model: nn.Module, image: Tensor, spec: InferenceSpec, num_classes: int) -> Tensor:
    if spec.mode == "slide":
        return sliding_window_logits(model, image, spec.crop_size, spec.stride, num_classes)
    return forward_logits(model, image)


@torch.no_grad()
def predict_logits(
    model: nn.Module, image: Tensor, label: Tensor | None, spec: InferenceSpec, num_classes: int
) -> tuple[Tensor, Tensor | None]:
    """Logits [B, C, H', W'] for the evaluated region and the label cut to the same region.

    `center` evaluates the padded centre crop (official in-training protocol); `whole` and `slide`
    evaluate the full image. Scales resize the input (bilinear, align_corners=True) and average the
    logits back at the evaluated size; `flip` adds the mirrored prediction.
    """
    if spec.mode == "center":
        if label is None:
            label = torch.full(image.shape[-2:], 255, dtype=torch.long, device=image.device)
        image, label = center_crop(image, label, spec.crop_size, spec.label_pad_value)
    height, width = image.shape[-2:]
    summed = None
    for scale in spec.scales:
        size = (max(1, int(height * scale)), max(1, int(width * scale)))
        scaled = _upsample(image, size) if scale != 1.0 else image
        views = [scaled, scaled.flip(-1)] if spec.flip else [scaled]
        for i, view in enumerate(views):
            logits = _single_scale(model, view, spec, num_classes)
            if i == 1:
                logits = logits.flip(-1)
            logits = _upsample(logits, (height, width))
            summed = logits if summed is None else summed + logits
    assert summed is not None
    return summed / (len(spec.scales) * (2 if spec.flip else 1)), label
