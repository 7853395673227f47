"""The training stream: what the train loop calls.

Driver:
    info = load_dataset_info(cfg.data)
    semi = method_class(cfg.method.name).needs_unlabeled
    n = iters_per_epoch(info, cfg.data, world_size, needs_unlabeled=semi, method=cfg.method.name,
                        fixed=cfg.schedule.iters_per_epoch)
    datasets = build_train_datasets(cfg.data, info, needs_unlabeled=semi, iters_per_epoch=n, world_size=world_size)
    TorchTrainer(..., datasets=datasets, dataset_config=train_dataset_config(cfg.data))
Worker:
    stream = TrainStream(cfg.data, labeled=get_dataset_shard("labeled"), unlabeled=... or None,
                         rank=r, world_size=w, seed=s, iters_per_epoch=n, info=info)
    for batch in stream.epoch(epoch, start=k): ...   # exactly n - k batches
    stream.counters(); stream.state_dict(); stream.load_state_dict(state)

The unlabelled stream defines the epoch; the labelled one is resampled to the same length (spec §6.3),
and either cycles when n is fixed longer than the data. Every rank yields exactly n batches per epoch
(a share left short by skipped rows is padded, see producer.batches_of), so collectives stay in lock-step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from u2pl_ray.data.datasets import (
    ROLE_STREAM,
    build_train_datasets,
    check_cpu_budget,
    local_plan_rows,
    plan_dataset,
    train_dataset_config,
)
from u2pl_ray.data.errors import DataError
from u2pl_ray.data.info import DatasetInfo, iters_per_epoch, load_dataset_info
from u2pl_ray.data.plan import plan_segments, rank_range
from u2pl_ray.data.producer import Counters, Producer, StackedBatch, batches_of, items_from_batches
from u2pl_ray.data.rows import RowSpec
from u2pl_ray.data.val import iter_val_samples

__all__ = [
    "Batch",
    "TrainStream",
    "build_train_datasets",
    "check_cpu_budget",
    "iter_val_samples",
    "iters_per_epoch",
    "load_dataset_info",
    "train_dataset_config",
]

_PLAN_EXTRA_ROWS = 64  # rows planned past a rank's share when skipped samples left it short
_PULL_ROWS = 32  # rows per pull from Ray Data: tiny pulls cost more than the rows


@dataclass
class Batch:
    image_l: torch.Tensor  # uint8 [B, 3, H, W]
    label_l: torch.Tensor  # uint8 [B, H, W]
    image_u: torch.Tensor | None  # uint8 [B, 3, H, W]
    ids_l: list[str]
    ids_u: list[str] | None
    pad_u: torch.Tensor | None = None  # uint8 [B, H, W]: 255 where image_u's crop padded
    image_u2: torch.Tensor | None = None  # a second, independent weak view of the same unlabelled images
    pad_u2: torch.Tensor | None = None


class TrainStream:
    def __init__(
        self,
        cfg,
        *,
        labeled: Any,
        unlabeled: Any = None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        iters_per_epoch: int,
        info: DatasetInfo | None = None,
        unlabeled_views: int = 1,
        read_unlabeled: bool | None = None,
    ):
        self.cfg = cfg
        self.info = info if info is not None else load_dataset_info(cfg, check_shards=False)
        self.rank, self.world_size, self.seed = int(rank), int(world_size), int(seed)
        self.iters = int(iters_per_epoch)
        self.shards = {"labeled": labeled, "unlabeled": unlabeled}
        # `unlabeled=None`: a method without unlabelled images (supervised).
        # read_unlabeled: whether the method reads unlabelled images (default: an unlabelled shard was given;
        # the local reader has no shards and is told).
        semi = unlabeled is not None if read_unlabeled is None else read_unlabeled
        self.roles = ["labeled"] + (["unlabeled"] if semi and self.info.num_unlabeled > 0 else [])
        if not cfg.deterministic and labeled is None:
            raise DataError("TrainStream needs the labelled dataset shard (ray.train.get_dataset_shard('labeled'))")
        self.specs = {
            role: RowSpec.from_config(
                cfg, self.info.num_classes, self.seed, labeled=role == "labeled", views=unlabeled_views
            )
            for role in self.roles
        }
        self._counters = Counters()
        self._wait_s = 0.0
        self._state: dict[str, Any] = {"epoch": 0, "batches": 0, "entries": {}}
        self._resume: dict[str, Any] | None = None

    @property
    def per_rank(self) -> int:
        return self.iters * self.cfg.batch_size

    # --- public ---------------------------------------------------------------------------------

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Exactly `iters_per_epoch - start` batches of epoch `epoch`; `start > 0` resumes mid-epoch."""
        if start >= self.iters:
            return
        entries = self._resume_entries(epoch, start)
        producers = {
            role: self._producer(role, epoch, start, entries.get(role, start * self.cfg.batch_size))
            for role in self.roles
        }
        try:
            for k in range(start, self.iters):
                t0 = time.perf_counter()
                got: dict[str, StackedBatch] = {role: p.get() for role, p in producers.items()}
                self._wait_s += time.perf_counter() - t0
                lab, unl = got["labeled"], got.get("unlabeled")
                self._state = {
                    "epoch": epoch,
                    "batches": k + 1,
                    "entries": {role: b.entries for role, b in got.items()},
                }
                batch = Batch(image_l=lab.images, label_l=lab.masks, image_u=None, ids_l=lab.ids, ids_u=None)
                if unl is not None:
                    batch.image_u, batch.pad_u, batch.ids_u = unl.images, unl.masks, unl.ids
                    if unl.extra_images:
                        batch.image_u2, batch.pad_u2 = unl.extra_images[0], unl.extra_masks[0]
                yield batch
        finally:
            for p in producers.values():
                p.close()

    def counters(self) -> dict[str, float]:
        """Cumulative since construction: rows skipped as bad, samples repeated to fill a short epoch,
        seconds the loop waited for data."""
        return {
            "skipped_bad_samples": self._counters.skipped,
            "padded_samples": self._counters.padded,
            "data_wait_s": self._wait_s,
        }

    def state_dict(self) -> dict[str, Any]:
        """The position in the epoch (for an exact mid-epoch resume in deterministic mode)."""
        return dict(self._state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = dict(state)

    # --- internals ------------------------------------------------------------------------------

    def _resume_entries(self, epoch: int, start: int) -> dict[str, int]:
        """Plan entries consumed before batch `start`: saved ones when they match, else start x batch."""
        saved, self._resume = self._resume, None
        if saved and saved.get("epoch") == epoch and saved.get("batches") == start:
            return dict(saved.get("entries") or {})
        return dict.fromkeys(self.roles, start * self.cfg.batch_size)

    def _producer(self, role: str, epoch: int, start: int, entries: int) -> Producer:
        cfg = self.cfg
        spec = self.specs[role]
        stream = ROLE_STREAM[role]
        base = rank_range(self.rank, self.per_rank)[0] if cfg.deterministic else (self.rank << 40)

        def make(stop: threading.Event) -> Iterator[StackedBatch]:
            pool = (
                ThreadPoolExecutor(cfg.decode_threads, thread_name_prefix=f"decode-{role}")
                if cfg.decode == "worker"
                else None
            )
            try:
                if cfg.deterministic:
                    rows = self._plan_rows(role, epoch, base + entries)
                else:
                    rows = self._split_rows(role)
                items = items_from_batches(
                    rows,
                    spec,
                    epoch=epoch,
                    stream=stream,
                    on_bad_sample=cfg.on_bad_sample,
                    counters=self._counters,
                    pool=pool,
                    position_base=base,
                )
                yield from batches_of(
                    items, cfg.batch_size, self.iters - start, self._counters, position_base=base, stop=stop
                )
            finally:
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)

        return Producer(make, depth=max(1, cfg.prefetch_batches), name=f"u2pl-data-{role}")

    def _split_rows(self, role: str) -> Iterator[dict]:
        shard = self.shards[role]
        if shard is None:
            raise DataError(f"no '{role}' dataset shard was given to TrainStream")
        buffer = self.cfg.shuffle_buffer or None
        return shard.iter_batches(
            batch_size=max(_PULL_ROWS, self.cfg.batch_size),
            batch_format="numpy",
            local_shuffle_buffer_size=buffer,
            prefetch_batches=max(1, self.cfg.prefetch_batches),
        )

    def _plan_rows(self, role: str, epoch: int, first: int) -> Iterator[dict]:
        """Rows of this rank's plan from position `first` on: its share, then more only if asked for."""
        part = self.info.part(role)
        stop = rank_range(self.rank, self.per_rank)[1]
        lo, hi = first, max(stop, first + 1)
        while True:
            segments = plan_segments(part, self.seed, epoch, ROLE_STREAM[role], lo, hi, self.cfg.shuffle_buffer)
            if self.cfg.reader == "local":
                yield from local_plan_rows(self.info, role, segments)
            else:
                ds = plan_dataset(self.cfg, self.info, role, segments, self.specs[role], epoch)
                yield from ds.iter_batches(
                    batch_size=max(_PULL_ROWS, self.cfg.batch_size),
                    batch_format="numpy",
                    prefetch_batches=max(1, self.cfg.prefetch_batches),
                )
            lo, hi = hi, hi + max(_PLAN_EXTRA_ROWS, self.cfg.batch_size)
