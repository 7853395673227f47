"""The epoch plan of `data.deterministic: true`: which rows each rank reads, in which order.

An epoch of one stream is an endless sequence of *passes*; each pass visits every row of the part once:
the shards in a seeded random order, grouped into windows of about `window_rows` rows, the rows of
each window in a seeded random order. Pass p of epoch e uses the generator (seed, epoch, stream, p),
so the sequence is a pure function of those numbers. Rank r of W takes positions [r*q, (r+1)*q) with
q = iters_per_epoch * batch_size (like a DistributedSampler over a padded list), and reads on past
(r+1)*q only when bad samples were skipped. The labelled stream of spec §6.3 (list repeated
ceil(N_u / N_l) times, then sampled) is the first N_u positions of its passes.

A position is also the key of a sample's augmentation draw, so batches do not depend on which process
decoded them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from u2pl_ray.data.schema import PartInfo

STREAM_LABELED, STREAM_UNLABELED = 0, 1


@dataclass(frozen=True)
class Segment:
    """Entries of one window of one pass, in emission order: one Ray Data task reads it."""

    shards: tuple[int, ...]  # indices into PartInfo.shards, each read once
    entries: tuple[tuple[int, int], ...]  # (index into `shards`, row in that shard)
    positions: tuple[int, ...]  # plan position of each entry


def _windows(part: PartInfo, window_rows: int, rng: np.random.Generator) -> list[list[tuple[int, int]]]:
    order = rng.permutation(len(part.shards))
    per_file = max(1.0, part.rows / max(1, len(part.shards)))
    group = max(1, math.ceil(window_rows / per_file)) if window_rows > 0 else 1
    windows = []
    for start in range(0, len(order), group):
        entries = [(int(f), r) for f in order[start : start + group] for r in range(part.shards[int(f)].rows)]
        if window_rows > 0:
            perm = rng.permutation(len(entries))
            entries = [entries[i] for i in perm]
        windows.append(entries)
    return windows


def pass_windows(
    part: PartInfo, seed: int, epoch: int, stream: int, pass_index: int, window_rows: int
) -> list[list[tuple[int, int]]]:
    rng = np.random.default_rng([seed & (2**63 - 1), epoch, stream, pass_index])
    return _windows(part, window_rows, rng)


def plan_segments(
    part: PartInfo, seed: int, epoch: int, stream: int, start: int, stop: int, window_rows: int
) -> list[Segment]:
    """The segments covering plan positions [start, stop) of one epoch, in order."""
    length = part.rows
    if length <= 0 or stop <= start:
        return []
    segments: list[Segment] = []
    for p in range(start // length, (stop - 1) // length + 1):
        base = p * length
        offset = 0
        for window in pass_windows(part, seed, epoch, stream, p, window_rows):
            lo, hi = max(start - base - offset, 0), min(stop - base - offset, len(window))
            if lo < hi:
                chosen = window[lo:hi]
                shards = tuple(sorted({f for f, _ in chosen}))
                local = {f: i for i, f in enumerate(shards)}
                segments.append(
                    Segment(
                        shards=shards,
                        entries=tuple((local[f], r) for f, r in chosen),
                        positions=tuple(range(base + offset + lo, base + offset + hi)),
                    )
                )
            offset += len(window)
    return segments


def rank_range(rank: int, per_rank: int) -> tuple[int, int]:
    """Plan positions [start, stop) owned by a rank that takes `per_rank` samples per epoch."""
    return rank * per_rank, (rank + 1) * per_rank
