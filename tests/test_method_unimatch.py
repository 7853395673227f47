"""UniMatch against an independent transcription of the official loop (tests/unimatch_reference.py), on a
small real network, plus its strong views, its lr timing and its needs from the engine."""

import pytest
import torch
from unimatch_reference import official_iteration, official_model, poly_lr_official

from u2pl_ray.config.schema import MethodConfig, ModelConfig
from u2pl_ray.method import MethodContext, StepBatch, UniMatch
from u2pl_ray.method.unimatch_aug import cutmix_box, photometric
from u2pl_ray.model import build_model

C, SIZE = 4, 32
MEAN, STD = (120.0, 110.0, 100.0), (60.0, 55.0, 50.0)


def net(seed=0, rep_head=False):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        backbone="tiny",
        output_stride=8,
        aspp_dilations=[1, 2, 3],
        decoder_channels=16,
        low_level_channels=8,
        rep_head=rep_head,
        rep_dim=8,
        dropout=0.0,
    )
    return build_model(cfg, C)


def method(conf_thresh=0.5, seed=0):
    return UniMatch(
        MethodConfig(name="unimatch", conf_thresh=conf_thresh),
        MethodContext(num_classes=C, total_epochs=2, iters_per_epoch=4, seed=seed, mean=MEAN, std=STD),
    )


def batch(seed=0, b=2):
    g = torch.Generator().manual_seed(seed)
    image = lambda: torch.randn(b, 3, SIZE, SIZE, generator=g)  # noqa: E731
    label = torch.randint(0, C, (b, SIZE, SIZE), generator=g)
    label[:, :3] = 255
    pad = torch.zeros(b, SIZE, SIZE, dtype=torch.long)
    pad[:, :, -5:] = 255  # the right edge of each crop was padding
    pad2 = torch.zeros_like(pad)
    pad2[0, -4:] = 255
    return StepBatch(image(), label, image_u=image(), ignore_u=pad, image_u2=image(), ignore_u2=pad2)


@pytest.mark.parametrize("conf_thresh", [0.0, 0.5, 0.95])
def test_one_iteration_equals_the_official_loop_given_the_same_views(conf_thresh):
    m, x = method(conf_thresh), batch()
    views = m.strong_views(x.image_u, x.image_u2)
    assert views.box1.any() or views.box2.any()
    student = net()
    torch.manual_seed(123)  # the feature dropout draws
    loss, metrics = m.losses_with_views(student, x, views)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}

    reference_net = net()
    torch.manual_seed(123)
    ref, parts = official_iteration(
        official_model(reference_net),
        x.image_l,
        x.label_l,
        x.image_u,
        views.s1,
        views.s2,
        x.ignore_u,
        views.box1.long(),
        views.box2.long(),
        x.image_u2,
        views.s1_mix,
        views.s2_mix,
        x.ignore_u2,
        conf_thresh,
    )
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-7)
    assert metrics["sup"] == pytest.approx(parts["loss_x"].item(), rel=1e-6)
    assert metrics["unsup"] == pytest.approx(parts["loss_s"].item(), rel=1e-6, abs=1e-7)
    assert metrics["fp"] == pytest.approx(parts["loss_w_fp"].item(), rel=1e-6, abs=1e-7)
    assert metrics["reliable_share"] == pytest.approx(float(parts["mask_ratio"]), rel=1e-6)
    for name, p in reference_net.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(ours[name], p.grad, rtol=1e-5, atol=1e-7)
    # the partner's pseudo-labels came from an eval-mode forward; the network is left in train mode
    assert student.training
    if conf_thresh == 0.0:
        assert metrics["reliable_share"] == pytest.approx(1.0)  # every non-padding pixel is used


def test_the_feature_perturbation_is_one_decoder_pass_over_clean_and_dropped_features():
    model, x = net(rep_head=True), torch.randn(3, 3, SIZE, SIZE)
    model.train()
    torch.manual_seed(5)
    out = model(x, feature_dropout=0.5)
    low, _, deep = model.backbone(x)
    torch.manual_seed(5)
    low_fp, deep_fp = torch.nn.functional.dropout2d(low, 0.5), torch.nn.functional.dropout2d(deep, 0.5)
    pred, rep = model.decoder(torch.cat([low, low_fp]), torch.cat([deep, deep_fp]))
    torch.testing.assert_close(out["pred"], pred[:3])
    torch.testing.assert_close(out["pred_fp"], pred[3:])
    torch.testing.assert_close(out["rep_fp"], rep[3:])
    assert set(model(x)) == {"pred", "rep"}  # no perturbation unless asked


def test_the_learning_rate_of_an_iteration_is_set_after_the_previous_step():
    total, base = 10, 0.01
    ours = [base * (1 - UniMatch.lr_iteration(k) / total) ** 0.9 for k in range(5)]
    assert ours == pytest.approx(poly_lr_official(base, total, 5))
    assert UniMatch.lr_iteration(0) == 0 and UniMatch.lr_iteration(7) == 6


def test_cutmix_boxes_follow_obtain_cutmix_box():
    g = torch.Generator().manual_seed(0)
    boxes = [cutmix_box(64, g) for _ in range(400)]
    with_box = [b for b in boxes if b.any()]
    assert 150 < len(with_box) < 250  # p = 0.5
    for b in with_box:
        ys, xs = torch.nonzero(b, as_tuple=True)
        h, w = int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)
        assert h * w == int(b.sum())  # one rectangle, inside the image
        assert 0.3 - 0.05 <= h / w <= 1 / 0.3 + 0.5  # the aspect-ratio range (int truncation aside)
        assert h * w <= 0.4 * 64 * 64


def test_strong_views_are_photometric_only_and_keep_the_pixel_range():
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, SIZE, SIZE)
    views = [photometric(image, g) for _ in range(50)]
    assert all(v.shape == image.shape and v.min() >= 0 and v.max() <= 1 for v in views)
    assert sum(not torch.equal(v, image) for v in views) > 40  # 0.8 jitter, 0.2 grey, 0.5 blur
    grey = [v for v in views if torch.equal(v[0], v[1]) and torch.equal(v[1], v[2])]
    assert 2 <= len(grey) <= 25


def test_strong_views_are_drawn_from_the_methods_generator_and_resume_with_its_state():
    a, b = method(seed=3), method(seed=3)
    x = batch()
    first = a.strong_views(x.image_u, x.image_u2)
    saved = a.state_dict()
    second = a.strong_views(x.image_u, x.image_u2)
    assert torch.equal(first.s1, b.strong_views(x.image_u, x.image_u2).s1)  # a function of the seed
    b.load_state_dict(saved)
    assert torch.equal(second.s2_mix, b.strong_views(x.image_u, x.image_u2).s2_mix)
    assert not torch.equal(first.s1, second.s1)


def test_what_unimatch_asks_of_the_engine():
    assert (UniMatch.needs_unlabeled, UniMatch.unlabeled_views, UniMatch.uses_teacher) == (True, 2, False)
    assert not UniMatch.teacher_selected(MethodConfig(), 10)
    x = batch()
    x.image_u2 = None
    with pytest.raises(ValueError, match="two weak views"):
        method().losses(net(), None, x, epoch=0, iteration=0)
