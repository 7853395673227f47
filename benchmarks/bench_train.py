"""Training throughput and where a step's time goes, for 1 and 2 Ray Train workers on this machine.

    python benchmarks/bench_train.py [--config configs/demo.yaml] [--iters 30] [--workers 1 2] [--gpu]

Runs the product's own training (u2pl_ray.train.run_training) in U2PL mode from the first iteration
(no warm-up epoch) with a checkpoint every `--iters / 3` iterations, and reads the last report (the
steady-state window) from the newest checkpoint's meta.json: images/s and the per-step breakdown
(data wait, forward, backward + optimiser, U2PL extras, all-gather, EMA) plus the time to write and
report a checkpoint. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

KEYS = (
    "images_per_s",
    "step_s",
    "time/data_wait_s",
    "time/forward_s",
    "time/backward_s",
    "time/u2pl_extra_s",
    "time/allgather_s",
    "time/sup_loss_s",
    "time/ema_s",
    "time/checkpoint_s",
)


def measure(config: str, workers: int, iters: int, gpu: bool, storage: str, cache: str | None) -> dict:
    from u2pl_ray.config import load_config
    from u2pl_ray.engine.launch import resolve_storage
    from u2pl_ray.train import run_training

    every = max(1, iters // 3)
    overrides = [
        f"scaling.num_workers={workers}",
        f"scaling.use_gpu={str(gpu).lower()}",
        "method.sup_only_epochs=0",
        "schedule.epochs=1",
        f"schedule.iters_per_epoch={iters}",
        "eval.every_epochs=0",
        f"storage.checkpoint_every_iters={every}",
        f"report_every_iters={every}",
        "step_timing=on",
        f"storage.name=bench-{workers}w",
        "tensorboard=false",
    ]
    if not gpu:
        overrides.append(f"scaling.cpus_per_worker={0.5 if workers > 1 else 1}")
    if cache:
        overrides.append(f"data.cache_dir={cache}")
    cfg = load_config(config, overrides)
    started = time.monotonic()
    rc = run_training(cfg, cfg.storage.name, resolve_storage(storage), config_path=config)
    wall = time.monotonic() - started
    if rc != 0:
        raise SystemExit(f"training with {workers} worker(s) failed (exit {rc})")
    run = Path(storage) / cfg.storage.name
    newest = sorted(p for p in run.glob("checkpoint_*") if p.is_dir())[-1]
    metrics = json.loads((newest / "meta.json").read_text())["metrics"]
    out = {k.removeprefix("time/"): round(float(metrics[k]), 4) for k in KEYS if k in metrics}
    out.update(
        workers=workers,
        iterations=iters,
        wall_s=round(wall, 1),
        global_batch=cfg.data.batch_size * 2 * workers,
        crop=cfg.data.crop_size,
        backbone=cfg.model.backbone,
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (nccl, the config's AMP setting)")
    p.add_argument("--cache-dir", help="synthetic data cache (default: the config's)")
    args = p.parse_args()

    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=1 << 30, log_to_driver=False)
    results = {}
    with tempfile.TemporaryDirectory(prefix="u2pl-bench-train-") as storage:
        for workers in args.workers:
            results[f"workers_{workers}"] = measure(args.config, workers, args.iters, args.gpu, storage, args.cache_dir)
            print(f"{workers} worker(s): {results[f'workers_{workers}']}", flush=True)
    ray.shutdown()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(
        json.dumps(
            {
                "benchmark": "bench_train",
                **results,
                "machine": f"{platform.machine()} {os.cpu_count()} cores",
                "load_avg_1m": load,
                "config": Path(args.config).name,
                "gpu": args.gpu,
            }
        )
    )


if __name__ == "__main__":
    main()
