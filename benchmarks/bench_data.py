"""Images/s delivered to a training worker: the Ray Data stream from shards on a local S3 server against a
plain torch DataLoader reading the same images as files from local disk, same decode and augmentation.

    .venv/bin/python benchmarks/bench_data.py [--images 1024] [--image-size 160] [--crop 128] [--batch 8]
                                              [--epochs 3] [--loader-workers 2] [--decode-ray]

Both sides: the labelled pairs (image + mask) of one split, decoded with torchvision and weak-augmented
(resize 0.5-2.0, flip, crop) to uint8 tensors, `--epochs` epochs, each epoch timed from its first request
to its last batch, no training compute. Ray side: a SeaweedFS server started here (the tests' fixture
code), the synthetic set written to it, a 1-worker TorchTrainer (0.5 CPU) running TrainStream with
`data.decode: worker` (and `ray` with --decode-ray). DataLoader side: `--loader-workers` processes.

The last line printed is one JSON object: ray_data_img_s, dataloader_img_s and ratio over all epochs
(Ray Data's first epoch carries seconds of start-up: worker processes, imports), and *_steady_img_s /
ratio_steady over the epochs after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the SeaweedFS fixture code

from fixtures_s3 import SeaweedServer  # noqa: E402

from u2pl_ray.config import load_config  # noqa: E402
from u2pl_ray.data.augment import WeakAugment, sample_rng  # noqa: E402
from u2pl_ray.data.codec import SampleChecks, decode_sample  # noqa: E402


class FileDataset(torch.utils.data.Dataset):
    """The plain baseline: image and mask files from local disk, the stream's decode + augmentation."""

    def __init__(self, folder: Path, ids: list[str], augment: WeakAugment, checks: SampleChecks, epoch: int):
        self.folder, self.ids, self.augment, self.checks, self.epoch = folder, ids, augment, checks, epoch

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        sid = self.ids[i]
        image = (self.folder / "images" / f"{sid}.jpg").read_bytes()
        mask = (self.folder / "masks" / f"{sid}.png").read_bytes()
        img, msk = decode_sample(image, mask, None, None, self.checks, sid)
        return self.augment(img, msk, sample_rng(0, self.epoch, 0, i))


def export_files(info, folder: Path) -> list[str]:
    """The labelled rows of the split as files (what a DataLoader user has on disk)."""
    from u2pl_ray.data.fs import resolve_filesystem
    from u2pl_ray.data.shards import iter_part_rows

    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    fs, root = resolve_filesystem(info.root)
    ids = []
    for _, _, row in iter_part_rows(fs, root, info.labeled, info.root):
        (folder / "images" / f"{row['id']}.jpg").write_bytes(row["image"])
        (folder / "masks" / f"{row['id']}.png").write_bytes(row["mask"])
        ids.append(row["id"])
    return ids


def rates(per_epoch: list[tuple[int, float]]) -> tuple[float, float]:
    """(images/s over all epochs, images/s over the epochs after the first: start-up excluded)."""
    overall = sum(c for c, _ in per_epoch) / sum(t for _, t in per_epoch)
    later = per_epoch[1:] or per_epoch
    return overall, sum(c for c, _ in later) / sum(t for _, t in later)


def bench_dataloader(folder: Path, ids: list[str], cfg, epochs: int, workers: int) -> list[tuple[int, float]]:
    augment, checks = WeakAugment.from_config(cfg.data), SampleChecks(cfg.model.num_classes or 256, 255)
    per_epoch = []
    for epoch in range(epochs):
        start, count = time.perf_counter(), 0
        loader = torch.utils.data.DataLoader(
            FileDataset(folder, ids, augment, checks, epoch),
            batch_size=cfg.data.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=False,
        )
        for images, _ in loader:
            count += images.shape[0]
        per_epoch.append((count, time.perf_counter() - start))
    return per_epoch


def _ray_loop(loop_config):
    import ray.train

    from u2pl_ray.config import build_config
    from u2pl_ray.data.stream import TrainStream

    cfg = build_config(loop_config["config"])
    stream = TrainStream(
        cfg.data,
        labeled=ray.train.get_dataset_shard("labeled"),
        unlabeled=None,
        rank=0,
        world_size=1,
        seed=0,
        iters_per_epoch=loop_config["n"],
        info=loop_config["info"],
    )
    per_epoch = []
    for epoch in range(loop_config["epochs"]):
        start, count = time.perf_counter(), 0
        for batch in stream.epoch(epoch):
            count += batch.image_l.shape[0]
        per_epoch.append((count, time.perf_counter() - start))
    # result.metrics stays None without a checkpoint: hand the figures back through a file (one machine)
    Path(loop_config["out"]).write_text(json.dumps(per_epoch))


