"""The evaluation's numbers against hand computations: a "model" that predicts what the test drew into
the image's red channel, run through the real dataset reader and the real evaluation code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_eval_support import CLASSES, NUM_CLASSES, HandMade, tiny_config

from u2pl_ray.data.codec import encode_png
from u2pl_ray.data.shards import Sample
from u2pl_ray.data.writer import DatasetWriter
from u2pl_ray.serving.evaluation import EvalReport, confusion_of_share, dataset_part

CPU = torch.device("cpu")


def _dataset(root, pairs) -> str:
    """Val rows whose image's red channel holds the prediction and whose mask is the ground truth."""
    writer = DatasetWriter(str(root), "hand-made", CLASSES, shard_rows=2)
    for i, (pred, gt) in enumerate(pairs):
        pred, gt = np.asarray(pred, dtype=np.uint8), np.asarray(gt, dtype=np.uint8)
        image = np.stack([pred, np.full_like(pred, 7), np.full_like(pred, 200)], axis=-1)
        writer.val().add(Sample(f"img_{i}", encode_png(image), encode_png(gt), *gt.shape))
    writer.part("s", "labeled").add(Sample("l", encode_png(image), encode_png(gt), *gt.shape))
    writer.finish()
    return str(root)


def _report(cfg, root, rank=0, world=1):
    info = dataset_part(cfg, "val")
    matrix, images = confusion_of_share(HandMade(), cfg, info, rank, world, NUM_CLASSES, CPU)
    return EvalReport("hand", "none", 0, root, "val", {}, list(info.class_names), matrix, images, 0.0, world), matrix


def _independent(pairs, num_classes=NUM_CLASSES, ignore=255):
    """IoU per class by counting pixels one image at a time: no confusion matrix."""
    inter, union, correct, valid = np.zeros(num_classes), np.zeros(num_classes), 0, 0
    for pred, gt in pairs:
        pred, gt = np.asarray(pred), np.asarray(gt)
        keep = gt != ignore
        correct += int(((pred == gt) & keep).sum())
        valid += int(keep.sum())
        for c in range(num_classes):
            inter[c] += ((pred == c) & (gt == c) & keep).sum()
            union[c] += (((pred == c) | (gt == c)) & keep).sum()
    iou = inter / (union + 1e-10)
    return iou, iou.mean(), correct / valid


def test_hand_computed_case(tmp_path):
    pairs = [
        ([[0, 1, 1], [1, 1, 0]], [[0, 0, 1], [1, 255, 2]]),
        ([[3, 0]], [[3, 3]]),
    ]
    root = _dataset(tmp_path / "ds", pairs)
    report, _ = _report(tiny_config(root, eval={"mode": "whole"}), root)
    # class 0: 1 hit of 4 pixels in the union; 1: 2 of 3; 2: 0 of 1; 3: 1 of 2 (the 255 pixel counts nowhere)
    assert report.iou == pytest.approx([1 / 4, 2 / 3, 0.0, 1 / 2])
    assert report.miou == pytest.approx((1 / 4 + 2 / 3 + 0 + 1 / 2) / 4)
    assert report.pixel_accuracy == pytest.approx(4 / 7)
    assert report.num_images == 2
    row = report.to_json()["per_class"][1]
    assert row == {"id": 1, "name": "disc", "iou": pytest.approx(2 / 3), "gt_pixels": 2}
    assert "mIoU" in report.table() and "35.42" in report.table()


def test_random_predictions_and_shares_sum_to_the_whole(tmp_path):
    rng = np.random.default_rng(5)
    pairs = []
    for h, w in [(7, 9), (12, 5), (6, 6), (10, 11), (3, 14)]:
        gt = rng.integers(0, NUM_CLASSES, (h, w))
        gt[rng.random((h, w)) < 0.1] = 255
        pred = np.where(rng.random((h, w)) < 0.6, np.minimum(gt, 3), rng.integers(0, NUM_CLASSES, (h, w)))
        pairs.append((pred, gt))
    root = _dataset(tmp_path / "ds", pairs)
    cfg = tiny_config(root, eval={"mode": "whole", "flip": True, "scales": [1.0]})
    report, whole = _report(cfg, root)
    iou, miou, acc = _independent(pairs)
    np.testing.assert_allclose(report.iou, iou, rtol=1e-12)
    assert report.miou == pytest.approx(miou) and report.pixel_accuracy == pytest.approx(acc)
    shares = [_report(cfg, root, rank, 3) for rank in range(3)]
    assert sum(r.num_images for r, _ in shares) == 5
    assert np.array_equal(sum(m for _, m in shares), whole)


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_center_mode_pads_labels_like_the_official_protocol(tmp_path, variant):
    rng = np.random.default_rng(1)
    small = (rng.integers(0, 3, (20, 30)), rng.integers(0, NUM_CLASSES, (20, 30)))  # padded to 32 x 32
    large = (rng.integers(0, 4, (40, 50)), rng.integers(0, NUM_CLASSES, (40, 50)))  # cut to its centre
    root = _dataset(tmp_path / "ds", [small, large])
    cfg = tiny_config(root, eval={"mode": "center", "crop_size": 32}, method={"variant": variant})
    report, _ = _report(cfg, root)

    pad_label = 0 if variant == "official" else 255
    # padding 12 rows (6 above, 6 below) and 2 columns (1, 1); padded image pixels are the mean colour,
    # which the hand-made model reads as red 124 -> class 3
    pred_small = np.pad(small[0], ((6, 6), (1, 1)), constant_values=3)
    gt_small = np.pad(small[1], ((6, 6), (1, 1)), constant_values=pad_label)
    pred_large, gt_large = large[0][4:36, 9:41], large[1][4:36, 9:41]
    iou, miou, acc = _independent([(pred_small, gt_small), (pred_large, gt_large)])
    np.testing.assert_allclose(report.iou, iou, rtol=1e-12)
    assert report.miou == pytest.approx(miou) and report.pixel_accuracy == pytest.approx(acc)
    if variant == "official":  # the padded area is scored as background
        assert int(report.confusion[0].sum()) == int((gt_small == 0).sum() + (gt_large == 0).sum())
