"""Everything from object storage (a real SeaweedFS S3 server): evaluate a checkpoint on a dataset in a
bucket, predict a bucket prefix into another prefix, redraw the curves of a run stored in a bucket."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.fs as pafs
import pytest
from PIL import Image
from test_eval_support import make_checkpoint, make_dataset, sample_arrays, tiny_config

from u2pl_ray.data.codec import encode_png

pytestmark = pytest.mark.s3


def _upload(server, local, bucket, prefix):
    fs = server.filesystem()
    pafs.copy_files(
        str(local), f"{bucket}/{prefix}", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )


def _read(server, path) -> bytes:
    with server.filesystem().open_input_stream(path) as src:
        return src.read()


@pytest.mark.timeout(120)
def test_evaluate_predict_and_report_from_a_bucket(s3_env, tmp_path, capsys, monkeypatch):  # noqa: F811
    from u2pl_ray.evaluate import main as evaluate
    from u2pl_ray.predict import main as predict
    from u2pl_ray.report import main as report

    # the endpoint travels in the URIs only (s3://b/p?endpoint_override=...): every URI derived from
    # another (a run's checkpoint, an input under a prefix, an output path) must keep it
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    bucket = s3_env.make_bucket("eval-test")

    def uri(prefix):
        return s3_env.uri(bucket, prefix)

    data_uri = uri("data")
    make_dataset(data_uri)
    run = tmp_path / "run"
    cfg = tiny_config(data_uri)
    history = [{"iteration": 40, "epoch": 1, "val/student/miou": 0.3, "val/miou": 0.3}]
    make_checkpoint(run / "checkpoint_00000040", cfg, iteration=40, epoch=1, history=history, steps=10)
    (run / "config.yaml").write_text((run / "checkpoint_00000040" / "config.yaml").read_text())
    _upload(s3_env, run, bucket, "runs/demo")
    run_uri = uri("runs/demo")

    # evaluate: the run folder resolves to its newest checkpoint; data from the checkpoint's config
    out = uri("results/eval.json")
    assert evaluate(["--checkpoint", run_uri, "--mode", "whole", "--out", out]) == 0
    result = json.loads(_read(s3_env, f"{bucket}/results/eval.json"))
    assert result["num_images"] == 5 and result["weights"] == "student"  # epoch 1: still the warm-up
    assert result["data"] == data_uri and len(result["per_class"]) == 4

    # predict: a bucket prefix of images into another prefix
    fs = s3_env.filesystem()
    for i, name in enumerate(["x.png", "deeper/y.png"]):
        image, _ = sample_arrays(i, 26, 34)
        with fs.open_output_stream(f"{bucket}/inputs/{name}") as dst:
            dst.write(encode_png(image))
    with fs.open_output_stream(f"{bucket}/inputs/bad.png") as dst:
        dst.write(b"garbage")
    assert predict(["--checkpoint", run_uri, "--input", uri("inputs"), "--output", uri("predicted")]) == 1
    assert f"s3://{bucket}/inputs/bad.png" in capsys.readouterr().err
    mask = Image.open(io.BytesIO(_read(s3_env, f"{bucket}/predicted/masks/deeper/y.png")))
    assert mask.mode == "P" and mask.size == (34, 26) and np.asarray(mask).max() < 4
    summary = json.loads(_read(s3_env, f"{bucket}/predicted/predictions.json"))
    assert summary["written"] == 2 and summary["failed"] == 1

    # report: curves of a run stored in the bucket, written back into it
    assert report([run_uri]) == 0
    picture = Image.open(io.BytesIO(_read(s3_env, f"{bucket}/runs/demo/plots/curves.png")))
    assert picture.size[0] > 500
