import math

import pytest
import torch

from u2pl_ray.metrics import ConfusionMatrix


def _reference(preds, targets, num_classes, ignore=255):
    """Per-class intersection/union by looping over pixels, as the official intersectionAndUnion."""
    inter = [0] * num_classes
    area_p = [0] * num_classes
    area_t = [0] * num_classes
    for pred, target in zip(preds, targets):
        for p, t in zip(pred.flatten().tolist(), target.flatten().tolist()):
            if t == ignore:
                continue
            area_p[p] += 1
            area_t[t] += 1
            inter[t] += p == t
    union = [area_p[c] + area_t[c] - inter[c] for c in range(num_classes)]
    return inter, union


def test_hand_computed_case():
    # 2x3 image, classes {0,1,2}, one ignored pixel.
    target = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 1, 0]]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    # class 0: I=1, U = #t0 2 + #p0 1 - 1 = 2; class 1: I=2, U = 2 + 4 - 2 = 4; class 2: I=0, U=1
    assert cm.iou_per_class().tolist() == pytest.approx([1 / 2, 2 / 4, 0.0], abs=1e-9)
    assert cm.miou() == pytest.approx((1 / 2 + 2 / 4 + 0) / 3, abs=1e-9)
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)
    assert cm.mat.sum().item() == 5


def test_matches_reference_on_random_batches_and_logits():
    g = torch.Generator().manual_seed(0)
    c = 5
    cm = ConfusionMatrix(c)
    preds, targets = [], []
    for _ in range(3):
        logits = torch.randn(2, c, 7, 9, generator=g)
        target = torch.randint(0, c, (2, 7, 9), generator=g)
        target[torch.rand(2, 7, 9, generator=g) < 0.2] = 255
        cm.update(logits, target)  # logits are arg-maxed over dim 1
        preds.append(logits.argmax(1))
        targets.append(target)
    inter, union = _reference(preds, targets, c)
    expected = [i / (u + 1e-10) for i, u in zip(inter, union)]
    assert cm.iou_per_class().tolist() == pytest.approx(expected, abs=1e-12)
    assert cm.miou() == pytest.approx(sum(expected) / c, abs=1e-12)
    valid = sum((t != 255).sum().item() for t in targets)
    assert cm.pixel_accuracy() == pytest.approx(sum(inter) / valid)


def test_absent_class_counts_as_zero_in_the_mean():
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    assert cm.iou_per_class().tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0])
    assert cm.miou() == pytest.approx(0.5)


def test_merge_and_all_reduce_sum_like_one_matrix():
    g = torch.Generator().manual_seed(1)
    parts = [(torch.randint(0, 3, (4, 4), generator=g), torch.randint(0, 3, (4, 4), generator=g)) for _ in range(2)]
    whole = ConfusionMatrix(3)
    workers = [ConfusionMatrix(3), ConfusionMatrix(3)]
    for w, (p, t) in zip(workers, parts):
        w.update(p, t)
        whole.update(p, t)
    merged = ConfusionMatrix(3).merge(workers[0]).merge(workers[1])
    assert torch.equal(merged.mat, whole.mat)

    # An all-reduce that sums in place across "ranks": here both matrices live in this process.
    def fake_sum(t: torch.Tensor) -> None:
        t.copy_(workers[0].mat + workers[1].mat)

    workers[0].all_reduce(fake_sum)
    assert torch.equal(workers[0].mat, whole.mat)
    assert workers[0].miou() == pytest.approx(whole.miou())
    # Identity reduce in one process leaves the counts alone.
    before = whole.mat.clone()
    whole.all_reduce(lambda t: None)
    assert torch.equal(whole.mat, before)


def test_bad_labels_are_errors_that_name_the_value():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="target label 7"):
        cm.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[7, 255]]))
    with pytest.raises(ValueError, match="predicted label 3"):
        cm.update(torch.tensor([[3, 0]]), torch.tensor([[0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 2), torch.zeros(3, 2))
    assert cm.mat.sum().item() == 0  # nothing counted from rejected batches


def test_empty_matrix():
    cm = ConfusionMatrix(2)
    assert cm.pixel_accuracy() == 0.0
    assert math.isclose(cm.miou(), 0.0)
