"""The collectives on a real two-process gloo group (no Ray needed)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from u2pl_ray.engine import collectives as coll


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rows = torch.full((rank * 3 + 1, 4), float(rank))  # rank 0: 1 row, rank 1: 4 rows
        rows[:, 1] = torch.arange(rows.shape[0], dtype=torch.float32)
        gathered = coll.all_gather_rows(rows)
        empty = coll.all_gather_rows(torch.zeros(0, 4) if rank == 0 else torch.ones(2, 4))
        none = coll.all_gather_rows(torch.zeros(0, 4))
        total = coll.all_reduce_sum_(torch.tensor([rank + 1.0]))
        flag = coll.any_rank(rank == 1, torch.device("cpu"))
        means = coll.mean_over_ranks({"a": float(rank), "b": 10.0 * rank}, torch.device("cpu"))
        buffer_module = torch.nn.BatchNorm1d(2)
        buffer_module.running_mean.fill_(rank + 5.0)
        coll.broadcast_buffers_(buffer_module)
        torch.save(
            {
                "gathered": gathered,
                "empty": empty,
                "none": none,
                "total": total,
                "flag": flag,
                "means": means,
                "bn": buffer_module.running_mean.clone(),
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_collectives_on_two_gloo_ranks(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for res in results:
        # rank order, unequal sizes, no padding left behind
        assert res["gathered"].shape == (5, 4)
        assert res["gathered"][:, 0].tolist() == [0, 1, 1, 1, 1]
        assert res["gathered"][:, 1].tolist() == [0, 0, 1, 2, 3]
        assert res["empty"].shape == (2, 4) and res["empty"].eq(1).all()
        assert res["none"].shape == (0, 4)
        assert res["total"].item() == 3.0
        assert res["flag"] is True
        assert res["means"] == {"a": 0.5, "b": 5.0}
        assert res["bn"].tolist() == [5.0, 5.0]  # rank 0's buffers everywhere


def test_collectives_are_identities_in_one_process():
    rows = torch.randn(3, 2)
    assert coll.all_gather_rows(rows) is rows
    assert coll.any_rank(False, torch.device("cpu")) is False
    assert coll.mean_over_ranks({"x": 2.0}, torch.device("cpu")) == {"x": 2.0}
    assert coll.world_size() == 1 and coll.rank() == 0
