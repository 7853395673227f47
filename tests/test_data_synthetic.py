"""The synthetic benchmark generator and `ensure_dataset` (its cache)."""

import gzip
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

from u2pl_ray.config import DataConfig, SyntheticConfig
from u2pl_ray.data.cache import ensure_dataset
from u2pl_ray.data.info import read_manifest
from u2pl_ray.data.synthetic import render_image, synthetic_key
from u2pl_ray.data.synthetic.backgrounds import TRAIN_IMAGES, VAL_IMAGES, Backgrounds
from u2pl_ray.data.synthetic.objects import FashionMNISTObjects, ProceduralObjects, object_source

TINY = dict(
    num_train=24, num_val=6, image_size=32, labeled_fractions=["1_4", "full"], object_source="procedural", shard_rows=16
)


def test_images_are_a_pure_function_of_seed_split_and_index():
    cfg = SyntheticConfig(**TINY)
    objects, backgrounds = ProceduralObjects(cfg.num_object_classes), Backgrounds(train=True)
    a = render_image(3, True, cfg, objects, backgrounds)
    b = render_image(3, True, cfg, objects, backgrounds)
    c = render_image(3, True, cfg.model_copy(update={"seed": 1}), objects, backgrounds)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (32, 32, 3) and a[1].dtype == np.uint8
    assert set(np.unique(a[1])) <= set(range(cfg.num_object_classes + 1))


def test_train_and_val_backgrounds_are_disjoint_photo_sets():
    assert not set(TRAIN_IMAGES) & set(VAL_IMAGES)
    assert Backgrounds(train=True).names == TRAIN_IMAGES and Backgrounds(train=False).names == VAL_IMAGES


def test_colour_does_not_tell_the_class():
    """Per-class mean object colour equals the overall mean up to sampling noise (|z| < 4 for every
    class and channel): only shape and pattern differ between classes."""
    cfg = SyntheticConfig(**{**TINY, "image_size": 48, "occlusion_prob": 0.0})
    objects, backgrounds = ProceduralObjects(cfg.num_object_classes), Backgrounds(train=True)
    samples: dict[int, list[np.ndarray]] = {k: [] for k in range(1, cfg.num_object_classes + 1)}
    for i in range(300):
        image, mask = render_image(i, True, cfg, objects, backgrounds)
        for k in samples:
            if (mask == k).any():
                samples[k].append(image[mask == k].mean(axis=0))
    overall = np.concatenate([np.stack(v) for v in samples.values()]).mean(axis=0)
    for k, values in samples.items():
        values = np.stack(values)
        assert len(values) > 50
        z = (values.mean(axis=0) - overall) / (values.std(axis=0) / np.sqrt(len(values)))
        assert np.abs(z).max() < 4, (k, z)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_objects_come_from_train_file_for_train_and_t10k_for_val(tmp_path):
    # train file: filled squares; t10k file: rings -- so the source of a drawn object is visible
    square = np.zeros((28, 28), dtype=np.uint8)
    square[6:22, 6:22] = 200
    yy, xx = np.mgrid[0:28, 0:28]
    ring = (((yy - 14) ** 2 + (xx - 14) ** 2 < 100) & ((yy - 14) ** 2 + (xx - 14) ** 2 > 30)).astype(np.uint8) * 200
    labels = np.array([1, 8, 1, 8], dtype=np.uint8)  # trouser and bag: the first two classes taken
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.stack([square] * 4))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.stack([ring] * 4))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    train = object_source(2, str(tmp_path), train=True)
    val = object_source(2, str(tmp_path), train=False)
    assert isinstance(train, FashionMNISTObjects) and train.class_names == ("trouser", "bag")
    rng = np.random.default_rng(0)
    a_train, _ = train.draw(0, 28, rng)
    a_val, _ = val.draw(1, 28, rng)
    centre = slice(12, 16)
    assert a_train[centre, centre].mean() > 0.9  # squares are solid in the middle
    assert a_val.mean() > 0.1  # a ring (holes filled: the silhouette is a disk)
    cfg = SyntheticConfig(
        **{**TINY, "object_source": "auto", "fashion_mnist_dir": str(tmp_path), "num_object_classes": 2}
    )
    assert synthetic_key(cfg).startswith("synthetic-fashion_mnist-")
    assert synthetic_key(cfg.model_copy(update={"fashion_mnist_dir": "/nowhere"})).startswith("synthetic-procedural-")


def _ensure(cache_dir: str, queue) -> None:
    queue.put(ensure_dataset(DataConfig(cache_dir=cache_dir, synthetic=SyntheticConfig(**TINY))))


def test_ensure_dataset_generates_once_even_when_two_processes_race(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ensure, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    roots = {queue.get(timeout=5), queue.get(timeout=5)}
    assert len(roots) == 1
    root = roots.pop()
    assert Path(root).parent == tmp_path and Path(root).name == synthetic_key(SyntheticConfig(**TINY))
    entries = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert entries == [Path(root).name]  # no temporary folder left behind
    manifest = read_manifest(root)
    assert manifest.part("1_4", "labeled").rows == 6 and manifest.part("1_4", "unlabeled").rows == 18
    # the manifest says which objects "auto" drew, as the folder name does
    assert Path(root).name.startswith(f"synthetic-{manifest.source['object_source']}-")
    stamp = os.stat(Path(root) / "manifest.json").st_mtime_ns
    assert ensure_dataset(DataConfig(cache_dir=str(tmp_path), synthetic=SyntheticConfig(**TINY))) == root
    assert os.stat(Path(root) / "manifest.json").st_mtime_ns == stamp  # the cache is reused, not rewritten


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").exists(), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist_split_sizes():
    train = FashionMNISTObjects("/usr/share/datasets/fashion-mnist", 5, train=True)
    val = FashionMNISTObjects("/usr/share/datasets/fashion-mnist", 5, train=False)
    assert [len(x) for x in train._items] == [6000] * 5 and [len(x) for x in val._items] == [1000] * 5


def test_the_manifest_and_the_run_say_which_objects_auto_resolved_to(tmp_path):
    from u2pl_ray.config import load_config
    from u2pl_ray.data.info import load_dataset_info
    from u2pl_ray.train import describe_data

    cfg = load_config(
        None,
        [
            f"data.cache_dir={tmp_path}",
            "data.synthetic.object_source=auto",
            "data.synthetic.fashion_mnist_dir=/nowhere",
            "data.synthetic.num_train=24",
            "data.synthetic.num_val=6",
            "data.synthetic.image_size=32",
            "data.synthetic.labeled_fractions=['1_4']",
            "data.split='1_4'",
        ],
    )
    info = load_dataset_info(cfg.data)
    assert info.source["object_source"] == "procedural"
    line = describe_data(cfg, info)
    assert line.startswith("synthetic split 1_4: 6 labelled, 18 unlabelled") and "objects: procedural" in line
    assert "dataset-fashion-mnist" in line
