"""Predict class maps for new images with a trained checkpoint.

    python -m u2pl_ray.predict --checkpoint RUN_OR_CHECKPOINT --input DIR|LIST|IMAGE|s3://prefix --output DIR|s3://prefix

Writes OUTPUT/masks/<name>.png (paletted PNG whose pixel values are the class ids), OUTPUT/overlays/<name>.png
(class colours over the image) and OUTPUT/predictions.json (one record per input, failures included).
Many inputs go through Ray Data batch inference (an actor pool; GPUs when the cluster has them).
An unreadable input is reported by name and the others are still written; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

LOCAL_LIMIT = 64  # --engine auto: up to this many inputs in this process, more through Ray Data


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m u2pl_ray.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder (best), local or s3://")
    p.add_argument(
        "--input", required=True, help="image folder, one image, a text list of paths/URIs, or an s3:// prefix"
    )
    p.add_argument("--output", required=True, help="output folder or s3:// prefix")
    p.add_argument(
        "--model",
        choices=("auto", "teacher", "student"),
        default="auto",
        help="weights to use (auto: the teacher once the run left the warm-up)",
    )
    p.add_argument(
        "--mode",
        choices=("whole", "slide"),
        default="whole",
        help="whole image in one forward, or a sliding window of --crop-size",
    )
    p.add_argument("--crop-size", type=int, default=None, help="slide window (default: the run's eval crop)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0], help="multi-scale inference, e.g. 0.75 1 1.25")
    p.add_argument("--flip", action="store_true", help="add the horizontally flipped prediction")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours")
    p.add_argument(
        "--engine",
        choices=("auto", "local", "ray"),
        default="auto",
        help=f"local: this process; ray: Ray Data actors; auto: ray above {LOCAL_LIMIT} inputs",
    )
    p.add_argument("--concurrency", type=int, default=None, help="Ray actors (default: GPUs, else CPUs / 2)")
    p.add_argument("--batch-size", type=int, default=4, help="inputs per Ray Data batch")
    p.add_argument("--gpus-per-actor", type=float, default=None, help="default 1 when the cluster has GPUs, else 0")
    p.add_argument("--cpus-per-actor", type=float, default=1.0)
    p.add_argument("--device", default="auto", help="local engine: cpu, cuda, cuda:1 or auto")
    p.add_argument("--address", default=None, help="Ray cluster address (default: attach or start one)")
    return p


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "which": args.model,
        "mode": args.mode,
        "crop_size": args.crop_size,
        "scales": tuple(args.scales),
        "flip": args.flip,
        "alpha": args.alpha,
    }


def predict_local(
    items: Sequence[Any], checkpoint: str, out_uri: str, options: dict[str, Any], device: str = "auto"
) -> list[dict[str, Any]]:
    from u2pl_ray.console import bar
    from u2pl_ray.serving.predictor import Segmenter

    segmenter = Segmenter.from_checkpoint(checkpoint, **options, device=device)
    return [segmenter.predict_to(item, out_uri) for item in bar(items, total=len(items), desc="predict")]


def _predict_ray(items: Sequence[Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    import ray

    from u2pl_ray.engine.launch import init_ray
    from u2pl_ray.serving.ray_batch import predict_with_ray

    init_ray(args.address)
    resources = ray.cluster_resources()
    gpus = args.gpus_per_actor if args.gpus_per_actor is not None else (1.0 if resources.get("GPU", 0) >= 1 else 0.0)
    if args.concurrency:
        concurrency = args.concurrency
    elif gpus > 0:
        concurrency = max(1, int(resources.get("GPU", 1) // gpus))
    else:
        concurrency = max(1, int(resources.get("CPU", 2) // (2 * args.cpus_per_actor)))
    concurrency = min(concurrency, len(items))
    print(f"Ray Data: {concurrency} actor(s), {gpus:g} GPU / {args.cpus_per_actor:g} CPU each", flush=True)
    return predict_with_ray(
        items,
        args.checkpoint,
        args.output,
        _options(args),
        concurrency=concurrency,
        batch_size=args.batch_size,
        num_gpus=gpus,
        num_cpus=args.cpus_per_actor,
    )


def _inside(uri: str, folder: str) -> bool:
    """Whether `uri` lies under `folder` (so a second run with the output inside the input folder does
    not take the previous masks for new images)."""
    from pathlib import Path

    from u2pl_ray.data.fs import is_local, split_query

    uri, folder = split_query(uri)[0], split_query(folder)[0]
    if is_local(uri) and is_local(folder):
        inner, outer = Path(uri.removeprefix("file://")).resolve(), Path(folder.removeprefix("file://")).resolve()
        return inner == outer or outer in inner.parents
    return uri.startswith(folder.rstrip("/") + "/")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from u2pl_ray.data.errors import DataError
    from u2pl_ray.data.fs import join_uri, write_text_atomic
    from u2pl_ray.engine.artifacts import resolve_checkpoint_uri
    from u2pl_ray.engine.checkpoint import CheckpointError
    from u2pl_ray.serving.inputs import list_inputs

    started = time.monotonic()
    try:
        items = [item for item in list_inputs(args.input) if not _inside(item.uri, args.output)]
        if not items:
            raise DataError(f"no images in {args.input} outside the output folder {args.output}")
        args.checkpoint = resolve_checkpoint_uri(args.checkpoint)  # every actor then opens the same one
        engine = args.engine if args.engine != "auto" else ("ray" if len(items) > LOCAL_LIMIT else "local")
        if engine == "ray":
            records = _predict_ray(items, args)
        else:
            records = predict_local(items, args.checkpoint, args.output, _options(args), args.device)
    except (DataError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    order = {item.uri: i for i, item in enumerate(items)}
    records.sort(key=lambda r: order.get(r["input"], len(order)))
    failed = [r for r in records if not r["ok"]]
    summary = {
        "checkpoint": args.checkpoint,
        "engine": engine,
        "inputs": len(items),
        "written": len(records) - len(failed),
        "failed": len(failed),
        "seconds": round(time.monotonic() - started, 2),
        "records": records,
    }
    report_uri = join_uri(args.output, "predictions.json")
    try:
        write_text_atomic(report_uri, json.dumps(summary, indent=1))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for record in failed:
        print(f"error: {record['error']}", file=sys.stderr)
    print(
        f"{summary['written']}/{len(items)} images segmented in {summary['seconds']:.1f} s "
        f"({engine}); outputs under {args.output}; report {report_uri}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
