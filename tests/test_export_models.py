"""`python -m u2pl_ray.export`: the exported ONNX / TorchScript model, run by onnxruntime / torch.jit,
equals the eager model within the stated tolerance at sizes other than the export size; the JSON next
to it says how to use it; a difference beyond the tolerance is caught."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from test_eval_support import MEAN, NUM_CLASSES, STD, make_checkpoint, sample_arrays, tiny_config

from u2pl_ray.engine.artifacts import load_trained_model
from u2pl_ray.export import main
from u2pl_ray.serving.exporting import ATOL, RTOL, ExportCheckError, compare


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("export") / "checkpoint_00000120", tiny_config(None))


def _eager_and_input(checkpoint, which, height, width, index=3):
    """A real image, normalised as the JSON says, and the eager logits at its size."""
    model = load_trained_model(str(checkpoint), which).model
    image, _ = sample_arrays(index, height, width)
    x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(
        STD
    ).view(1, 3, 1, 1)
    x = torch.cat([x, x.flip(-1)])  # a batch of two
    with torch.no_grad():
        eager = F.interpolate(model(x)["pred"], size=(height, width), mode="bilinear", align_corners=True)
    return x, eager.numpy()


def _check_sidecar(path, fmt, which):
    side = json.loads(path.read_text())
    assert side["model_format"] == fmt and side["checkpoint"]["weights"] == which
    assert side["input"]["preprocessing"]["mean"] == MEAN and side["input"]["preprocessing"]["std"] == STD
    assert side["input"]["preprocessing"]["color_order"] == "RGB"
    assert side["output"]["shape"] == ["batch", NUM_CLASSES, "height", "width"]
    assert [c["name"] for c in side["classes"]] == ["background", "disc", "bar", "ring"]
    assert side["classes"][1]["color"] == [200, 30, 30]
    assert side["check"]["tolerance"] == {"rtol": RTOL, "atol": ATOL, "rule": side["check"]["tolerance"]["rule"]}
    assert len(side["check"]["cases"]) == 2 and all(c["max_abs_diff"] < ATOL for c in side["check"]["cases"])
    return side


def test_onnx_export_matches_eager_at_another_size(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out), "--size", "40", "48"]) == 0
    assert "max |exported - eager|" in capsys.readouterr().out
    side = _check_sidecar(tmp_path / "model.json", "onnx", "teacher")
    assert side["input"]["export_size"] == [40, 48] and side["onnx_opset"] == 17
    x, eager = _eager_and_input(checkpoint, "teacher", 37, 61)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.numpy()})[0]
    assert got.shape == (2, NUM_CLASSES, 37, 61)
    np.testing.assert_allclose(got, eager, rtol=RTOL, atol=ATOL)
    assert (got.argmax(1) == eager.argmax(1)).mean() > 0.999


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_of_the_student(checkpoint, tmp_path):
    out = tmp_path / "student.pt"
    assert (
        main(["--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out), "--model", "student"]) == 0
    )
    _check_sidecar(tmp_path / "student.json", "torchscript", "student")
    x, eager = _eager_and_input(checkpoint, "student", 29, 50)
    module = torch.jit.load(str(out))
    with torch.no_grad():
        got = module(x).numpy()
    np.testing.assert_allclose(got, eager, rtol=RTOL, atol=ATOL)
    _, teacher = _eager_and_input(checkpoint, "teacher", 29, 50)
    assert not np.allclose(got, teacher, rtol=RTOL, atol=ATOL)  # really the student's weights


def test_the_check_rejects_a_difference_beyond_the_tolerance():
    eager = [np.linspace(-5, 5, 2 * NUM_CLASSES * 6).reshape(2, NUM_CLASSES, 2, 3).astype(np.float32)]
    inputs = [torch.zeros(2, 3, 2, 3)]
    within = compare(eager, [eager[0] + 0.9 * ATOL], inputs)
    assert within[0].ok and within[0].argmax_agreement == 1.0
    beyond = eager[0].copy()
    beyond[1, 2, 1, 1] += ATOL + RTOL * abs(beyond[1, 2, 1, 1]) + 1e-4
    assert not compare(eager, [beyond], inputs)[0].ok
    with pytest.raises(ExportCheckError, match="shape"):
        compare(eager, [eager[0][:1]], inputs)


def test_bad_arguments(checkpoint, tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nowhere"), "--format", "onnx"]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["--checkpoint", str(checkpoint), "--format", "onnx", "--size", "4", "4"]) == 2
