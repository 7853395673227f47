"""Convert a dataset to u2pl-ray shards:

    python -m u2pl_ray.data.convert voc --root VOCdevkit/VOC2012 --split 1464=splits/pascal/1464 \
        --val splits/pascal/val.txt --out s3://bucket/voc
    python -m u2pl_ray.data.convert cityscapes --root cityscapes --fraction 1_8 --out /data/cs
    python -m u2pl_ray.data.convert folder --root mydata --classes classes.txt --fraction 1_8 --out URI
    python -m u2pl_ray.data.convert synthetic --out URI [--num-train 640 --image-size 96 ...]

--out is any URI u2pl-ray resolves (local path, s3://bucket/prefix[?endpoint_override=host:port&scheme=http],
fsspec protocols); credentials come from the environment or a profile, never from the command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from u2pl_ray.data.errors import DataError
from u2pl_ray.data.fs import redact


def _synthetic_arguments(p: argparse.ArgumentParser) -> None:
    from u2pl_ray.config import SyntheticConfig

    for name, field in SyntheticConfig.model_fields.items():
        if name in ("shard_rows", "seed"):
            continue  # the common --shard-rows / --seed
        flag = "--" + name.replace("_", "-")
        if name == "labeled_fractions":
            p.add_argument(flag, nargs="+", default=None, help=field.description)
        else:
            kind = {int: int, float: float}.get(field.annotation, str)  # type: ignore[arg-type]
            p.add_argument(flag, type=kind, default=None, help=field.description)


def _convert_synthetic(args: argparse.Namespace):
    from u2pl_ray.config import SyntheticConfig
    from u2pl_ray.data.synthetic import generate_synthetic

    values = {k: getattr(args, k) for k in SyntheticConfig.model_fields if getattr(args, k, None) is not None}
    values["shard_rows"] = args.shard_rows
    values["seed"] = args.seed
    return generate_synthetic(SyntheticConfig(**values), args.out, overwrite=args.overwrite)


def parser() -> argparse.ArgumentParser:
    from u2pl_ray.data.converters import cityscapes, folder, voc

    top = argparse.ArgumentParser(
        prog="python -m u2pl_ray.data.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subs = top.add_subparsers(dest="kind", required=True)
    for name, module in (("voc", voc), ("cityscapes", cityscapes), ("folder", folder), ("synthetic", None)):
        p = subs.add_parser(name, help=(module.__doc__ or "the built-in synthetic benchmark").strip().splitlines()[0])
        p.add_argument("--out", required=True, help="output URI (local path, s3://bucket/prefix, ...)")
        p.add_argument("--shard-rows", type=int, default=256, help="rows per shard (>= 128 reads best)")
        p.add_argument("--shard-mb", type=float, default=256.0, help="start a new shard past this size")
        p.add_argument("--seed", type=int, default=0, help="seed of random splits")
        p.add_argument("--workers", type=int, default=4, help="threads reading and checking images")
        p.add_argument("--overwrite", action="store_true", help="replace a dataset already at --out")
        if module is None:
            _synthetic_arguments(p)
        else:
            module.add_arguments(p)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    from u2pl_ray.data.converters import cityscapes, folder, voc

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parser().parse_args(argv)
    started = time.monotonic()
    try:
        if args.kind == "synthetic":
            manifest = _convert_synthetic(args)
        else:
            manifest = {"voc": voc, "cityscapes": cityscapes, "folder": folder}[args.kind].convert(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    splits = ", ".join(
        f"{s} ({p['labeled'].rows} labelled / {p['unlabeled'].rows} unlabelled)"
        for s, p in sorted(manifest.splits.items())
    )
    print(
        f"wrote {manifest.name} to {redact(args.out)} in {time.monotonic() - started:.1f} s: "
        f"{manifest.val.rows} val images; splits: {splits}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
