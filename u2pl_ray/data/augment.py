"""Weak augmentation of spec §6.2 on uint8 tensors: random resize, flip, crop with padding.

Official order: resize (scale drawn in two halves: [lo, 1) or [1, hi] with probability 1/2 each; size
int(h*s) x int(w*s); image bilinear align_corners=False, label nearest), horizontal flip with p = 0.5,
then pad to the crop (left/top by pad//2, right/bottom by the rest) and crop at a random offset.
The official code pads the *normalised* image with 0.0, i.e. the mean colour; this pipeline is uint8,
so it pads with the rounded mean. Labels pad with `label_pad_value` (official 0, see spec §10 #12).
Bilinear on uint8 matches the float result rounded to within 1 grey level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

_MASK64 = (1 << 64) - 1
PADDED = 255  # value of padded pixels in an unlabelled view's padding mask


def sample_rng(seed: int, epoch: int, stream: int, position: int, view: int = 0) -> np.random.Generator:
    """The generator of one sample's augmentation (its `view`-th weak view): a pure function of its key,
    so any process that handles the sample (worker thread, Ray task) draws the same parameters."""
    key = [seed & _MASK64, epoch & _MASK64, stream & _MASK64, position & _MASK64]
    return np.random.default_rng(key + [view] if view else key)


@dataclass(frozen=True)
class AugParams:
    scale: float
    height: int  # after the resize
    width: int
    flip: bool
    top: int  # crop offset in the padded, resized image
    left: int


@dataclass(frozen=True)
class WeakAugment:
    crop_size: int
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    pad_rgb: tuple[int, int, int] = (124, 116, 104)
    label_pad: int = 0

    @classmethod
    def from_config(cls, cfg) -> WeakAugment:  # cfg: DataConfig (kept untyped: no config import cycle)
        label_pad = cfg.label_pad_value if cfg.label_pad_value is not None else cfg.ignore_index
        return cls(
            crop_size=int(cfg.crop_size),
            scale_range=(float(cfg.scale_range[0]), float(cfg.scale_range[1])),
            flip=bool(cfg.flip),
            pad_rgb=tuple(int(round(v)) for v in cfg.mean),  # type: ignore[arg-type]
            label_pad=int(label_pad),
        )

    def draw(self, rng: np.random.Generator, height: int, width: int) -> AugParams:
        lo, hi = self.scale_range
        half = rng.random()
        u = rng.random()
        if lo < 1.0 < hi:  # the official two-half draw
            scale = lo + (1.0 - lo) * u if half < 0.5 else 1.0 + (hi - 1.0) * u
        else:
            scale = lo + (hi - lo) * u
        new_h, new_w = max(1, int(height * scale)), max(1, int(width * scale))
        flip = bool(rng.random() < 0.5) and self.flip
        c = self.crop_size
        padded_h, padded_w = max(new_h, c), max(new_w, c)
        top = int(rng.integers(0, padded_h - c + 1))
        left = int(rng.integers(0, padded_w - c + 1))
        return AugParams(scale, new_h, new_w, flip, top, left)

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor | None, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        params = self.draw(rng, int(image.shape[-2]), int(image.shape[-1]))
        return self.apply(image, mask, params)

    def unlabeled(self, image: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """An unlabelled image's view and its padding mask (uint8 [c,c]: 255 where the crop padded, else 0;
        methods that ignore padded pixels, such as UniMatch, read it)."""
        params = self.draw(rng, int(image.shape[-2]), int(image.shape[-1]))
        inside = torch.zeros(image.shape[-2:], dtype=torch.uint8)
        out, pad = self.apply(image, inside, params, mask_fill=PADDED)
        assert pad is not None
        return out, pad

    def apply(
        self, image: torch.Tensor, mask: torch.Tensor | None, p: AugParams, mask_fill: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """image uint8 [3,H,W], mask uint8 [H,W] or None -> [3,c,c], [c,c]; the mask pads with `mask_fill`
        (default the label pad value)."""
        image = resize_image(image, p.height, p.width)
        if mask is not None:
            mask = resize_mask(mask, p.height, p.width)
        if p.flip:
            image = image.flip(-1)
            mask = mask.flip(-1) if mask is not None else None
        fill = torch.tensor(self.pad_rgb, dtype=torch.uint8).view(3, 1, 1)
        out_image = pad_crop(image, p, self.crop_size, fill)
        fill_mask = torch.tensor(self.label_pad if mask_fill is None else mask_fill, dtype=torch.uint8)
        out_mask = pad_crop(mask, p, self.crop_size, fill_mask) if mask is not None else None
        return out_image, out_mask


def resize_image(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if (height, width) == tuple(image.shape[-2:]):
        return image
    return F.interpolate(image.unsqueeze(0), size=(height, width), mode="bilinear", align_corners=False)[0]


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if (height, width) == tuple(mask.shape[-2:]):
        return mask
    return F.interpolate(mask[None, None], size=(height, width), mode="nearest")[0, 0]


def pad_crop(x: torch.Tensor, p: AugParams, crop: int, fill: torch.Tensor) -> torch.Tensor:
    """The crop window of the padded image without materialising the padded image."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    pad_top, pad_left = max(crop - h, 0) // 2, max(crop - w, 0) // 2
    # window in the coordinates of the unpadded image
    y0, x0 = p.top - pad_top, p.left - pad_left
    out = torch.empty((*x.shape[:-2], crop, crop), dtype=x.dtype)
    out[...] = fill
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + crop, h), min(x0 + crop, w)
    if sy1 > sy0 and sx1 > sx0:
        out[..., sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = x[..., sy0:sy1, sx0:sx1]
    return out
