import torch
from torch import nn

from u2pl_ray.engine.inference import InferenceSpec, center_crop, predict_logits, sliding_window_logits


class PerPixel(nn.Module):
    """A 1x1 convolution: no spatial context, so every evaluation mode must agree exactly."""

    def __init__(self, classes: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 1)

    def forward(self, x):
        return {"pred": self.conv(x)}


class Strided(nn.Module):
    """Predicts at stride 4 like the real network, so upsampling paths are exercised."""

    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, classes, 4, stride=4)

    def forward(self, x):
        return {"pred": self.conv(x)}


def test_center_crop_pads_like_the_official_crop():
    image = torch.arange(2 * 3, dtype=torch.float32).view(1, 1, 2, 3).expand(1, 3, 2, 3)
    label = torch.tensor([[1, 2, 3], [4, 5, 6]])
    img, lab = center_crop(image, label, crop=5, label_pad_value=0)
    assert img.shape[-2:] == (5, 5) and lab.shape == (5, 5)
    # pad 3 rows: 1 above, 2 below; pad 2 columns: 1 left, 1 right
    assert lab[1:3, 1:4].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert lab[0].tolist() == [0] * 5 and lab[:, 0].tolist() == [0] * 5
    assert img[0, 0, 0, 0] == 0 and img[0, 0, 1, 1] == 0 and img[0, 0, 2, 3] == 5
    # larger images are cut at the centre
    big = torch.arange(49, dtype=torch.float32).view(1, 1, 7, 7).expand(1, 3, 7, 7)
    img, lab = center_crop(big, torch.zeros(7, 7, dtype=torch.long), crop=3, label_pad_value=255)
    assert img[0, 0].tolist() == [[16, 17, 18], [23, 24, 25], [30, 31, 32]]


def test_sliding_window_equals_whole_for_a_per_pixel_model():
    model = PerPixel()
    image = torch.randn(1, 3, 37, 53)
    whole = model(image)["pred"]
    slide = sliding_window_logits(model, image, crop=16, stride=11, num_classes=4)
    torch.testing.assert_close(slide, whole, rtol=1e-5, atol=1e-5)
    # an image smaller than the window is padded, evaluated, and cut back
    small = torch.randn(1, 3, 9, 12)
    torch.testing.assert_close(
        sliding_window_logits(model, small, crop=16, stride=11, num_classes=4), model(small)["pred"]
    )


def test_flip_and_scales_average_logits():
    model = PerPixel()
    image = torch.randn(1, 3, 20, 24)
    plain, _ = predict_logits(model, image, None, InferenceSpec(mode="whole"), 4)
    flipped, _ = predict_logits(model, image, None, InferenceSpec(mode="whole", flip=True), 4)
    torch.testing.assert_close(plain, flipped, rtol=1e-5, atol=1e-5)
    scaled, _ = predict_logits(model, image, None, InferenceSpec(mode="whole", scales=(0.5, 1.0)), 4)
    assert scaled.shape == plain.shape
    assert not torch.allclose(scaled, plain)


def test_modes_return_logits_at_the_evaluated_size():
    model = Strided()
    image, label = torch.randn(1, 3, 30, 45), torch.randint(0, 3, (30, 45))
    logits, lab = predict_logits(
        model, image, label, InferenceSpec(mode="center", crop_size=32, label_pad_value=255), 3
    )
    assert logits.shape == (1, 3, 32, 32) and lab.shape == (32, 32)
    assert (lab == 255).sum() == 32 * 32 - 30 * 32  # two padded rows
    logits, lab = predict_logits(model, image, label, InferenceSpec(mode="slide", crop_size=16), 3)
    assert logits.shape == (1, 3, 30, 45) and torch.equal(lab, label)
