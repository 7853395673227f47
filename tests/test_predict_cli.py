"""`python -m u2pl_ray.predict` in one process: a folder with a corrupt image, a list file, one image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_eval_support import MEAN, NUM_CLASSES, STD, make_checkpoint, sample_arrays, tiny_config

from u2pl_ray.data.codec import encode_jpeg, encode_png
from u2pl_ray.engine.artifacts import load_trained_model
from u2pl_ray.engine.inference import InferenceSpec, predict_logits
from u2pl_ray.predict import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("predict") / "checkpoint_00000120", tiny_config(None))


def make_inputs(folder):
    """Three good images (one in a sub-folder, one JPEG) and a corrupt PNG."""
    (folder / "sub").mkdir(parents=True)
    arrays = {}
    for i, (rel, h, w) in enumerate([("a.png", 30, 41), ("sub/b.png", 25, 25), ("c.jpg", 33, 20)]):
        image, _ = sample_arrays(i, h, w)
        (folder / rel).write_bytes(encode_png(image) if rel.endswith(".png") else encode_jpeg(image, 98))
        arrays[rel] = np.array(Image.open(folder / rel).convert("RGB"))  # what a decoder reads back
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt.bak").write_text("ignored: not an image")
    return arrays


def expected_ids(checkpoint, image, which="teacher", spec=None):
    spec = spec or InferenceSpec("whole", 32)
    model = load_trained_model(str(checkpoint), which).model
    x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(
        STD
    ).view(1, 3, 1, 1)
    logits, _ = predict_logits(model, x, None, spec, NUM_CLASSES)
    return logits.argmax(1)[0].numpy().astype(np.uint8)


def test_folder_with_a_corrupt_image(checkpoint, tmp_path, capsys):
    arrays = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    code = main(["--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"), "--output", str(out)])
    assert code == 1  # one input failed; the others are written
    err = capsys.readouterr().err
    assert "broken.png" in err and "does not decode" in err
    for rel, image in arrays.items():
        stem = rel.rsplit(".", 1)[0]
        mask = Image.open(out / "masks" / f"{stem}.png")
        assert mask.mode == "P" and mask.size == (image.shape[1], image.shape[0])
        assert np.array_equal(np.asarray(mask), expected_ids(checkpoint, image))
        assert mask.getpalette()[3:6] == [200, 30, 30]  # class 1's colour from the checkpoint's classes
        overlay = np.asarray(Image.open(out / "overlays" / f"{stem}.png"))
        assert overlay.shape == image.shape
    assert not (out / "masks" / "broken.png").exists()
    report = json.loads((out / "predictions.json").read_text())
    assert report["inputs"] == 4 and report["written"] == 3 and report["failed"] == 1
    bad = [r for r in report["records"] if not r["ok"]]
    assert bad[0]["input"].endswith("broken.png") and "broken.png" in bad[0]["error"]


def test_list_file_single_image_and_options(checkpoint, tmp_path):
    arrays = make_inputs(tmp_path / "in")
    listing = tmp_path / "in" / "inputs.txt"
    listing.write_text("# two of them\na.png\n\n" + str(tmp_path / "in" / "sub" / "b.png") + "\n")
    out = tmp_path / "out"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(listing),
        "--output",
        str(out),
        "--model",
        "student",
        "--mode",
        "slide",
        "--crop-size",
        "16",
    ]
    assert main(argv) == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png", "b.png"]
    spec = InferenceSpec("slide", 16)
    assert np.array_equal(
        np.asarray(Image.open(out / "masks" / "b.png")), expected_ids(checkpoint, arrays["sub/b.png"], "student", spec)
    )
    # outputs inside the input folder are not taken for inputs on a second run
    inside = tmp_path / "in" / "predicted"
    base = ["--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"), "--output", str(inside)]
    assert main(base) == 1 and main(base) == 1
    assert json.loads((inside / "predictions.json").read_text())["inputs"] == 4
    single = tmp_path / "one"
    assert (
        main(["--checkpoint", str(checkpoint), "--input", str(tmp_path / "in" / "c.jpg"), "--output", str(single)]) == 0
    )
    assert (single / "masks" / "c.png").is_file() and (single / "overlays" / "c.png").is_file()


def test_clear_errors_for_bad_arguments(checkpoint, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert (
        main(["--checkpoint", str(checkpoint), "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")])
        == 2
    )
    assert "no images found" in capsys.readouterr().err
    listing = tmp_path / "list.txt"
    listing.write_text("a.png\nreadme.md\n")
    assert main(["--checkpoint", str(checkpoint), "--input", str(listing), "--output", str(tmp_path / "o")]) == 2
    assert "line 2" in capsys.readouterr().err
