"""Bad input: each case fails with a message naming the shard and row (or the URI), or is skipped and
counted under `on_bad_sample: skip`. Rows go through the functions the Ray tasks and the worker run."""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures_s3 import free_ports

from u2pl_ray.config import load_config
from u2pl_ray.data.codec import encode_jpeg, encode_png
from u2pl_ray.data.datasets import role_columns
from u2pl_ray.data.errors import BadSampleError, DataError
from u2pl_ray.data.info import load_dataset_info
from u2pl_ray.data.producer import Counters, batches_of, items_from_batches
from u2pl_ray.data.readtask import read_segments
from u2pl_ray.data.rows import RowSpec
from u2pl_ray.data.schema import ClassInfo
from u2pl_ray.data.shards import Sample
from u2pl_ray.data.val import iter_val_samples
from u2pl_ray.data.writer import DatasetWriter

CLASSES = [ClassInfo(0, "bg", (0, 0, 0)), ClassInfo(1, "a", (255, 0, 0)), ClassInfo(2, "b", (0, 255, 0))]


def good(i: int, h: int = 10, w: int = 12) -> Sample:
    rng = np.random.default_rng(i)
    mask = rng.integers(0, 3, (h, w), dtype=np.uint8)
    mask[0, 0] = 255
    return Sample(f"ok-{i}", encode_jpeg(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), encode_png(mask), h, w)


BAD = {
    "corrupt-image": (
        lambda: Sample("bad", b"\xff\xd8\xff not really a jpeg", good(0).mask, 10, 12),
        "image does not decode",
    ),
    "corrupt-mask": (lambda: Sample("bad", good(0).image, b"\x89PNG\r\n\x1a\n broken", 10, 12), "mask does not decode"),
    "size-mismatch": (
        lambda: Sample("bad", good(0).image, encode_png(np.zeros((8, 12), np.uint8)), 10, 12),
        "mask is 8x12 but the image is 10x12",
    ),
    "class-out-of-range": (
        lambda: Sample("bad", good(0).image, encode_png(np.full((10, 12), 9, np.uint8)), 10, 12),
        "class ids [9] outside 0..2 (ignore = 255)",
    ),
    "rgb-mask": (
        lambda: Sample("bad", good(0).image, encode_png(np.zeros((10, 12, 3), np.uint8)), 10, 12),
        "single-channel 8-bit PNG",
    ),
}


def make_dataset(root: Path, bad: Sample | None = None, where: str = "labeled") -> str:
    writer = DatasetWriter(str(root), "bad-test", CLASSES, shard_rows=4)
    for i in range(3):
        writer.val().add(good(100 + i))
    for i in range(6):
        writer.part("s", "labeled").add(good(i))
        if i == 2 and bad is not None and where == "labeled":
            writer.part("s", "labeled").add(bad)
    if bad is not None and where == "val":
        writer.val().add(bad)
    writer.part("s", "unlabeled").add(Sample("u0", good(50).image, None, 10, 12))
    writer.finish()
    return str(root)


def cfg_for(root: str, *extra: str):
    return load_config(None, [f"data.root={root}", "data.split=s", "data.crop_size=8", "data.batch_size=2", *extra])


def stream_items(cfg, info, decode: str):
    """Rows of the labelled part, read by the Ray task body and turned into samples by the worker code."""
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"decode": decode})})
    spec = RowSpec.from_config(cfg.data, info.num_classes, seed=0, labeled=True)
    segments = [json.dumps({"paths": [s.path], "rows": [s.rows]}) for s in info.labeled.shards]
    batches = (
        out
        for seg in segments
        for out in read_segments(
            {"segment": np.array([seg], dtype=object)},
            info.root,
            role_columns("labeled"),
            spec if decode == "ray" else None,
            0,
            0,
        )
    )
    batches = (
        b if isinstance(b, dict) else {c: b.column(c).to_numpy(zero_copy_only=False) for c in b.column_names}
        for b in batches
    )
    counters = Counters()
    items = items_from_batches(
        batches,
        spec,
        epoch=0,
        stream=0,
        on_bad_sample=cfg.data.on_bad_sample,
        counters=counters,
        pool=None,
        position_base=0,
    )
    return items, counters


