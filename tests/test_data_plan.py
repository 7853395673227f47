"""The deterministic epoch plan against a slow literal reference built from its definition."""

import pytest

from u2pl_ray.data.plan import pass_windows, plan_segments, rank_range
from u2pl_ray.data.schema import PartInfo, ShardRef

PART = PartInfo(tuple(ShardRef(f"s{i}.parquet", rows) for i, rows in enumerate([5, 3, 7, 4])))  # 19 rows


def literal_sequence(part, seed, epoch, stream, length, window_rows):
    """Passes concatenated until `length` entries: (shard, row, position)."""
    out, p = [], 0
    while len(out) < length:
        for window in pass_windows(part, seed, epoch, stream, p, window_rows):
            out.extend(window)
        p += 1
    return [(f, r, i) for i, (f, r) in enumerate(out[:length])]


def flatten(part, segments):
    return [(seg.shards[local], row, pos) for seg in segments for (local, row), pos in zip(seg.entries, seg.positions)]


@pytest.mark.parametrize("window_rows", [0, 4, 8, 100])
def test_each_pass_visits_every_row_once(window_rows):
    for p in range(3):
        entries = [e for w in pass_windows(PART, 1, 0, 0, p, window_rows) for e in w]
        assert sorted(entries) == sorted((f, r) for f, s in enumerate(PART.shards) for r in range(s.rows))


def test_windows_hold_whole_shards_and_row_order_is_shuffled_within():
    windows = pass_windows(PART, 5, 2, 1, 0, window_rows=8)  # ~4.75 rows per shard -> 2 shards per window
    assert len(windows) == 2
    for window in windows:
        shards = {f for f, _ in window}
        assert len(window) == sum(PART.shards[f].rows for f in shards)
    unshuffled = pass_windows(PART, 5, 2, 1, 0, window_rows=0)
    assert all(w == sorted(w) for w in unshuffled)  # window_rows=0: one shard per window, rows in order


@pytest.mark.parametrize("start, stop", [(0, 19), (3, 17), (0, 50), (21, 44), (18, 20)])
def test_segments_equal_the_literal_sequence(start, stop):
    got = flatten(PART, plan_segments(PART, 9, 4, 0, start, stop, window_rows=6))
    want = literal_sequence(PART, 9, 4, 0, stop, window_rows=6)[start:stop]
    assert got == want


def test_plan_is_a_pure_function_and_changes_with_epoch_and_stream():
    a = flatten(PART, plan_segments(PART, 1, 0, 0, 0, 19, 6))
    assert a == flatten(PART, plan_segments(PART, 1, 0, 0, 0, 19, 6))
    assert a != flatten(PART, plan_segments(PART, 1, 1, 0, 0, 19, 6))
    assert a != flatten(PART, plan_segments(PART, 1, 0, 1, 0, 19, 6))
    assert a != flatten(PART, plan_segments(PART, 2, 0, 0, 0, 19, 6))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_take_disjoint_consecutive_shares(world):
    per_rank = 6
    shares = [flatten(PART, plan_segments(PART, 1, 0, 0, *rank_range(r, per_rank), 6)) for r in range(world)]
    joined = [e for share in shares for e in share]
    assert joined == literal_sequence(PART, 1, 0, 0, world * per_rank, 6)
    assert all(len(s) == per_rank for s in shares)
    if world * per_rank <= PART.rows:  # one pass: no sample twice in an epoch
        assert len({(f, r) for f, r, _ in joined}) == len(joined)


def test_labelled_resampling_balances_repeats():
    small = PartInfo((ShardRef("l.parquet", 4),))
    entries = flatten(small, plan_segments(small, 0, 0, 0, 0, 18, 64))  # 18 = N_u, 4 labelled rows
    counts = [sum(1 for f, r, _ in entries if r == row) for row in range(4)]
    assert sorted(counts) == [4, 4, 5, 5]  # ceil(18/4) = 5 passes' worth, sampled to 18
