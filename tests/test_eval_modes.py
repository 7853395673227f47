"""`python -m u2pl_ray.evaluate` on a tiny checkpoint: each mode, multi-scale + flip, teacher / student,
and bad input; the confusion matrix against a per-image computation from the known images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_eval_support import (
    MEAN,
    NUM_CLASSES,
    STD,
    VAL_SIZES,
    make_checkpoint,
    make_dataset,
    sample_arrays,
    tiny_config,
)

from u2pl_ray.engine.artifacts import load_trained_model
from u2pl_ray.engine.inference import InferenceSpec, predict_logits
from u2pl_ray.evaluate import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval")
    root = make_dataset(base / "data")
    cfg = tiny_config(root, eval={"mode": "center", "crop_size": 32})  # official variant: labels padded with 0
    return make_checkpoint(base / "checkpoint_00000120", cfg), root


def _expected(checkpoint, which, spec):
    """Confusion matrix from the images as generated (not read back), one image at a time."""
    model = load_trained_model(str(checkpoint), which).model
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for i, (h, w) in enumerate(VAL_SIZES):
        image, mask = sample_arrays(i, h, w)
        x = (
            torch.from_numpy(image).permute(2, 0, 1)[None].float() - torch.tensor(MEAN).view(1, 3, 1, 1)
        ) / torch.tensor(STD).view(1, 3, 1, 1)
        logits, label = predict_logits(model, x, torch.from_numpy(mask).long(), spec, NUM_CLASSES)
        pred, label = logits.argmax(1)[0].numpy(), label.numpy()
        keep = label != 255
        np.add.at(matrix, (label[keep], pred[keep]), 1)
    return matrix


CASES = {
    "center": (["--mode", "center"], InferenceSpec("center", 32, label_pad_value=0)),
    "whole": (["--mode", "whole"], InferenceSpec("whole", 32)),
    "slide": (["--mode", "slide", "--crop-size", "24"], InferenceSpec("slide", 24)),
    "whole-ms-flip": (
        ["--mode", "whole", "--scales", "0.75", "1.25", "--flip"],
        InferenceSpec("whole", 32, scales=(0.75, 1.25), flip=True),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_modes_match_a_per_image_computation(run, tmp_path, case, capsys):
    checkpoint, _ = run
    argv, spec = CASES[case]
    out = tmp_path / "eval.json"
    assert main(["--checkpoint", str(checkpoint), "--out", str(out), *argv]) == 0
    result = json.loads(out.read_text())
    expected = _expected(checkpoint, "teacher", spec)
    assert np.array_equal(np.array(result["confusion"]), expected)
    assert result["weights"] == "teacher" and result["num_images"] == len(VAL_SIZES)
    inter = np.diag(expected)
    union = expected.sum(0) + expected.sum(1) - inter
    assert result["miou"] == pytest.approx(float(np.mean(inter / (union + 1e-10))))
    assert result["settings"]["mode"] == spec.mode
    if spec.mode == "slide":
        assert result["settings"]["stride"] == 16  # ceil(24 * 2/3)
    table = capsys.readouterr().out
    assert "mIoU" in table and "background" in table and str(out) in table


def test_center_mode_counts_the_padding_as_background(run, tmp_path):
    checkpoint, _ = run
    out = tmp_path / "eval.json"
    assert main(["--checkpoint", str(checkpoint), "--out", str(out), "--mode", "center"]) == 0
    padded = sum(32 * 32 - min(h, 32) * min(w, 32) for h, w in VAL_SIZES)
    cut = [sample_arrays(i, h, w)[1] for i, (h, w) in enumerate(VAL_SIZES)]
    background = 0
    for mask, (h, w) in zip(cut, VAL_SIZES):
        y0, x0 = max(h - 32, 0) // 2, max(w - 32, 0) // 2
        background += int((mask[y0 : y0 + 32, x0 : x0 + 32] == 0).sum())
    result = json.loads(out.read_text())
    assert result["per_class"][0]["gt_pixels"] == background + padded


def test_student_weights_and_the_checkpoint_data_default(run, tmp_path):
    checkpoint, root = run
    out_s, out_t = tmp_path / "s.json", tmp_path / "t.json"
    assert main(["--checkpoint", str(checkpoint), "--out", str(out_s), "--model", "student", "--mode", "whole"]) == 0
    assert main(["--checkpoint", str(checkpoint), "--out", str(out_t), "--data", root, "--mode", "whole"]) == 0
    student, teacher = json.loads(out_s.read_text()), json.loads(out_t.read_text())
    assert student["weights"] == "student" and student["data"] == root
    assert np.array_equal(np.array(student["confusion"]), _expected(checkpoint, "student", InferenceSpec("whole", 32)))
    assert student["confusion"] != teacher["confusion"]


def test_labelled_split_part_and_bad_input(run, tmp_path, capsys):
    checkpoint, root = run
    out = tmp_path / "eval.json"
    assert main(["--checkpoint", str(checkpoint), "--out", str(out), "--split", "1_2/labeled", "--mode", "whole"]) == 0
    assert json.loads(out.read_text())["num_images"] == 1
    assert main(["--checkpoint", str(checkpoint), "--split", "1_9/labeled"]) == 2
    assert "no split '1_9'" in capsys.readouterr().err
    assert main(["--checkpoint", str(checkpoint), "--split", "train"]) == 2
    assert "'val' or 'SPLIT/labeled'" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
