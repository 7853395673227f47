"""The GPU check: one command that, on one GPU, trains the VOC-shaped U2PL configuration (deep-stem
ResNet-101 DeepLabv3+, 513 crops, 4 labelled + 4 unlabelled images, random weights) for a fixed number
of steps in fp32, bf16 and fp16 (nccl, SyncBatchNorm on), then evaluates and exports the result on the GPU.

    bash benchmarks/gpu_check.sh [--steps 20] [--dry-run]

Per precision: images/s, peak GPU memory, the U2PL share of a step (everything beyond the supervised
forward/backward: teacher forwards, entropy, strong augmentation, contrastive loss, all-gather) and the
contrastive loss's time; then `evaluate` (centre crop) and `export` (TorchScript) of the bf16 run on the
GPU. The last line printed is one JSON object. `--dry-run` runs the same code on the CPU with a tiny
backbone, 65-pixel crops and 2 steps (what `make test` runs).
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
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

CONFIG = REPO / "configs" / "u2pl_r101-os8_4xb4-80e_voc-classic-513.yaml"
PRECISIONS = {"fp32": "none", "bf16": "bf16", "fp16": "fp16"}
# Step-time keys read from the last checkpoint's report (step_timing: on synchronises around each phase).
TIME_KEYS = (
    "step_s",
    "time/forward_s",
    "time/backward_s",
    "time/u2pl_extra_s",
    "time/allgather_s",
    "time/contrastive_s",
    "time/sup_loss_s",
    "time/ema_s",
)


def overrides(steps: int, amp: str, dry_run: bool, cache: str) -> list[str]:
    common = [
        "data.root=null",
        f"data.cache_dir={cache}",
        "data.split='1_2'",
        "data.decode=worker",
        "data.synthetic.num_train=32",
        "data.synthetic.num_val=4",
        "data.synthetic.labeled_fractions=['1_2']",
        "data.synthetic.object_source=procedural",
        "model.pretrained=null",
        "method.sup_only_epochs=0",
        "schedule.epochs=1",
        f"schedule.iters_per_epoch={steps}",
        "eval.every_epochs=1",
        "step_timing=on",
        f"report_every_iters={max(1, steps // 2)}",
        "scaling.num_workers=1",
        "tensorboard=false",
        "max_failures=0",
        f"scaling.amp={amp}",
        "model.sync_bn=true",
    ]
    if dry_run:  # the same code path on the CPU: tiny network, small crops
        return [
            *common,
            "scaling.use_gpu=false",
            "scaling.cpus_per_worker=1",
            "model.backbone=tiny",
            "model.decoder_channels=16",
            "model.low_level_channels=8",
            "model.rep_dim=16",
            "data.crop_size=65",
            "eval.crop_size=65",
            "data.synthetic.image_size=65",
            "method.num_queries=16",
            "method.num_negatives=8",
            "method.bank_size_class0=500",
            "method.bank_size=300",
        ]
    return [*common, "scaling.use_gpu=true", "scaling.cpus_per_worker=8", "data.synthetic.image_size=513"]


def train_one(name: str, amp: str, args: argparse.Namespace, storage: str, cache: str) -> dict:
    from u2pl_ray.config import load_config
    from u2pl_ray.engine.launch import resolve_storage
    from u2pl_ray.train import run_training

    cfg = load_config(CONFIG, [*overrides(args.steps, amp, args.dry_run, cache), f"storage.name={name}"])
    started = time.monotonic()
    if run_training(cfg, name, resolve_storage(storage), config_path=str(CONFIG)) != 0:
        raise SystemExit(f"{name}: training failed")
    run = Path(storage) / name
    newest = sorted(p for p in run.glob("checkpoint_*") if p.is_dir())[-1]
    metrics = json.loads((newest / "meta.json").read_text())["metrics"]
    summary = json.loads((run / "summary.json").read_text())
    step = float(metrics.get("step_s", 0.0)) or float("nan")
    extra = sum(float(metrics.get(k, 0.0)) for k in ("time/u2pl_extra_s", "time/allgather_s"))
    teacher = float(metrics.get("time/forward_s", 0.0))  # forward includes the teacher's two forwards
    return {
        "images_per_s": round(float(metrics.get("images_per_s", summary["images_per_s"])), 2),
        "peak_gpu_memory_gib": round(float(metrics["gpu/peak_memory_gib"]), 2)
        if "gpu/peak_memory_gib" in metrics
        else None,
        "u2pl_extra_share": round(extra / step, 3),
        "forward_share": round(teacher / step, 3),
        "contrastive_s": round(float(metrics.get("time/contrastive_s", 0.0)), 4),
        "step_s": round(step, 4),
        "miou": summary["last_miou"],
        "wall_s": round(time.monotonic() - started, 1),
        "run": str(run),
    }


def evaluate_and_export(run: str, dry_run: bool) -> dict:
    from u2pl_ray.evaluate import main as evaluate
    from u2pl_ray.export import main as export

    device = "cpu" if dry_run else "cuda"
    out: dict = {}
    started = time.monotonic()
    report = Path(run) / "gpu_check_eval.json"
    rc = evaluate(["--checkpoint", run, "--device", device, "--out", str(report)])
    out["evaluate"] = {"rc": rc, "s": round(time.monotonic() - started, 1)}
    if rc == 0:
        out["evaluate"]["miou"] = json.loads(report.read_text()).get("miou")
    started = time.monotonic()
    rc = export(["--checkpoint", run, "--format", "torchscript", "--out", str(Path(run) / "model.pt")])
    out["export"] = {"rc": rc, "s": round(time.monotonic() - started, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="training steps per precision (default 20)")
    p.add_argument("--dry-run", action="store_true", help="the same code on the CPU, tiny and short")
    p.add_argument("--precisions", nargs="+", choices=sorted(PRECISIONS), default=list(PRECISIONS))
    args = p.parse_args(argv)
    if args.dry_run:
        args.steps = min(args.steps, 2)
    else:
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA GPU visible (use --dry-run to check the code path on the CPU)", file=sys.stderr)
            return 2

    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), object_store_memory=1 << 30, log_to_driver=False)
    results: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="u2pl-gpu-check-") as tmp:
            for name in args.precisions:
                results[name] = train_one(name, PRECISIONS[name], args, f"{tmp}/runs", f"{tmp}/cache")
                print(f"{name}: {json.dumps(results[name])}", flush=True)
            last = results.get("bf16") or next(iter(results.values()))
            results.update(evaluate_and_export(last["run"], args.dry_run))
            for r in results.values():
                if isinstance(r, dict):
                    r.pop("run", None)
    finally:
        ray.shutdown()
    device = "cpu (dry run)"
    if not args.dry_run:
        import torch

        device = torch.cuda.get_device_name(0)
    print(
        json.dumps(
            {
                "benchmark": "gpu_check",
                "device": device,
                "steps": args.steps,
                "dry_run": args.dry_run,
                "machine": f"{platform.machine()} {os.cpu_count()} cores",
                **results,
            }
        )
    )
    ok = all(results[k]["rc"] == 0 for k in ("evaluate", "export"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
