"""Pictures: palettes, the pseudo-label grid (its reliable split against numpy), training curves from a
run folder (meta.json history + real TensorBoard event files) and the report command."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_eval_support import MEAN, NUM_CLASSES, STD, make_checkpoint, sample_arrays, tiny_config

from u2pl_ray.config import dump_config
from u2pl_ray.engine.artifacts import load_trained_model
from u2pl_ray.viz.canvas import png_bytes
from u2pl_ray.viz.curves import read_run_curves, write_run_curves
from u2pl_ray.viz.palette import class_table, colorize, overlay, voc_palette
from u2pl_ray.viz.pseudo_labels import render_pseudo_label_grid, write_pseudo_label_grid


def test_voc_palette_known_colours():
    pal = voc_palette(256)
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    expected = {
        0: (0, 0, 0),
        1: (128, 0, 0),
        2: (0, 128, 0),
        3: (128, 128, 0),
        4: (0, 0, 128),
        15: (192, 128, 128),
        20: (0, 64, 128),
    }
    for index, colour in expected.items():
        assert tuple(pal[index]) == colour


def test_class_table_from_checkpoint_classes_and_fallback():
    table = class_table([{"name": "sky", "color": [1, 2, 3]}, {"name": "road"}], 2)
    assert table.names == ("sky", "road") and table.colors == ((1, 2, 3), (128, 0, 0))
    assert table.source == "checkpoint"
    fallback = class_table([], 3)  # no classes in the checkpoint: VOC colours and generic names
    assert fallback.names == ("class_0", "class_1", "class_2") and fallback.colors[2] == (0, 128, 0)
    pal = table.palette(ignore_index=255)
    assert tuple(pal[0]) == (1, 2, 3) and tuple(pal[255]) == (224, 224, 192) and tuple(pal[2]) == (0, 128, 0)


def test_colorize_and_overlay_by_hand():
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[1] = (200, 100, 0)
    label = np.array([[0, 1], [255, 1]])
    assert colorize(label, pal)[0, 1].tolist() == [200, 100, 0]
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    out = overlay(image, label, pal, alpha=0.25, ignore_index=255)
    assert out[0, 1].tolist() == [125, 100, 75]  # 0.75*100 + 0.25*(200, 100, 0)
    assert out[0, 0].tolist() == [75, 75, 75]  # class 0 is black here
    assert out[1, 0].tolist() == [100, 100, 100]  # ignored: the image unchanged
    with pytest.raises(ValueError, match="sizes differ"):
        overlay(image, np.zeros((3, 2), dtype=int), pal)


def test_paletted_png_keeps_class_ids():
    ids = np.array([[0, 1, 2], [3, 1, 0]], dtype=np.uint8)
    decoded = Image.open(io.BytesIO(png_bytes(ids, voc_palette(256))))
    assert decoded.mode == "P" and np.array_equal(np.asarray(decoded), ids)
    assert decoded.getpalette()[3:6] == [128, 0, 0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = tiny_config(None)
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "checkpoint_00000120", cfg)


def _samples(count=3):
    out = []
    for i in range(count):
        image, mask = sample_arrays(i, 24 + 4 * i, 30)
        out.append((f"s{i}", torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)))
    return out


def test_grid_reliable_split_matches_numpy_percentile(checkpoint):
    student = load_trained_model(str(checkpoint), "student").model
    teacher = load_trained_model(str(checkpoint), "teacher").model
    teacher.train()  # as in training: drawing must restore the mode and leave the BN statistics alone
    buffers = {k: v.clone() for k, v in teacher.state_dict().items()}
    samples = _samples()
    grid = render_pseudo_label_grid(student, teacher, samples, 70.0, mean=MEAN, std=STD, num_classes=NUM_CLASSES)
    assert teacher.training and not student.training
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, buffers[key]), key

    # independent: numpy softmax / entropy / percentile of the eval-mode teacher's upsampled logits
    teacher.eval()
    entropies, pseudo = [], []
    for _, image, _ in samples:
        x = (image[None].float() - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        with torch.no_grad():
            logits = F.interpolate(teacher(x)["pred"], size=image.shape[-2:], mode="bilinear", align_corners=True)
        z = logits[0].double().numpy()
        p = np.exp(z - z.max(0)) / np.exp(z - z.max(0)).sum(0)
        entropies.append(-(p * np.log(p + 1e-10)).sum(0))
        pseudo.append(p.argmax(0))
    threshold = np.percentile(np.concatenate([e.ravel() for e in entropies]).astype(np.float32), 70.0)
    assert grid.threshold == pytest.approx(float(threshold), rel=1e-5)
    for view, ent, pl in zip(grid.views, entropies, pseudo):
        np.testing.assert_allclose(view.entropy, ent, rtol=1e-4, atol=1e-5)
        assert np.array_equal(view.pseudo_label, pl)
        near = np.abs(ent - threshold) < 1e-5  # float32 vs float64 rounding may flip pixels at the threshold
        assert np.array_equal(view.reliable[~near], (ent < threshold)[~near])
    assert grid.reliable_share == pytest.approx(0.70, abs=0.01)
    # six panels per row, one row per sample
    assert grid.picture.ndim == 3 and grid.picture.shape[1] >= 6 * 160 and grid.picture.shape[0] > 3 * 100


def test_write_grid_into_the_run_folder(checkpoint, tmp_path):
    loaded = load_trained_model(str(checkpoint), "teacher")
    student = load_trained_model(str(checkpoint), "student").model
    uri = write_pseudo_label_grid(
        str(tmp_path), 120, student, loaded.model, _samples(2), 85.0, loaded.cfg, classes=loaded.meta["classes"]
    )
    assert uri == str(tmp_path / "images" / "val_00000120.png")
    picture = Image.open(uri)
    assert picture.mode == "RGB" and picture.width > 900


def _write_run(root, tensorboard: bool):
    cfg = tiny_config(None, schedule={"epochs": 4, "iters_per_epoch": None})
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(dump_config(cfg))
    history = [
        {"iteration": 10, "epoch": 1, "val/student/miou": 0.20, "val/miou": 0.20},
        {"iteration": 15, "epoch": 1, "val/student/miou": 0.22, "val/miou": 0.22},  # a mid-epoch validation
        {
            "iteration": 20,
            "epoch": 2,
            "val/student/miou": 0.30,
            "val/teacher/miou": 0.32,
            "val/miou": 0.32,
            "drop_percent": 85.0,
        },
        {
            "iteration": 30,
            "epoch": 3,
            "val/student/miou": 0.35,
            "val/teacher/miou": 0.38,
            "val/miou": 0.38,
            "drop_percent": 90.0,
        },
    ]
    make_checkpoint(root / "checkpoint_00000020", cfg, iteration=20, history=history[:3], steps=1)
    make_checkpoint(root / "checkpoint_00000030", cfg, iteration=30, history=history, steps=1)
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(root / "tensorboard"))
        for step in (5, 10, 15, 20, 25, 30):
            writer.add_scalar("train/sup", 1.0 / step, step)
            writer.add_scalar("train/unsup", 0.5 / step, step)
            writer.add_scalar("train/reliable_share", 0.8 + step / 1000, step)
            writer.add_scalar("train/drop_percent", 80.0 + step / 10, step)
        writer.close()
    return history


def test_curves_from_history_and_tensorboard(tmp_path):
    run = tmp_path / "run"
    history = _write_run(run, tensorboard=True)
    curves = read_run_curves(str(run))
    assert curves.get("val/teacher/miou") == [(20, 0.32), (30, 0.38)]
    assert [s for s, _ in curves.get("val/student/miou")] == [10, 15, 20, 30]
    assert [v for _, v in curves.get("val/student/miou")] == [h["val/student/miou"] for h in history]
    sup = curves.get("train/sup")
    assert [s for s, _ in sup] == [5, 10, 15, 20, 25, 30]
    np.testing.assert_allclose([v for _, v in sup], [1.0 / s for s in (5, 10, 15, 20, 25, 30)], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in curves.get("train/drop_percent")], [80.5, 81, 81.5, 82, 82.5, 83])
    written = write_run_curves(str(run))
    names = sorted(p.rsplit("/", 1)[1] for p in written)
    assert names == [
        "curves.png",
        "curves_drop_percent.png",
        "curves_losses.png",
        "curves_miou.png",
        "curves_reliable_share.png",
    ]
    for uri in written:
        assert Image.open(uri).size[0] > 300


def test_drop_percent_from_the_validations_record_without_tensorboard(tmp_path):
    run = tmp_path / "run"
    _write_run(run, tensorboard=False)
    curves = read_run_curves(str(run))
    # what the training steps before each semi-supervised validation used (the method's schedule, recorded)
    assert curves.get("train/drop_percent") == [(20, 85.0), (30, 90.0)]
    assert curves.get("train/sup") == []
    assert curves.sources == [str(run / "checkpoint_00000030" / "meta.json")]


def test_report_command(tmp_path, capsys):
    from u2pl_ray.report import main

    run = tmp_path / "run"
    _write_run(run, tensorboard=True)
    (run / "images").mkdir()
    (run / "images" / "val_00000030.png").write_bytes(png_bytes(np.zeros((4, 4, 3), dtype=np.uint8)))
    assert main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "miou: val/student/miou (4 points), val/teacher/miou (2 points)" in out
    assert "val_00000030.png" in out
    assert (run / "plots" / "curves.png").is_file()
    assert main([str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
