"""Writing a whole dataset: the val part, the parts of each split, and the manifest (last)."""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from u2pl_ray.data.errors import DataError
from u2pl_ray.data.fs import ensure_bucket, fs_write_atomic, join_uri, redact, resolve_filesystem, storage_error
from u2pl_ray.data.schema import MANIFEST_NAME, ROLES, ClassInfo, Manifest, PartInfo
from u2pl_ray.data.shards import ShardWriter

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class DatasetWriter:
    """Opens one ShardWriter per part on demand; `finish()` closes them and writes manifest.json, whose
    presence marks the dataset complete (readers refuse a root without it)."""

    def __init__(
        self,
        out_uri: str,
        name: str,
        classes: Sequence[ClassInfo],
        *,
        shard_rows: int = 256,
        shard_mb: float = 256.0,
        ignore_index: int = 255,
        overwrite: bool = False,
        source: dict[str, Any] | None = None,
    ):
        if not classes:
            raise DataError("a dataset needs at least one class")
        self.out_uri, self.name, self.classes = out_uri, name, tuple(classes)
        self.shard_rows, self.shard_mb, self.ignore_index = shard_rows, shard_mb, ignore_index
        self.source = dict(source or {})
        ensure_bucket(out_uri)
        self.fs, self.root = resolve_filesystem(out_uri)
        manifest = posixpath.join(self.root, MANIFEST_NAME)
        try:
            present = self.fs.get_file_info(manifest).type != pafs.FileType.NotFound
            if present and not overwrite:
                raise DataError(
                    f"{redact(out_uri)} already holds a dataset (manifest.json); pass --overwrite to replace it"
                )
            if present or (overwrite and self.fs.get_file_info(self.root).type == pafs.FileType.Directory):
                self.fs.delete_dir_contents(self.root, missing_dir_ok=True)
        except OSError as exc:
            raise storage_error(exc, out_uri, "prepare") from None
        self._val: ShardWriter | None = None
        self._parts: dict[tuple[str, str], ShardWriter] = {}

    def _writer(self, part_dir: str, label: str) -> ShardWriter:
        return ShardWriter(
            self.fs,
            self.root,
            part_dir,
            label,
            shard_rows=self.shard_rows,
            shard_mb=self.shard_mb,
            num_classes=len(self.classes),
            root_uri=self.out_uri,
        )

    def val(self) -> ShardWriter:
        if self._val is None:
            self._val = self._writer("val", "val")
        return self._val

    def part(self, split: str, role: str) -> ShardWriter:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if not _SPLIT_NAME.match(split):
            raise DataError(f"split name {split!r} may only use letters, digits, '_', '-' and '.'")
        key = (split, role)
        if key not in self._parts:
            self._parts[key] = self._writer(f"splits/{split}/{role}", f"{split}/{role}")
        return self._parts[key]

    def declare_split(self, split: str) -> None:
        """Makes a split exist even when one of its roles gets no rows (e.g. 'full' has no unlabelled)."""
        for role in ROLES:
            self.part(split, role)

    def finish(self) -> Manifest:
        val = self._val.close() if self._val is not None else PartInfo()
        splits: dict[str, dict[str, PartInfo]] = {}
        for (split, role), writer in sorted(self._parts.items()):
            splits.setdefault(split, {})[role] = writer.close()
        manifest = Manifest(
            name=self.name,
            classes=self.classes,
            val=val,
            splits=splits,
            ignore_index=self.ignore_index,
            source=self.source,
        )
        fs_write_atomic(
            self.fs,
            posixpath.join(self.root, MANIFEST_NAME),
            manifest.to_json().encode(),
            join_uri(self.out_uri, MANIFEST_NAME),
        )
        return manifest


# --- splitting helpers shared by the converters --------------------------------------------------


def parse_fraction(text: str) -> float:
    """'1_8' / '1/8' -> 0.125, 'full' -> 1.0, '0.25' -> 0.25."""
    text = text.strip().lower()
    if text == "full":
        return 1.0
    m = re.fullmatch(r"1[_/](\d+)", text)
    try:
        value = 1.0 / int(m.group(1)) if m else float(text)
    except (ValueError, ZeroDivisionError):
        value = -1.0
    if not 0 < value <= 1:
        raise DataError(f"labelled fraction {text!r} must be 'full', '1_N' (N >= 1) or a number in (0, 1]")
    return value


def fraction_name(text: str) -> str:
    """The split directory name for a fraction: '1/8' -> '1_8'."""
    text = text.strip().lower().replace("/", "_")
    parse_fraction(text)
    return text


def labeled_count(total: int, fraction: float) -> int:
    """Labelled images of a fraction, rounded half up (VOC 1464/16 = 91.5 -> 92, as the official splits)."""
    return max(1, min(total, int(math.floor(total * fraction + 0.5))))


def nested_labeled_sets(ids: Sequence[str], fractions: Sequence[str], seed: int) -> dict[str, set[str]]:
    """Labelled id sets per fraction, nested (1/16 within 1/8 within 1/4): prefixes of one seeded order."""
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    return {name: set(order[: labeled_count(len(ids), parse_fraction(name))]) for name in fractions}
