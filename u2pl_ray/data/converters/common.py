"""What every converter shares: reading an image/mask pair from disk with checks, and writing a dataset
from lists of items and labelled-id sets (each image decoded and checked once, written into each split)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from u2pl_ray.console import bar
from u2pl_ray.data.codec import encode_png, image_format
from u2pl_ray.data.errors import DataError
from u2pl_ray.data.schema import ClassInfo, Manifest
from u2pl_ray.data.shards import Sample
from u2pl_ray.data.writer import DatasetWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    id: str
    image: Path
    mask: Path | None = None


@dataclass(frozen=True)
class MaskRules:
    num_classes: int
    ignore_index: int = 255
    lookup: tuple[int, ...] | None = None  # raw value -> class id (e.g. Cityscapes labelIds -> trainIds)
    colors: tuple[tuple[int, int, int], ...] | None = None  # RGB masks: colour of each class


def read_image(path: Path) -> tuple[bytes, int, int]:
    """File bytes (kept when JPEG/PNG, else re-encoded as PNG) and the size; DataError names the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # a truncated or corrupt file fails here, not at training time
            width, height = img.size
            if image_format(data) is None:
                data = encode_png(np.asarray(img.convert("RGB")))
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"image {path} does not decode: {exc}") from None
    return data, height, width


def read_mask(path: Path, rules: MaskRules) -> np.ndarray:
    """Class ids uint8 [H, W] from a palette/grey PNG (values are ids), a 16-bit one, or an RGB one mapped
    through the class colours. DataError names the file and the offending values."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("P", "L", "I", "I;16", "1"):
                ids = np.asarray(img if mode != "1" else img.convert("L"), dtype=np.int64)
            elif mode in ("RGB", "RGBA"):
                ids = _rgb_to_ids(np.asarray(img.convert("RGB")), rules, path)
            else:
                raise DataError(f"mask {path} has image mode {mode}; expected class ids (P/L) or RGB colours")
    except FileNotFoundError:
        raise DataError(f"mask {path} does not exist") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"mask {path} does not decode: {exc}") from None
    if rules.lookup is not None:
        if ids.max(initial=0) >= len(rules.lookup) or ids.min(initial=0) < 0:
            raise DataError(f"mask {path} has values outside the id table (0..{len(rules.lookup) - 1})")
        ids = np.asarray(rules.lookup, dtype=np.int64)[ids]
    bad = (ids >= rules.num_classes) & (ids != rules.ignore_index) | (ids < 0)
    if bad.any():
        values = np.unique(ids[bad])[:8].tolist()
        raise DataError(
            f"mask {path} has class ids {values} outside 0..{rules.num_classes - 1} (ignore = {rules.ignore_index})"
        )
    return ids.astype(np.uint8)


def _rgb_to_ids(rgb: np.ndarray, rules: MaskRules, path: Path) -> np.ndarray:
    if rules.colors is None:
        raise DataError(f"mask {path} is an RGB image: give class colours in the classes file to map it")
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(rules.colors)}
    ids = np.full(code.shape, -1, dtype=np.int64)
    for value in np.unique(code):
        ids[code == value] = table.get(int(value), -1)
    if (ids < 0).any():
        unknown = [(int(v) >> 16, (int(v) >> 8) & 255, int(v) & 255) for v in np.unique(code[ids < 0])[:5]]
        raise DataError(f"mask {path} has colours {unknown} that match no class")
    return ids


def load_sample(item: Item, rules: MaskRules, with_mask: bool) -> Sample:
    image, height, width = read_image(item.image)
    if not with_mask:
        return Sample(item.id, image, None, height, width)
    if item.mask is None:
        raise DataError(f"image {item.image} (id {item.id}) is labelled in a split but has no mask")
    ids = read_mask(item.mask, rules)
    if ids.shape != (height, width):
        raise DataError(
            f"mask {item.mask} is {ids.shape[0]}x{ids.shape[1]} but image {item.image} is {height}x{width} (HxW)"
        )
    pixels = np.bincount(ids.ravel(), minlength=256)[: rules.num_classes]
    return Sample(item.id, image, encode_png(ids), height, width, class_pixels=pixels)


def _parallel(items: Sequence[Item], fn, workers: int, desc: str = "") -> Iterable[Sample]:
    with ThreadPoolExecutor(max(1, workers)) as pool:
        yield from bar(pool.map(fn, items), total=len(items), desc=desc)


def write_dataset(
    out: str,
    name: str,
    classes: Sequence[ClassInfo],
    rules: MaskRules,
    *,
    val: Sequence[Item],
    train: Sequence[Item],
    labeled: dict[str, set[str]],
    shard_rows: int,
    shard_mb: float,
    overwrite: bool,
    workers: int,
    source: dict,
) -> Manifest:
    """val items (labelled) and train items; `labeled[split]` = ids labelled in that split, the other
    train items are its unlabelled rows (written without masks)."""
    known = {it.id for it in train}
    for split, ids in labeled.items():
        missing = sorted(ids - known)[:5]
        if missing:
            raise DataError(f"split '{split}' lists ids that are not training images: {missing}")
        if not ids:
            raise DataError(f"split '{split}' has no labelled images")
    writer = DatasetWriter(
        out,
        name,
        classes,
        shard_rows=shard_rows,
        shard_mb=shard_mb,
        ignore_index=rules.ignore_index,
        overwrite=overwrite,
        source=source,
    )
    for sample in _parallel(val, lambda it: load_sample(it, rules, True), workers, "convert val"):
        writer.val().add(sample)
    log.info("val: %d images", len(val))
    any_labeled = set().union(*labeled.values()) if labeled else set()
    for split in labeled:
        writer.declare_split(split)
    train_samples = _parallel(train, lambda it: load_sample(it, rules, it.id in any_labeled), workers, "convert train")
    for i, sample in enumerate(train_samples):
        bare = Sample(sample.id, sample.image, None, sample.height, sample.width)
        for split, ids in labeled.items():
            if sample.id in ids:
                writer.part(split, "labeled").add(sample)
            else:
                writer.part(split, "unlabeled").add(bare)
        if (i + 1) % 1000 == 0:
            log.info("train: %d / %d images", i + 1, len(train))
    return writer.finish()


def read_id_list(path: Path) -> list[str]:
    """Ids from a split file: one per line, either a bare id or a path whose file stem gives the id
    (VOC 'JPEGImages/2007_000032.jpg SegmentationClassAug/2007_000032.png' lines work too)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"cannot read split list {path}: {exc.strerror or exc}") from None
    ids = []
    for line in lines:
        token = line.strip().split()[0] if line.strip() else ""
        if token and not token.startswith("#"):
            ids.append(Path(token).stem if "/" in token or "." in token else token)
    return ids


def parse_split_args(values: Sequence[str], flag: str) -> dict[str, Path]:
    out = {}
    for value in values:
        if "=" not in value:
            raise DataError(f"{flag} expects NAME=PATH, got {value!r}")
        name, path = value.split("=", 1)
        out[name.strip()] = Path(path.strip()).expanduser()
    return out
