"""What the driver learns about a dataset before training: `load_dataset_info`, `iters_per_epoch`."""

from __future__ import annotations

import logging
import math
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from u2pl_ray.data.cache import ensure_dataset
from u2pl_ray.data.errors import DataError
from u2pl_ray.data.fs import fs_read_bytes, join_uri, redact, resolve_filesystem
from u2pl_ray.data.schema import MANIFEST_NAME, Manifest, PartInfo
from u2pl_ray.data.shards import open_shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    """Picklable summary of one split of a dataset (goes to every worker in the train loop config)."""

    root: str  # URI of the dataset root (client options kept, never secrets)
    name: str
    split: str
    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int], ...]
    ignore_index: int
    labeled: PartInfo
    unlabeled: PartInfo
    val: PartInfo
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_labeled(self) -> int:
        return self.labeled.rows

    @property
    def num_unlabeled(self) -> int:
        return self.unlabeled.rows

    @property
    def num_val(self) -> int:
        return self.val.rows

    def part(self, role: str) -> PartInfo:
        return {"labeled": self.labeled, "unlabeled": self.unlabeled, "val": self.val}[role]

    def summary(self) -> str:
        return (
            f"{self.name} split {self.split}: {self.num_labeled} labelled, {self.num_unlabeled} unlabelled, "
            f"{self.num_val} val images, {self.num_classes} classes ({redact(self.root)})"
        )


def read_manifest(root: str) -> Manifest:
    uri = join_uri(root, MANIFEST_NAME)
    fs, path = resolve_filesystem(root)
    try:
        text = fs_read_bytes(fs, posixpath.join(path, MANIFEST_NAME), uri).decode("utf-8")
    except DataError as exc:
        if str(exc).startswith("not found"):
            raise DataError(
                f"{redact(root)} holds no converted dataset (no {MANIFEST_NAME}; convert one with "
                "`python -m u2pl_ray.data.convert`, or an earlier conversion did not finish)"
            ) from None
        raise
    return Manifest.from_json(text, redact(uri))


def info_from_manifest(root: str, manifest: Manifest, split: str) -> DatasetInfo:
    return DatasetInfo(
        root=root,
        name=manifest.name,
        split=split,
        class_names=tuple(c.name for c in manifest.classes),
        class_colors=tuple(c.color for c in manifest.classes),
        ignore_index=manifest.ignore_index,
        labeled=manifest.part(split, "labeled"),
        unlabeled=manifest.part(split, "unlabeled"),
        val=manifest.val,
        source=manifest.source,
    )


def load_dataset_info(cfg, check_shards: bool = True) -> DatasetInfo:
    """ensure_dataset + the manifest of `cfg` (a DataConfig) for `cfg.split`, with every shard of the split
    and of val opened (footer only) so that a missing shard or a wrong schema fails now, by name."""
    root = ensure_dataset(cfg)
    manifest = read_manifest(root)
    info = info_from_manifest(root, manifest, cfg.split)
    if info.ignore_index != cfg.ignore_index:
        raise DataError(
            f"dataset {redact(root)} uses ignore index {info.ignore_index} but data.ignore_index is "
            f"{cfg.ignore_index}; set data.ignore_index={info.ignore_index}"
        )
    if info.num_labeled == 0:
        raise DataError(
            f"split '{cfg.split}' of {redact(root)} is empty: it has no labelled images "
            f"(unlabelled: {info.num_unlabeled})"
        )
    if info.num_val == 0:
        log.warning("dataset %s has no validation images: validation will score nothing", redact(root))
    if check_shards:
        check_all_shards(info)
    return info


def check_all_shards(info: DatasetInfo) -> None:
    fs, path = resolve_filesystem(info.root)
    refs = [*info.labeled.shards, *info.unlabeled.shards, *info.val.shards]
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(refs)))) as pool:
        # list() re-raises the first failure (a DataError naming the shard)
        list(pool.map(lambda ref: open_shard(fs, path, ref, info.root), refs))


def check_split_for_method(info: DatasetInfo, needs_unlabeled: bool, method: str) -> None:
    """DataError when a semi-supervised method is asked of a split without unlabelled images: every
    worker would fail on its first step (and be retried `max_failures` times)."""
    if needs_unlabeled and info.num_unlabeled == 0:
        raise DataError(
            f"split '{info.split}' of {redact(info.root)} has no unlabelled images "
            f"({info.num_labeled} labelled): method.name={method} needs some. Choose a split with "
            "unlabelled images, or train it with method.name=supervised"
        )


def iters_per_epoch(
    info: DatasetInfo,
    cfg,
    world_size: int,
    *,
    needs_unlabeled: bool = True,
    method: str = "u2pl",
    fixed: int | None = None,
) -> int:
    """`fixed` (schedule.iters_per_epoch) when given, else floor(ceil(N / W) / B) (spec §1.5) with N the
    unlabelled images, or the labelled ones for a method that reads no unlabelled images (supervised).
    Checks first that the split suits the method."""
    check_split_for_method(info, needs_unlabeled, method)
    if fixed:
        return int(fixed)
    total = info.num_unlabeled if needs_unlabeled else info.num_labeled
    world = max(1, int(world_size))
    n = math.ceil(total / world) // cfg.batch_size
    if n <= 0:
        which = "unlabelled" if needs_unlabeled else "labelled"
        raise DataError(
            f"{total} {which} images over {world} worker(s) at data.batch_size={cfg.batch_size} "
            "make no full batch per worker: use fewer workers or a smaller batch"
        )
    return n


def stream_repeats(info: DatasetInfo, role: str, needs_unlabeled: bool, samples_per_epoch: int) -> int:
    """How many times a stream lists its rows per epoch so that one pass feeds every worker's
    `samples_per_epoch` share (iters x batch x workers) without padding: at least ceil(N_u / N_l) for
    the labelled stream of a semi-supervised run (spec §6.3), and enough to cover a fixed
    schedule.iters_per_epoch that is longer than the data (the stream cycles, reshuffled)."""
    rows = info.part(role).rows
    if rows <= 0:
        return 1
    repeats = math.ceil(samples_per_epoch / rows)
    if role == "labeled" and needs_unlabeled and info.num_unlabeled > 0:
        repeats = max(repeats, math.ceil(info.num_unlabeled / rows))
    return max(1, repeats)