@pytest.mark.parametrize("decode", ["worker", "ray"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_rows_name_shard_and_row(tmp_path, case, decode):
    make, fragment = BAD[case]
    root = make_dataset(tmp_path / "d", make())
    cfg = cfg_for(root)
    info = load_dataset_info(cfg.data)
    items, _ = stream_items(cfg, info, decode)
    with pytest.raises(BadSampleError) as err:
        list(items)
    message = str(err.value)
    assert fragment in message
    assert f"in shard {root}/splits/s/labeled/part-00000.parquet row id 'bad'" in message


@pytest.mark.parametrize("decode", ["worker", "ray"])
def test_skip_policy_counts_and_the_epoch_stays_full(tmp_path, decode):
    root = make_dataset(tmp_path / "d", BAD["corrupt-image"][0]())
    cfg = cfg_for(root, "data.on_bad_sample=skip")
    info = load_dataset_info(cfg.data)
    items, counters = stream_items(cfg, info, decode)
    batches = list(batches_of(items, 2, 4, counters, 0, threading.Event()))  # 6 good rows, 8 asked for
    assert counters.skipped == 1 and counters.padded == 2
    assert [len(b.ids) for b in batches] == [2, 2, 2, 2] and "bad" not in sum((b.ids for b in batches), [])
    assert batches[0].images.shape == (2, 3, 8, 8) and batches[0].masks.shape == (2, 8, 8)


def test_bad_validation_row_names_shard_and_row(tmp_path):
    root = make_dataset(tmp_path / "d", BAD["class-out-of-range"][0](), where="val")
    cfg = cfg_for(root)
    info = load_dataset_info(cfg.data)
    with pytest.raises(BadSampleError, match=r"val/part-00000\.parquet row id 'bad'.*class ids \[9\]"):
        list(iter_val_samples(cfg.data, info))
    skip = cfg_for(root, "data.on_bad_sample=skip")
    assert [s[0] for s in iter_val_samples(skip.data, info)] == ["ok-100", "ok-101", "ok-102"]


def test_missing_shard_is_named(tmp_path):
    root = make_dataset(tmp_path / "d")
    (tmp_path / "d" / "splits" / "s" / "labeled" / "part-00001.parquet").unlink()
    with pytest.raises(DataError, match=r"missing shard .*/splits/s/labeled/part-00001\.parquet"):
        load_dataset_info(cfg_for(root).data)


def test_wrong_shard_schema_is_named(tmp_path):
    root = make_dataset(tmp_path / "d")
    shard = tmp_path / "d" / "splits" / "s" / "labeled" / "part-00000.parquet"
    pq.write_table(pa.table({"id": ["x"] * 4, "img": [b""] * 4, "height": [1] * 4}), shard)
    with pytest.raises(DataError) as err:
        load_dataset_info(cfg_for(root).data)
    message = str(err.value)
    assert "part-00000.parquet does not have the u2pl-ray shard schema" in message
    assert "column 'image' (binary) is missing" in message and "column 'height' is int64, expected int32" in message


def test_empty_and_unknown_splits(tmp_path):
    writer = DatasetWriter(str(tmp_path / "d"), "empty-test", CLASSES)
    writer.val().add(good(1))
    writer.declare_split("none")
    writer.finish()
    with pytest.raises(DataError, match=r"split 'none' of .* is empty: it has no labelled images"):
        load_dataset_info(load_config(None, [f"data.root={tmp_path / 'd'}", "data.split=none"]).data)
    with pytest.raises(DataError, match=r"has no split '1_8' \(splits: none\)"):
        load_dataset_info(load_config(None, [f"data.root={tmp_path / 'd'}", "data.split='1_8'"]).data)
    with pytest.raises(DataError, match="holds no converted dataset"):
        load_dataset_info(load_config(None, [f"data.root={tmp_path / 'nothing'}"]).data)


@pytest.mark.s3
def test_unreachable_endpoint_is_a_bounded_clear_error(s3_env):
    port = free_ports(1)[0]
    root = f"s3://data/set?endpoint_override=127.0.0.1:{port}&scheme=http&max_attempts=2"
    started = time.monotonic()
    with pytest.raises(DataError) as err:
        load_dataset_info(cfg_for(root).data)
    assert time.monotonic() - started < 20
    assert "endpoint unreachable" in str(err.value) and f"127.0.0.1:{port}" in str(err.value)


@pytest.mark.s3
def test_wrong_credentials_are_a_clear_error(s3_env, tmp_path, monkeypatch):
    s3_env.make_bucket("bad-input")
    root = s3_env.uri("bad-input", "d")
    make_dataset_uri = DatasetWriter(root, "s3-bad", CLASSES)
    make_dataset_uri.part("s", "labeled").add(good(1))
    make_dataset_uri.finish()
    assert load_dataset_info(cfg_for(root).data).num_labeled == 1
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(DataError) as err:
        load_dataset_info(cfg_for(root).data)
    assert "access denied" in str(err.value) and "s3://bad-input/d/manifest.json" in str(err.value)


def test_cpu_budget_refuses_reservations_that_would_hang_the_stream():
    from u2pl_ray.data.stream import check_cpu_budget

    data = load_config(None, ["data.ray_task_cpus=0.5"]).data
    check_cpu_budget(data, 2, 0.5, 2)  # 1 CPU left: fine
    check_cpu_budget(data, 0, 1.0, 2)  # the loop in the driver reserves nothing
    with pytest.raises(DataError, match=r"2 training worker\(s\) x 1 CPU leave 0 of 2 CPUs.*data.ray_task_cpus=0.5"):
        check_cpu_budget(data, 2, 1.0, 2)
