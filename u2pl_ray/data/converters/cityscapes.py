"""Cityscapes: leftImg8bit/ + gtFine/ with `*_labelTrainIds.png` (19 classes, 255 ignore), or with
`*_labelIds.png` mapped through the standard id -> trainId table.

    cityscapes/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    cityscapes/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png  (or _labelIds.png)
    splits/cityscapes/744/labeled.txt, unlabeled.txt   (U2PL format: leftImg8bit/train/... paths, or ids)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from u2pl_ray.data.converters.common import Item, MaskRules, parse_split_args, read_id_list, write_dataset
from u2pl_ray.data.errors import DataError
from u2pl_ray.data.palette import cityscapes_id_to_train_id, cityscapes_train_classes
from u2pl_ray.data.schema import ClassInfo, Manifest
from u2pl_ray.data.writer import fraction_name, nested_labeled_sets

_IMAGE_SUFFIX = "_leftImg8bit"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, help="folder holding leftImg8bit/ and gtFine/")
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
        help="a seeded random split of all training images instead (repeatable; nested)",
    )
    p.add_argument(
        "--labels",
        choices=["auto", "trainIds", "labelIds"],
        default="auto",
        help="mask files to read: *_labelTrainIds.png, or *_labelIds.png mapped to trainIds "
        "(auto: trainIds when present)",
    )


def _stem_to_id(stem: str) -> str:
    return stem[: -len(_IMAGE_SUFFIX)] if stem.endswith(_IMAGE_SUFFIX) else stem


def _item(root: Path, part: str, image_id: str, labels: str) -> Item:
    city = image_id.split("_", 1)[0]
    image = root / "leftImg8bit" / part / city / f"{image_id}{_IMAGE_SUFFIX}.png"
    base = root / "gtFine" / part / city / f"{image_id}_gtFine_"
    return Item(image_id, image, Path(f"{base}labelTrainIds.png" if labels == "trainIds" else f"{base}labelIds.png"))


def _ids_in(root: Path, part: str) -> list[str]:
    folder = root / "leftImg8bit" / part
    if not folder.is_dir():
        raise DataError(f"{folder} is missing: is {root} a Cityscapes folder?")
    return sorted(_stem_to_id(p.stem) for p in folder.glob(f"*/*{_IMAGE_SUFFIX}.png"))


def convert(args: argparse.Namespace) -> Manifest:
    root = Path(args.root).expanduser()
    labels = args.labels
    if labels == "auto":
        found = next((root / "gtFine").glob("*/*/*_gtFine_labelTrainIds.png"), None)
        labels = "trainIds" if found is not None else "labelIds"
    train_ids = _ids_in(root, "train")
    labeled: dict[str, set[str]] = {}
    for name, folder in parse_split_args(args.split, "--split").items():
        labeled[name] = {_stem_to_id(i) for i in read_id_list(folder / "labeled.txt")}
    if args.fraction:
        labeled.update(nested_labeled_sets(train_ids, [fraction_name(f) for f in args.fraction], args.seed))
    if not labeled:
        raise DataError("give at least one --split NAME=DIR or --fraction 1_N")
    classes = [ClassInfo(i, name, colour) for i, (name, colour) in enumerate(cityscapes_train_classes())]
    lookup = tuple(cityscapes_id_to_train_id()) if labels == "labelIds" else None
    return write_dataset(
        args.out,
        "cityscapes",
        classes,
        MaskRules(len(classes), 255, lookup=lookup),
        val=[_item(root, "val", i, labels) for i in _ids_in(root, "val")],
        train=[_item(root, "train", i, labels) for i in train_ids],
        labeled=labeled,
        shard_rows=args.shard_rows,
        shard_mb=args.shard_mb,
        overwrite=args.overwrite,
        workers=args.workers,
        source={"converter": "cityscapes", "root": str(root), "labels": labels, "splits": sorted(labeled)},
    )