def bench_ray(cfg, epochs: int, storage: str) -> list[tuple[int, float]]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from u2pl_ray.config import config_to_dict
    from u2pl_ray.data.stream import build_train_datasets, iters_per_epoch, load_dataset_info, train_dataset_config

    info = load_dataset_info(cfg.data)
    n = iters_per_epoch(info, cfg.data, 1, needs_unlabeled=False)
    trainer = TorchTrainer(
        _ray_loop,
        train_loop_config={
            "config": config_to_dict(cfg),
            "n": n,
            "info": info,
            "epochs": epochs,
            "out": f"{storage}/result.json",
        },
        scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.5}),
        datasets=build_train_datasets(cfg.data, info, needs_unlabeled=False, iters_per_epoch=n, world_size=1),
        dataset_config=train_dataset_config(cfg.data),
        run_config=RunConfig(name="bench", storage_path=storage),
    )
    trainer.fit()
    return [tuple(x) for x in json.loads(Path(storage, "result.json").read_text())]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--loader-workers", type=int, default=2)
    p.add_argument("--decode-ray", action="store_true", help="also time data.decode: ray")
    args = p.parse_args()

    import ray

    from u2pl_ray.data.info import load_dataset_info
    from u2pl_ray.data.synthetic import generate_synthetic

    work = Path(tempfile.mkdtemp(prefix="u2pl-bench-data-"))
    server = SeaweedServer(work / "s3").start()
    try:
        os.environ.update(server.env())
        server.make_bucket("bench")
        root = server.uri("bench", "synthetic")
        overrides = [
            f"data.root={root}",
            "data.split=full",
            f"data.crop_size={args.crop}",
            f"data.batch_size={args.batch}",
            "model.num_classes=6",
        ]
        cfg = load_config(None, overrides)
        t0 = time.perf_counter()
        synth = cfg.data.synthetic.model_copy(
            update={
                "num_train": args.images,
                "num_val": 8,
                "image_size": args.image_size,
                "labeled_fractions": ["full"],
            }
        )
        generate_synthetic(synth, root, overwrite=True)
        info = load_dataset_info(cfg.data)
        ids = export_files(info, work / "files")
        print(
            f"wrote {len(ids)} pairs of {args.image_size}px to S3 and to local files in "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )

        loader = rates(bench_dataloader(work / "files", ids, cfg, args.epochs, args.loader_workers))
        print(
            f"DataLoader ({args.loader_workers} workers): {loader[0]:.1f} img/s, {loader[1]:.1f} after epoch 0",
            flush=True,
        )
        # The local Ray processes inherit the S3 variables from this environment (set above); a runtime_env
        # would keep Ray from using its pre-started worker processes and add seconds to the first epoch.
        ray.init(address="local", num_cpus=2, object_store_memory=1 << 30, log_to_driver=False)
        stream = rates(bench_ray(cfg, args.epochs, str(work / "runs-worker")))
        print(f"Ray Data stream (decode: worker): {stream[0]:.1f} img/s, {stream[1]:.1f} after epoch 0", flush=True)
        extra = {}
        if args.decode_ray:
            cfg_ray = load_config(None, [*overrides, "data.decode=ray"])
            in_ray = rates(bench_ray(cfg_ray, args.epochs, str(work / "runs-ray")))
            extra = {
                "ray_data_decode_ray_img_s": round(in_ray[0], 1),
                "ray_data_decode_ray_steady_img_s": round(in_ray[1], 1),
            }
            print(f"Ray Data stream (decode: ray): {in_ray[0]:.1f} img/s, {in_ray[1]:.1f} after epoch 0", flush=True)
        ray.shutdown()
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    out = {
        "ray_data_img_s": round(stream[0], 1),
        "dataloader_img_s": round(loader[0], 1),
        "ratio": round(stream[0] / loader[0], 3),
        "ray_data_steady_img_s": round(stream[1], 1),
        "dataloader_steady_img_s": round(loader[1], 1),
        "ratio_steady": round(stream[1] / loader[1], 3),
        **extra,
        "images": len(ids),
        "epochs": args.epochs,
        "image_size": args.image_size,
        "crop": args.crop,
        "batch": args.batch,
        "loader_workers": args.loader_workers,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
