"""UniMatch's strong views, drawn on the training device with an explicit generator.

The official code draws them in its dataset, on PIL images, from Python's and numpy's global RNGs
(`dataset/semi.py`, `dataset/transform.py`): per strong view, with probability 0.8 a colour jitter
(brightness, contrast, saturation 0.5, hue 0.25, in a random order as torchvision's ColorJitter), then
grayscale with probability 0.2, then a Gaussian blur (sigma uniform in [0.1, 2]) with probability 0.5,
and a CutMix box (`obtain_cutmix_box`, p = 0.5). The same draws here act on [0, 1] float tensors, so
the jitter is not quantised to 8 bits between its steps as PIL's is, and the blur is a true Gaussian
(kernel 2*ceil(3 sigma)+1) where PIL approximates one with box filters.
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _coin(p: float, generator: torch.Generator) -> bool:
    return float(torch.rand((), generator=generator)) < p


def color_jitter(
    image: Tensor,
    generator: torch.Generator,
    brightness: float = 0.5,
    contrast: float = 0.5,
    saturation: float = 0.5,
    hue: float = 0.25,
) -> Tensor:
    """torchvision's ColorJitter on one [3,H,W] image in [0, 1]: the four factors, applied in a random order."""
    order = torch.randperm(4, generator=generator).tolist()
    b = _uniform(1 - brightness, 1 + brightness, generator)
    c = _uniform(1 - contrast, 1 + contrast, generator)
    s = _uniform(1 - saturation, 1 + saturation, generator)
    h = _uniform(-hue, hue, generator)
    for op in order:
        if op == 0:
            image = TF.adjust_brightness(image, b)
        elif op == 1:
            image = TF.adjust_contrast(image, c)
        elif op == 2:
            image = TF.adjust_saturation(image, s)
        else:
            image = TF.adjust_hue(image, h)
    return image


def photometric(image: Tensor, generator: torch.Generator) -> Tensor:
    """One strong view of one [3,H,W] image in [0, 1] (the official order: jitter, grayscale, blur)."""
    if _coin(0.8, generator):
        image = color_jitter(image, generator)
    if _coin(0.2, generator):
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if _coin(0.5, generator):
        sigma = _uniform(0.1, 2.0, generator)
        kernel = 2 * math.ceil(3 * sigma) + 1
        image = TF.gaussian_blur(image, [kernel, kernel], [sigma, sigma])
    return image


def cutmix_box(
    size: int,
    generator: torch.Generator,
    p: float = 0.5,
    size_min: float = 0.02,
    size_max: float = 0.4,
    ratio_1: float = 0.3,
    ratio_2: float = 1 / 0.3,
) -> Tensor:
    """[size, size] float mask, 1 inside the box: the official `obtain_cutmix_box`. With probability
    1 - p no box; else an area drawn uniformly in [size_min, size_max] x size^2 and, until the box fits,
    an aspect ratio in [ratio_1, ratio_2] and a corner (x, y) uniform over the image."""
    mask = torch.zeros(size, size)
    if float(torch.rand((), generator=generator)) > p:
        return mask
    area = _uniform(size_min, size_max, generator) * size * size
    while True:
        ratio = _uniform(ratio_1, ratio_2, generator)
        width, height = int(math.sqrt(area / ratio)), int(math.sqrt(area * ratio))
        x = int(torch.randint(0, size, (), generator=generator))
        y = int(torch.randint(0, size, (), generator=generator))
        if x + width <= size and y + height <= size:
            break
    mask[y : y + height, x : x + width] = 1
    return mask
