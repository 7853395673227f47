"""Class colours: the checkpoint's own (names + RGB from the dataset manifest) or the VOC-style palette,
and the two ways labels are drawn: as colours, and blended over the image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

IGNORE_COLOR = (224, 224, 192)  # the colour VOC's own PNGs give the ignore label 255


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map as uint8 [n, 3]: 0 black, 1 (128,0,0), 2 (0,128,0), ..., 15 (192,128,128)."""
    from u2pl_ray.data.palette import voc_palette as colours

    return np.asarray(colours(n), dtype=np.uint8).reshape(n, 3)


@dataclass(frozen=True)
class ClassTable:
    """Names and colours of the classes a model predicts (ids 0..C-1)."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    source: str  # "checkpoint" or "voc-palette"

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def palette(self, ignore_index: int = 255) -> np.ndarray:
        """uint8 [256, 3]: class colours first, the ignore colour at `ignore_index`, VOC colours elsewhere,
        so any uint8 label map can be looked up (and written as a paletted PNG)."""
        table = voc_palette(256)
        table[: self.num_classes] = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)
        if self.num_classes <= ignore_index < 256:
            table[ignore_index] = IGNORE_COLOR
        return table

    def to_json(self) -> list[dict[str, Any]]:
        return [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(zip(self.names, self.colors))]


def _field(entry: Any, key: str) -> Any:
    if isinstance(entry, Mapping):
        return entry.get(key)
    return getattr(entry, key, None)


def class_table(classes: Sequence[Any] | None, num_classes: int) -> ClassTable:
    """The checkpoint's classes (dicts or objects with `name` and `color`, or plain names) when they
    cover all `num_classes`, else names "class_<i>" and the VOC palette. Missing colours fall back to
    the VOC colour of that id."""
    voc = voc_palette(max(num_classes, 1))
    entries = list(classes or [])
    if len(entries) != num_classes:
        names = tuple(f"class_{i}" for i in range(num_classes))
        return ClassTable(names, tuple(tuple(int(v) for v in voc[i]) for i in range(num_classes)), "voc-palette")
    names, colors = [], []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            name, color = entry, None
        else:
            name, color = _field(entry, "name"), _field(entry, "color")
        names.append(str(name) if name is not None else f"class_{i}")
        if color is not None and len(color) == 3 and all(0 <= int(v) <= 255 for v in color):
            colors.append(tuple(int(v) for v in color))
        else:
            colors.append(tuple(int(v) for v in voc[i]))
    return ClassTable(tuple(names), tuple(colors), "checkpoint")  # type: ignore[arg-type]


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] colours of an integer label map [H, W] through a [256, 3] palette."""
    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() >= len(palette)):
        raise ValueError(
            f"label values {int(label.min())}..{int(label.max())} outside the palette (0..{len(palette) - 1})"
        )
    return palette[label.astype(np.int64)]


def overlay(
    image: np.ndarray, label: np.ndarray, palette: np.ndarray, alpha: float = 0.5, ignore_index: int | None = 255
) -> np.ndarray:
    """The image [H, W, 3] uint8 with the label colours blended in at `alpha`; ignored pixels unchanged."""
    image = np.asarray(image)
    if image.shape[:2] != np.asarray(label).shape:
        raise ValueError(f"image {image.shape[:2]} and label {np.asarray(label).shape} sizes differ")
    colors = colorize(label, palette).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colors
    if ignore_index is not None:
        keep = np.asarray(label) == ignore_index
        blended[keep] = image[keep]
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
