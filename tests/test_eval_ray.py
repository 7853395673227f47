"""The Ray paths: evaluation shared by Ray tasks, prediction through Ray Data actors. Each must give
exactly what the single-process path gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_eval_support import make_checkpoint, make_dataset, tiny_config
from test_predict_cli import make_inputs

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, object_store_memory=1 << 30, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    base = tmp_path_factory.mktemp("ray")
    return make_checkpoint(base / "checkpoint_00000120", tiny_config(make_dataset(base / "data")))


@pytest.mark.timeout(180)
def test_evaluation_over_ray_tasks_equals_one_process(ray_local, checkpoint, tmp_path):
    from u2pl_ray.evaluate import main

    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main(["--checkpoint", str(checkpoint), "--mode", "slide", "--crop-size", "24", "--out", str(one)]) == 0
    assert (
        main(
            [
                "--checkpoint",
                str(checkpoint),
                "--mode",
                "slide",
                "--crop-size",
                "24",
                "--out",
                str(two),
                "--workers",
                "2",
                "--cpus-per-worker",
                "0.5",
            ]
        )
        == 0
    )
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert b["workers"] == 2 and b["num_images"] == a["num_images"] == 5
    assert b["confusion"] == a["confusion"] and b["miou"] == a["miou"]


@pytest.mark.timeout(180)
def test_prediction_through_ray_data_equals_local(ray_local, checkpoint, tmp_path, capsys):
    from u2pl_ray.predict import main

    make_inputs(tmp_path / "in")
    local, remote = tmp_path / "local", tmp_path / "ray"
    base = ["--checkpoint", str(checkpoint), "--input", str(tmp_path / "in")]
    assert main([*base, "--output", str(local), "--engine", "local"]) == 1
    capsys.readouterr()
    assert (
        main(
            [
                *base,
                "--output",
                str(remote),
                "--engine",
                "ray",
                "--concurrency",
                "2",
                "--batch-size",
                "1",
                "--cpus-per-actor",
                "0.5",
            ]
        )
        == 1
    )
    assert "broken.png" in capsys.readouterr().err
    report = json.loads((remote / "predictions.json").read_text())
    assert report["engine"] == "ray" and report["written"] == 3 and report["failed"] == 1
    assert [r["input"].rsplit("/", 1)[1] for r in report["records"]] == ["a.png", "broken.png", "c.jpg", "b.png"]
    for rel in ("a.png", "sub/b.png", "c.png"):
        for kind in ("masks", "overlays"):
            assert np.array_equal(
                np.asarray(Image.open(remote / kind / rel)), np.asarray(Image.open(local / kind / rel))
            )
