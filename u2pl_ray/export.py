"""Export a trained model to ONNX or TorchScript, checked against the eager model.

    python -m u2pl_ray.export --checkpoint RUN_OR_CHECKPOINT --format onnx|torchscript [--out PATH] [--size H W]

Writes the model file and, next to it, <name>.json: the preprocessing (RGB, (pixel - mean) / std, NCHW
float32), the classes with their colours, the output semantics (logits [B, C, H, W] at the input size)
and the figures of the check. The check runs the saved file (onnxruntime / torch.jit.load) on two inputs
(the export size, and a batch of two at another size) and requires
|exported - eager| <= 1e-4 + 1e-3 * |eager| everywhere; otherwise nothing is written and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m u2pl_ray.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder (best), local or s3://")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    p.add_argument(
        "--out", default=None, help="model file (local or s3://); default u2pl_<weights>_it<iteration>.onnx|.pt here"
    )
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="example input size for the export and the check (default: the run's eval crop)",
    )
    p.add_argument(
        "--model",
        choices=("auto", "teacher", "student"),
        default="auto",
        help="weights to export (auto: the teacher once the run left the warm-up)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from u2pl_ray.data.errors import DataError
    from u2pl_ray.engine.checkpoint import CheckpointError
    from u2pl_ray.serving.exporting import ATOL, RTOL, ExportCheckError, export_model

    if args.size is not None and min(args.size) < 8:
        print(f"error: --size {args.size[0]} {args.size[1]} is too small (at least 8 x 8)", file=sys.stderr)
        return 2
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            print(
                f"error: ONNX export needs onnx and onnxruntime (pip install 'u2pl-ray[export]'): {exc}",
                file=sys.stderr,
            )
            return 2
    try:
        result = export_model(
            args.checkpoint, args.format, args.out, which=args.model, size=tuple(args.size) if args.size else None
        )
    except ExportCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (CheckpointError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported the {result.sidecar['checkpoint']['weights']} weights of {result.sidecar['checkpoint']['source']}")
    for case in result.cases:
        print(
            f"  check {case.shape}: max |exported - eager| = {case.max_abs_diff:.2e} "
            f"(tolerance {ATOL:g} + {RTOL:g}*|eager|), argmax agreement {100 * case.argmax_agreement:.3f}%"
        )
    print(f"model: {result.model_uri}\npreprocessing and classes: {result.json_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
