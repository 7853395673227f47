"""Weak augmentation (spec §6.2) against hand-computed cases and a slow literal reference."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from u2pl_ray.data.augment import AugParams, WeakAugment, sample_rng


def reference(image: torch.Tensor, mask: torch.Tensor, p: AugParams, aug: WeakAugment):
    """The official order written out literally: float bilinear resize, flip, pad the whole image
    (left/top pad//2), then crop."""
    img = F.interpolate(image[None].float(), size=(p.height, p.width), mode="bilinear", align_corners=False)[0]
    msk = F.interpolate(mask[None, None].float(), size=(p.height, p.width), mode="nearest")[0, 0]
    if p.flip:
        img, msk = img.flip(-1), msk.flip(-1)
    c = aug.crop_size
    ph, pw = max(c - p.height, 0), max(c - p.width, 0)
    border = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    img = torch.stack([F.pad(img[k], border, value=float(aug.pad_rgb[k])) for k in range(3)])
    msk = F.pad(msk, border, value=float(aug.label_pad))
    return img[:, p.top : p.top + c, p.left : p.left + c], msk[p.top : p.top + c, p.left : p.left + c]


def test_hand_computed_pad_and_crop_without_resize():
    aug = WeakAugment(crop_size=4, scale_range=(1.0, 1.0), flip=False, pad_rgb=(1, 2, 3), label_pad=9)
    image = torch.arange(12, dtype=torch.uint8).view(3, 2, 2) + 100
    mask = torch.tensor([[5, 6], [7, 8]], dtype=torch.uint8)
    out_img, out_mask = aug.apply(image, mask, AugParams(1.0, 2, 2, False, 0, 0))
    # 2x2 padded to 4x4: pad 2 in each direction, 1 before and 1 after
    assert out_mask.tolist() == [[9, 9, 9, 9], [9, 5, 6, 9], [9, 7, 8, 9], [9, 9, 9, 9]]
    assert out_img[0].tolist() == [[1, 1, 1, 1], [1, 100, 101, 1], [1, 102, 103, 1], [1, 1, 1, 1]]
    assert out_img[2, 0, 0] == 3


def test_flip_then_crop_offset_hand_computed():
    aug = WeakAugment(crop_size=2, scale_range=(1.0, 1.0), flip=True, label_pad=0)
    mask = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=torch.uint8)
    image = torch.zeros(3, 3, 3, dtype=torch.uint8)
    _, out = aug.apply(image, mask, AugParams(1.0, 3, 3, True, 1, 0))
    assert out.tolist() == [[6, 5], [9, 8]]  # flipped rows [3,2,1]/[6,5,4]/[9,8,7], crop at row 1, col 0


@pytest.mark.parametrize("key", range(12))
def test_fast_path_matches_literal_reference(key):
    aug = WeakAugment(crop_size=48, scale_range=(0.5, 2.0), flip=True, pad_rgb=(124, 116, 104), label_pad=255)
    gen = torch.Generator().manual_seed(key)
    h, w = int(torch.randint(20, 70, (1,), generator=gen)), int(torch.randint(20, 70, (1,), generator=gen))
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
    mask = torch.randint(0, 6, (h, w), dtype=torch.uint8, generator=gen)
    params = aug.draw(sample_rng(7, 1, 0, key), h, w)
    fast_img, fast_mask = aug.apply(image, mask, params)
    ref_img, ref_mask = reference(image, mask, params, aug)
    assert fast_img.dtype == torch.uint8 and fast_img.shape == (3, 48, 48)
    assert torch.equal(fast_mask, ref_mask.to(torch.uint8))
    # uint8 bilinear rounds where the float reference does not
    assert (fast_img.float() - ref_img).abs().max() <= 1.0


def test_scale_draw_is_the_official_two_half_draw():
    aug = WeakAugment(crop_size=8, scale_range=(0.5, 2.0))
    scales = np.array([aug.draw(sample_rng(0, 0, 0, i), 100, 100).scale for i in range(4000)])
    below = scales < 1.0
    assert 0.46 < below.mean() < 0.54  # half the samples shrink although [0.5, 1) is the shorter interval
    assert scales[below].min() >= 0.5 and scales[~below].max() <= 2.0
    # uniform within each half: the means of the halves are the interval midpoints
    assert abs(scales[below].mean() - 0.75) < 0.02 and abs(scales[~below].mean() - 1.5) < 0.04
    sizes = {aug.draw(sample_rng(0, 0, 0, i), 100, 100).height for i in range(50)}
    assert all(isinstance(s, int) for s in sizes)


def test_draws_are_a_function_of_the_key_only():
    aug = WeakAugment(crop_size=16)
    a = aug.draw(sample_rng(3, 2, 1, 40), 50, 60)
    b = aug.draw(sample_rng(3, 2, 1, 40), 50, 60)
    c = aug.draw(sample_rng(3, 2, 1, 41), 50, 60)
    d = aug.draw(sample_rng(3, 3, 1, 40), 50, 60)
    assert a == b
    assert a != c and a != d


def test_from_config_pads_with_rounded_mean_and_variant_label_pad():
    from u2pl_ray.config import load_config

    official = WeakAugment.from_config(load_config(None, ["data.crop_size=32"]).data)
    paper = WeakAugment.from_config(load_config(None, ["data.crop_size=32", "method.variant=paper"]).data)
    assert official.pad_rgb == (124, 116, 104)  # round([123.675, 116.28, 103.53])
    assert official.label_pad == 0 and paper.label_pad == 255
    assert official.crop_size == 32 and official.scale_range == (0.5, 2.0)
