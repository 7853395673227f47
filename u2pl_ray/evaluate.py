"""Evaluate a trained checkpoint: per-class IoU, mIoU and pixel accuracy, printed and written as JSON.

    python -m u2pl_ray.evaluate --checkpoint RUN_OR_CHECKPOINT [--data URI] [--mode center|whole|slide]
        [--scales 0.75 1 1.25] [--flip] [--model teacher|student] [--workers N] [--out FILE]

Unset options take the checkpoint's own config (its `eval` section and `data.root`; a null root is the
built-in synthetic set). `center` is the official VOC in-training protocol (pad to the crop, labels
padded with data.label_pad_value, 0 in the official variant, then the centre crop); `slide` is the
official Cityscapes protocol (windows of the crop, stride ceil(crop * 2/3), logits averaged); `whole`
runs each image in one forward. mIoU averages over all classes (absent ones count 0), as officially.
With --workers N > 1 the images are split into N shares scored by Ray tasks and the matrices summed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m u2pl_ray.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder (best), local or s3://")
    p.add_argument("--data", default=None, help="dataset root URI (default: the checkpoint's data.root)")
    p.add_argument("--split", default="val", help="'val' (default) or 'SPLIT/labeled' for a split's labelled images")
    p.add_argument("--mode", choices=("center", "whole", "slide"), default=None)
    p.add_argument("--crop-size", type=int, default=None, help="centre crop / sliding window size")
    p.add_argument("--stride-ratio", type=float, default=None, help="slide: stride = ceil(crop x ratio)")
    p.add_argument("--scales", type=float, nargs="+", default=None, help="multi-scale, e.g. 0.75 1 1.25")
    flip = p.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_true", default=None, help="add the mirrored prediction")
    flip.add_argument("--no-flip", dest="flip", action="store_false")
    p.add_argument(
        "--model",
        choices=("auto", "teacher", "student"),
        default="auto",
        help="weights to score (auto: the teacher once the run left the warm-up, as officially)",
    )
    p.add_argument("--workers", type=int, default=1, help="Ray tasks sharing the images (1: this process)")
    p.add_argument(
        "--gpus-per-worker", type=float, default=None, help="default 1 when the Ray cluster has GPUs, else 0"
    )
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--device", default="auto", help="--workers 1: cpu, cuda, cuda:1 or auto")
    p.add_argument("--address", default=None, help="Ray cluster address (default: attach or start one)")
    p.add_argument(
        "--out", default=None, help="JSON file, local or s3:// (default: evaluation_<weights>_<mode>_it<N>.json here)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from u2pl_ray.data.errors import DataError
    from u2pl_ray.data.fs import write_text_atomic
    from u2pl_ray.engine.checkpoint import CheckpointError
    from u2pl_ray.serving.evaluation import evaluate

    if args.workers < 1:
        print(f"error: --workers must be >= 1, given {args.workers}", file=sys.stderr)
        return 2
    gpus = args.gpus_per_worker or 0.0
    if args.workers > 1:
        import ray

        from u2pl_ray.engine.launch import init_ray

        init_ray(args.address)
        if args.gpus_per_worker is None and ray.cluster_resources().get("GPU", 0) >= 1:
            gpus = 1.0
    try:
        report = evaluate(
            args.checkpoint,
            data=args.data,
            part=args.split,
            which=args.model,
            mode=args.mode,
            crop_size=args.crop_size,
            stride_ratio=args.stride_ratio,
            scales=args.scales,
            flip=args.flip,
            workers=args.workers,
            num_gpus=gpus,
            num_cpus=args.cpus_per_worker,
            device=args.device,
        )
    except (CheckpointError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = report.settings
    print(
        f"{report.weights} weights of {report.checkpoint} (iteration {report.iteration}) on {report.num_images} "
        f"images of {report.part} ({report.data})"
    )
    print(
        f"mode {s['mode']}, crop {s['crop_size']}"
        + (f", stride {s['stride']}" if s.get("stride") else "")
        + f", scales {s['scales']}, flip {s['flip']}; {report.workers} worker(s), {report.seconds:.1f} s\n"
    )
    print(report.table())
    out = args.out or f"evaluation_{report.weights}_{s['mode']}_it{int(report.iteration or 0):08d}.json"
    write_text_atomic(out, json.dumps(report.to_json(), indent=1))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
