"""A plain folder: what a user with a custom dataset has.

    DIR/images/<stem>.{jpg,jpeg,png,bmp,tif,webp}   every image, labelled or not
    DIR/masks/<stem>.png                             masks of the labelled ones (ids, or RGB + class colours)
    classes.txt                                      one class per line: `name` or `name R G B`, id = line order

Images without a mask are unlabelled (no fake masks needed). Validation: `--val-list FILE` (stems) or a
seeded `--val-fraction` of the masked images. Splits: `--fraction 1_N` (a nested seeded share of the
masked training images; `full` = all of them) or `--split NAME=FILE` (stems labelled in that split).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from u2pl_ray.data.converters.common import Item, MaskRules, parse_split_args, read_id_list, write_dataset
from u2pl_ray.data.errors import DataError
from u2pl_ray.data.palette import voc_palette
from u2pl_ray.data.schema import ClassInfo, Manifest
from u2pl_ray.data.writer import fraction_name, labeled_count, nested_labeled_sets

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, help="folder holding images/ and masks/")
    p.add_argument("--images", default="images", help="image subfolder (default images)")
    p.add_argument("--masks", default="masks", help="mask subfolder (default masks)")
    p.add_argument("--classes", required=True, help="classes file: `name` or `name R G B` per line")
    p.add_argument(
        "--fraction",
        action="append",
        default=[],
        metavar="1_N",
        help="labelled share of the masked training images (repeatable; nested; 'full' = all)",
    )
    p.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a split whose labelled stems are listed in FILE (repeatable)",
    )
    p.add_argument("--val-list", help="stems of the validation images (they need masks)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="seeded share of the masked images held out for validation when --val-list is absent",
    )
    p.add_argument("--name", default="folder", help="dataset name in the manifest")


def read_classes(path: Path) -> list[ClassInfo]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"cannot read classes file {path}: {exc.strerror or exc}") from None
    entries = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = re.split(r"[,\s]+", text)
        if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            colour = tuple(int(p) for p in parts[1:])
            if any(c > 255 for c in colour):
                raise DataError(f"{path}:{number}: colour values must be 0..255, got {colour}")
            entries.append((parts[0], colour))
        elif len(parts) == 1:
            entries.append((parts[0], None))
        else:
            raise DataError(f"{path}:{number}: expected `name` or `name R G B`, got {line!r}")
    if len(entries) < 2:
        raise DataError(f"classes file {path} lists {len(entries)} class(es); segmentation needs at least 2")
    if len(entries) > 255:
        raise DataError(f"classes file {path} lists {len(entries)} classes; at most 255 fit in 8-bit masks")
    palette = voc_palette(len(entries))
    return [ClassInfo(i, name, colour or palette[i]) for i, (name, colour) in enumerate(entries)]


def convert(args: argparse.Namespace) -> Manifest:
    root = Path(args.root).expanduser()
    image_dir, mask_dir = root / args.images, root / args.masks
    if not image_dir.is_dir():
        raise DataError(f"image folder {image_dir} is missing")
    classes = read_classes(Path(args.classes).expanduser())
    images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {image_dir}")
    masks = {p.stem: p for p in sorted(mask_dir.glob("*.png"))} if mask_dir.is_dir() else {}
    orphans = sorted(set(masks) - set(images))[:5]
    if orphans:
        raise DataError(f"masks without an image in {image_dir}: {orphans}")
    masked = [s for s in images if s in masks]
    if args.val_list:
        val_ids = read_id_list(Path(args.val_list))
        unknown = [s for s in val_ids if s not in masks][:5]
        if unknown:
            raise DataError(f"validation images need masks; none for {unknown} in {mask_dir}")
    else:
        order = np.random.default_rng(args.seed + 1).permutation(len(masked))
        count = labeled_count(len(masked), args.val_fraction) if args.val_fraction > 0 and masked else 0
        val_ids = sorted(masked[i] for i in order[:count])
    val_set = set(val_ids)
    train_ids = [s for s in images if s not in val_set]
    labeled: dict[str, set[str]] = {}
    for name, listing in parse_split_args(args.split, "--split").items():
        chosen = set(read_id_list(listing))
        unknown = sorted(s for s in chosen if s not in masks)[:5]
        if unknown:
            raise DataError(f"split '{name}' ({listing}) labels images without masks: {unknown}")
        labeled[name] = chosen
    if args.fraction:
        pool = [s for s in train_ids if s in masks]
        if not pool:
            raise DataError(f"no training image has a mask in {mask_dir}: nothing to label")
        labeled.update(nested_labeled_sets(pool, [fraction_name(f) for f in args.fraction], args.seed))
    if not labeled:
        raise DataError("give at least one --fraction 1_N or --split NAME=FILE")
    rules = MaskRules(len(classes), 255, colors=tuple(c.color for c in classes))  # for RGB masks
    return write_dataset(
        args.out,
        args.name,
        classes,
        rules,
        val=[Item(s, images[s], masks[s]) for s in val_ids],
        train=[Item(s, images[s], masks.get(s)) for s in train_ids],
        labeled=labeled,
        shard_rows=args.shard_rows,
        shard_mb=args.shard_mb,
        overwrite=args.overwrite,
        workers=args.workers,
        source={"converter": "folder", "root": str(root), "splits": sorted(labeled), "val_images": len(val_ids)},
    )
