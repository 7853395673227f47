import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from u2pl_ray.method.supervised import ce_loss, ohem_loss, supervised_loss, upsample
from u2pl_ray.method.unsupervised import unsupervised_loss


def test_ce_ignores_255_and_averages_valid_pixels():
    logits = torch.tensor([[[[2.0, 0.0, 0.0]], [[0.0, 1.0, 5.0]]]])  # [1, 2 classes, 1, 3]
    target = torch.tensor([[[0, 1, 255]]])
    l0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    l1 = -math.log(math.e / (1 + math.e))
    assert ce_loss(logits, target).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def _probs_logits(p_target: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits whose class-0 probability is p for each pixel; target 0."""
    p = torch.tensor(p_target)
    logits = torch.stack([torch.log(p), torch.log1p(-p)]).view(1, 2, 1, -1)
    return logits, torch.zeros(1, 1, len(p_target), dtype=torch.long)


def test_ohem_threshold_is_max_of_thresh_and_min_kept_th_probability():
    logits, target = _probs_logits([0.1, 0.5, 0.8, 0.9, 0.95, 0.99])
    nll = -torch.log(torch.tensor([0.1, 0.5, 0.8, 0.9, 0.95, 0.99]))
    # min_kept 2: 2nd smallest p is 0.5 < 0.7 -> threshold 0.7 keeps {0.1, 0.5}
    assert torch.isclose(ohem_loss(logits, target, thresh=0.7, min_kept=2), nll[:2].mean())
    # min_kept 4: 4th smallest is 0.9 > 0.7 -> threshold 0.9 keeps 4 pixels (ties included)
    assert torch.isclose(ohem_loss(logits, target, thresh=0.7, min_kept=4), nll[:4].mean())
    # fewer valid pixels than min_kept: every valid pixel
    target_ign = target.clone()
    target_ign[0, 0, :3] = 255
    assert torch.isclose(ohem_loss(logits, target_ign, thresh=0.7, min_kept=5), nll[3:].mean())
    # min_kept 0: plain cross-entropy, as the official OhemCrossEntropy2dTensor (no pixel dropped)
    assert torch.isclose(ohem_loss(logits, target, thresh=0.85, min_kept=0), nll.mean())


def test_supervised_loss_adds_weighted_aux_after_upsampling():
    torch.manual_seed(0)
    pred = torch.randn(2, 4, 5, 5)
    aux = torch.randn(2, 4, 3, 3)
    label = torch.randint(0, 4, (2, 17, 17))
    label[0, :4] = 255
    up = lambda x: F.interpolate(x, size=(17, 17), mode="bilinear", align_corners=True)  # noqa: E731
    expected = F.cross_entropy(up(pred), label, ignore_index=255) + 0.4 * F.cross_entropy(
        up(aux), label, ignore_index=255
    )
    got = supervised_loss(pred, label, aux=aux, criterion="ce", aux_weight=0.4)
    assert torch.allclose(got, expected)
    assert torch.allclose(supervised_loss(pred, label), F.cross_entropy(up(pred), label, ignore_index=255))
    assert upsample(pred.half(), (5, 5)).dtype == torch.float32


def test_unsupervised_filter_ties_weight_and_share():
    # 1 image, 2x3 pixels; teacher entropies chosen so that the 50th percentile hits a sample exactly
    ent = torch.tensor([[[0.1, 0.5, 0.9], [0.5, 0.3, 0.7]]])
    pseudo = torch.tensor([[[0, 1, 1], [0, 255, 1]]])
    valid_values = np.array([0.1, 0.5, 0.9, 0.5, 0.7], dtype=np.float32)
    thresh = float(np.percentile(valid_values, 50.0))
    assert thresh == np.float32(0.5)
    torch.manual_seed(1)
    pred = torch.randn(1, 2, 2, 3, requires_grad=True)
    res = unsupervised_loss(pred, pseudo, ent, 50.0)
    # kept: entropy < 0.5 strictly (both 0.5 pixels dropped) and valid -> only (0,0)
    target = torch.tensor([[[0, 255, 255], [255, 255, 255]]])
    ce = F.cross_entropy(pred, target, ignore_index=255)
    assert torch.isclose(res.loss, 6 / 1 * ce)
    assert res.reliable_share.item() == pytest.approx(1 / 5)
    assert res.threshold.item() == thresh
    assert pseudo[0, 0, 1] == 1  # input not modified
    res.loss.backward()
    assert pred.grad is not None and pred.grad[0, :, 0, 0].abs().sum() > 0 and pred.grad[0, :, 0, 1].abs().sum() == 0


def test_unsupervised_weight_has_the_official_float32_rounding():
    torch.manual_seed(2)
    b, h, w = 2, 31, 37
    ent = torch.rand(b, h, w)
    pseudo = torch.randint(0, 3, (b, h, w))
    pred = torch.randn(b, 3, h, w)
    res = unsupervised_loss(pred, pseudo, ent, 80.0)
    thresh = np.percentile(ent.numpy().flatten(), 80.0)
    target = pseudo.clone()
    target[ent >= float(thresh)] = 255
    weight = b * h * w / torch.sum(target != 255)  # the official expression (int / tensor)
    assert res.loss.item() == (weight * F.cross_entropy(pred, target, ignore_index=255)).item()


def test_unsupervised_with_nothing_kept_is_zero_not_nan():
    ent = torch.ones(1, 2, 2)
    pseudo = torch.zeros(1, 2, 2, dtype=torch.long)
    pred = torch.randn(1, 2, 2, 2, requires_grad=True)
    res = unsupervised_loss(pred, pseudo, ent, 80.0)  # all equal -> threshold = 1 -> all dropped
    assert res.loss.item() == 0.0 and res.reliable_share.item() == 0.0
    res.loss.backward()
    assert pred.grad is not None


@pytest.mark.parametrize("criterion", ["ce", "ohem"])
def test_an_all_ignored_labelled_batch_contributes_zero_not_nan(criterion):
    pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    aux = torch.randn(2, 3, 4, 4, requires_grad=True)
    label = torch.full((2, 8, 8), 255, dtype=torch.long)
    loss = supervised_loss(pred, label, aux=aux, criterion=criterion, ohem_min_kept=10)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred)) and torch.equal(aux.grad, torch.zeros_like(aux))
