"""How long a stream is per epoch: listed often enough to cover every worker's share (it cycles), padding
only what skipped rows leave short and never one batch over and over, and the split checked for the mode."""

import threading
from pathlib import Path

import pytest
import torch

from u2pl_ray.data.errors import DataError
from u2pl_ray.data.info import DatasetInfo, iters_per_epoch, stream_repeats
from u2pl_ray.data.producer import Counters, Item, batches_of
from u2pl_ray.data.schema import PartInfo, ShardRef


def part(*rows: int) -> PartInfo:
    return PartInfo(tuple(ShardRef(f"s{i}.parquet", n) for i, n in enumerate(rows)))


def info(labeled: int, unlabeled: int) -> DatasetInfo:
    return DatasetInfo(
        root="/data/x",
        name="x",
        split="1_16",
        class_names=("a", "b"),
        class_colors=((0, 0, 0), (1, 1, 1)),
        ignore_index=255,
        labeled=part(labeled),
        unlabeled=part(unlabeled) if unlabeled else PartInfo(),
        val=part(8),
    )


class DataCfg:
    batch_size = 4


def test_a_supervised_stream_is_listed_often_enough_for_a_fixed_epoch():
    # configs/quality: 40 labelled images, batch 4, iters_per_epoch 60, one worker -> 240 samples
    assert stream_repeats(info(40, 600), "labeled", False, 60 * 4) == 6
    assert stream_repeats(info(40, 600), "labeled", False, 40) == 1
    assert stream_repeats(info(40, 600), "labeled", False, 41) == 2
    # two workers double the samples an epoch needs
    assert stream_repeats(info(40, 600), "labeled", False, 60 * 4 * 2) == 12


def test_the_labelled_stream_of_u2pl_keeps_the_spec_resampling_and_covers_a_longer_epoch():
    assert stream_repeats(info(40, 600), "labeled", True, 600) == 15  # ceil(N_u / N_l), spec §6.3
    assert stream_repeats(info(40, 600), "labeled", True, 240) == 15  # never fewer than the spec's
    assert stream_repeats(info(40, 600), "unlabeled", True, 240) == 1
    assert stream_repeats(info(40, 600), "unlabeled", True, 1000) == 2  # fixed epoch longer than N_u


def test_u2pl_on_a_split_without_unlabelled_images_is_refused_by_name():
    with pytest.raises(
        DataError,
        match=r"split '1_16' of /data/x has no unlabelled images .*method.name=u2pl needs some.*method.name=supervised",
    ):
        iters_per_epoch(info(40, 0), DataCfg(), 1)
    with pytest.raises(DataError, match="no unlabelled images"):
        iters_per_epoch(info(40, 0), DataCfg(), 1, fixed=60)
    assert iters_per_epoch(info(40, 0), DataCfg(), 1, needs_unlabeled=False) == 10
    assert iters_per_epoch(info(40, 600), DataCfg(), 2) == 75
    assert iters_per_epoch(info(40, 600), DataCfg(), 2, fixed=60) == 60


def _items(n: int):
    for i in range(n):
        yield Item(torch.full((3, 2, 2), i, dtype=torch.uint8), torch.zeros(2, 2, dtype=torch.uint8), f"id{i}", i)


def test_padding_cycles_through_the_delivered_samples_instead_of_repeating_one_batch():
    counters = Counters()
    batches = list(batches_of(_items(40), 4, 60, counters, position_base=0, stop=threading.Event()))
    assert len(batches) == 60
    ids = [tuple(b.ids) for b in batches]
    assert len(set(ids[:10])) == 10  # the 40 samples as they came
    padded = ids[10:]
    assert all(padded[k] != padded[k + 1] for k in range(len(padded) - 1)), "successive padded batches differ"
    assert len(set(padded)) >= 10
    assert counters.padded == 200
    # every delivered sample is used for padding about equally often (a DistributedSampler-like cycle)
    uses = [sum(ident.count(f"id{i}") for ident in padded) for i in range(40)]
    assert max(uses) - min(uses) <= 1


def test_train_refuses_u2pl_on_a_fully_labelled_split_before_starting_anything(tmp_path, capsys):
    from u2pl_ray.train import main

    tiny = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
    rc = main(
        [
            "--config",
            str(tiny),
            f"--set=data.cache_dir={tmp_path}",
            "--set=data.split=full",
            "--set=data.synthetic.labeled_fractions=[full]",
            f"--set=storage.path={tmp_path / 'runs'}",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "split 'full' of" in err and "has no unlabelled images" in err and "method.name=supervised" in err
    assert not (tmp_path / "runs").exists(), "refused before the run folder or Ray started"
