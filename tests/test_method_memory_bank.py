import pytest
import torch
import torch.nn.functional as F
from method_reference import enqueue_reference
from torch.utils._python_dispatch import TorchDispatchMode

from u2pl_ray.method.contrastive import contrastive_loss, generator_sampler
from u2pl_ray.method.contrastive_select import select
from u2pl_ray.method.memory_bank import MemoryBank, pack_keys


def _keys(n: int, dim: int, start: float) -> torch.Tensor:
    """Rows whose first entry is a running id, so an order mix-up shows."""
    rows = torch.randn(n, dim)
    rows[:, 0] = torch.arange(n, dtype=torch.float32) + start
    return rows


def _check_same(bank: MemoryBank, ref: list[list[torch.Tensor]]) -> None:
    for c in range(bank.num_classes):
        assert bank.count[c] == ref[c][0].shape[0]
        assert torch.equal(bank.logical(c), ref[c][0]), f"class {c}"


def test_fifo_order_and_overflow_match_the_cat_then_truncate_queue():
    caps, dim = [7, 5, 3], 4
    bank = MemoryBank(caps, dim)
    ref = [[torch.zeros(0, dim)] for _ in caps]
    g = torch.Generator().manual_seed(0)
    next_id = 0.0
    sizes = [0, 3, 4, 1, 9, 0, 2, 6, 11, 1, 1, 1, 5]  # includes an update larger than every capacity
    for n in sizes:
        classes = torch.randint(0, 3, (n,), generator=g)
        keys = _keys(n, dim, next_id)
        next_id += n
        counts = bank.update(pack_keys(keys, classes))
        for c, cap in enumerate(caps):
            assert counts[c] == enqueue_reference(ref[c], keys[classes == c], cap)
        _check_same(bank, ref)
        # a uniform logical index addresses the same row as in the official queue
        for c in range(3):
            if bank.count[c]:
                j = torch.randint(0, bank.count[c], (20,), generator=g)
                rows, norms = bank.read(torch.full((20,), c), j)
                assert torch.equal(rows, ref[c][0][j])
                assert torch.allclose(norms, ref[c][0][j].norm(dim=1))
    assert bank.fill() == [1.0, 1.0, 1.0]


def test_one_update_larger_than_capacity_keeps_the_newest_rows():
    bank = MemoryBank([4], 2)
    bank.update(pack_keys(_keys(3, 2, 0), torch.zeros(3, dtype=torch.long)))
    keys = _keys(10, 2, 100)
    bank.update(pack_keys(keys, torch.zeros(10, dtype=torch.long)))
    assert torch.equal(bank.logical(0), keys[-4:])


def test_two_ranks_of_different_sizes_are_enqueued_in_rank_order():
    caps, dim = [6, 6, 6], 3
    g = torch.Generator().manual_seed(1)
    ref = [[torch.zeros(0, dim)] for _ in caps]
    banks = [MemoryBank(caps, dim), MemoryBank(caps, dim)]
    calls = [0, 0]
    for step in range(5):
        local = []
        for rank, n in enumerate((step + 1, 2 * step)):  # different row counts, rank 1 empty at step 0
            cls = torch.randint(0, 3, (n,), generator=g)
            local.append(pack_keys(_keys(n, dim, 1000 * rank + 10 * step), cls))

        def gather_for(rank, local=local):
            def gather(mine):
                calls[rank] += 1
                parts = list(local)
                parts[rank] = mine
                return torch.cat(parts)  # rank 0's rows, then rank 1's

            return gather

        for rank in (0, 1):
            banks[rank].update(local[rank], gather_for(rank))
        for c, cap in enumerate(caps):  # the official: per class, all_gather_object concatenated by rank
            per_rank = [p[p[:, dim] == c, :dim] for p in local]
            enqueue_reference(ref[c], torch.cat(per_rank), cap)
        for bank in banks:
            _check_same(bank, ref)
    assert calls == [5, 5]  # one gather per update, also with no local rows


def test_reads_and_updates_do_not_copy_the_bank():
    caps, dim = [4000, 3000], 8
    bank = MemoryBank(caps, dim)
    bank.update(pack_keys(torch.randn(5000, dim), torch.randint(0, 2, (5000,))))
    ptr = bank.storage.data_ptr()
    smallest = min(caps) * dim

    class Sizes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.data_ptr() != ptr:
                    self.largest = max(self.largest, t.numel())
            return out

    # the whole contrastive loss (update + sampled reads + loss + backward) on a 2-class batch
    label = torch.tensor([[[0, 0, 1, 1]], [[0, 1, 1, 0]]])
    prob = torch.softmax(3 * F.one_hot(label, 2).permute(0, 3, 1, 2).float(), dim=1)
    ones = torch.ones(2, 1, 4, dtype=torch.bool)
    sel = select(
        prob,
        label,
        ones,
        ones,
        num_labeled=1,
        variant="paper",
        low_rank=1,
        high_rank=2,
        anchor_threshold=0.3,
        negative_threshold=1.0,
    )
    rep = torch.randn(2, dim, 1, 4, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    with Sizes() as sizes:
        rows, _ = bank.read(torch.ones(50, dtype=torch.long), torch.arange(50))
        bank.update(pack_keys(torch.randn(30, dim), torch.randint(0, 2, (30,))))
        res = contrastive_loss(
            rep,
            rep.detach(),
            sel,
            bank,
            variant="paper",
            num_queries=16,
            num_negatives=5,
            temperature=0.5,
            sampler=generator_sampler(g),
        )
        res.loss.backward()
    assert rows.shape == (50, dim) and res.terms == 2
    assert sizes.largest < smallest  # nothing bank-sized was materialised
    assert bank.storage.data_ptr() == ptr


def test_reused_read_buffer_is_guarded_by_autograd():
    bank = MemoryBank([100, 100], 4)
    bank.update(pack_keys(torch.randn(100, 4), torch.randint(0, 2, (100,))))
    anchor = torch.randn(4, requires_grad=True)
    rows, _ = bank.read(torch.zeros(10, dtype=torch.long), torch.arange(10), reuse_buffer=True)
    first = (rows @ anchor).sum()
    bank.read(torch.ones(10, dtype=torch.long), torch.arange(10), reuse_buffer=True)  # overwrites
    with pytest.raises(RuntimeError, match="inplace"):
        first.backward()


def test_state_dict_round_trip_is_in_logical_order():
    bank = MemoryBank([5, 3], 2)
    for i in range(4):
        bank.update(pack_keys(_keys(3, 2, 10 * i), torch.tensor([0, 1, 0])))
    state = bank.state_dict()
    assert state["counts"] == [5, 3]
    other = MemoryBank([5, 3], 2)
    other.load_state_dict(state)
    for c in range(2):
        assert torch.equal(other.logical(c), bank.logical(c))
    keys = _keys(2, 2, 99)
    bank.update(pack_keys(keys, torch.tensor([1, 1])))
    other.update(pack_keys(keys, torch.tensor([1, 1])))
    assert torch.equal(other.logical(1), bank.logical(1))
    with pytest.raises(ValueError, match="capacities"):
        MemoryBank([5, 4], 2).load_state_dict(state)


def test_bad_packed_rows_name_the_row():
    bank = MemoryBank([3, 3], 2)
    packed = pack_keys(torch.randn(3, 2), torch.tensor([0, 1, 1]))
    packed[2, 2] = 7
    with pytest.raises(ValueError, match="row 2 has class id 7"):
        bank.update(packed)
    with pytest.raises(ValueError, match=r"\[M, 3\]"):
        bank.update(torch.zeros(2, 5))
