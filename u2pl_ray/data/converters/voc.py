"""PASCAL VOC 2012 (+ SBD 'SegmentationClassAug'): a VOCdevkit tree and the official split lists.

VOC2012/JPEGImages/<id>.jpg
VOC2012/SegmentationClassAug/<id>.png   (or SegmentationClass/, palette PNGs; 255 = boundary)
splits/pascal/1464/labeled.txt, unlabeled.txt   (one id per line, as the U2PL repo ships them)
splits/pascal/val.txt                            (or VOC2012/ImageSets/Segmentation/val.txt)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from u2pl_ray.data.converters.common import Item, MaskRules, parse_split_args, read_id_list, write_dataset
from u2pl_ray.data.errors import DataError
from u2pl_ray.data.palette import VOC_CLASSES, voc_palette
from u2pl_ray.data.schema import ClassInfo, Manifest
from u2pl_ray.data.writer import fraction_name, nested_labeled_sets


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, help="VOC2012 folder (holds JPEGImages/)")
    p.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a split from a folder with labeled.txt and unlabeled.txt (repeatable)",
    )
    p.add_argument(
        "--fraction",
        action="append",
        default=[],
        metavar="1_N",
        help="a seeded random split of --train-list instead (repeatable; nested)",
    )
    p.add_argument(
        "--train-list",
        help="ids of all training images for --fraction (default: the union of "
        "the --split lists, else ImageSets/Segmentation/train.txt)",
    )
    p.add_argument("--val", help="val id list (default ImageSets/Segmentation/val.txt)")
    p.add_argument("--masks", help="mask folder (default SegmentationClassAug if present, else SegmentationClass)")


def convert(args: argparse.Namespace) -> Manifest:
    root = Path(args.root).expanduser()
    if not (root / "JPEGImages").is_dir():
        raise DataError(f"{root} is not a VOC folder: JPEGImages/ is missing")
    masks = root / (
        args.masks or ("SegmentationClassAug" if (root / "SegmentationClassAug").is_dir() else "SegmentationClass")
    )
    if not masks.is_dir():
        raise DataError(f"mask folder {masks} is missing")

    def item(i: str) -> Item:
        return Item(i, root / "JPEGImages" / f"{i}.jpg", masks / f"{i}.png")

    labeled: dict[str, set[str]] = {}
    train_ids: list[str] = []
    for name, folder in parse_split_args(args.split, "--split").items():
        lab, unl = read_id_list(folder / "labeled.txt"), read_id_list(folder / "unlabeled.txt")
        labeled[name] = set(lab)
        train_ids.extend([*lab, *unl])
    if args.fraction:
        listed = Path(args.train_list) if args.train_list else None
        pool = (
            read_id_list(listed)
            if listed
            else (train_ids or read_id_list(root / "ImageSets" / "Segmentation" / "train.txt"))
        )
        names = [fraction_name(f) for f in args.fraction]
        labeled.update(nested_labeled_sets(pool, names, args.seed))
        train_ids.extend(pool)
    if not labeled:
        raise DataError("give at least one --split NAME=DIR or --fraction 1_N")
    train_ids = list(dict.fromkeys(train_ids))
    val_ids = read_id_list(Path(args.val) if args.val else root / "ImageSets" / "Segmentation" / "val.txt")
    palette = voc_palette(len(VOC_CLASSES))
    classes = [ClassInfo(i, n, palette[i]) for i, n in enumerate(VOC_CLASSES)]
    return write_dataset(
        args.out,
        "voc",
        classes,
        MaskRules(len(classes)),
        val=[item(i) for i in val_ids],
        train=[item(i) for i in train_ids],
        labeled=labeled,
        shard_rows=args.shard_rows,
        shard_mb=args.shard_mb,
        overwrite=args.overwrite,
        workers=args.workers,
        source={"converter": "voc", "root": str(root), "masks": masks.name, "splits": sorted(labeled)},
    )
