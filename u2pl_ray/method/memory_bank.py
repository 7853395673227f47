"""Per-class FIFO memory bank of negative keys, on the training device (spec §5.3).

The official bank is, per class, a tensor that is `cat`-ed with the new keys and cut to its newest
`capacity` rows every step, then copied whole for every read. Here all classes share one
preallocated [sum(capacities), D] tensor; class c owns rows [offset_c, offset_c + cap_c) as a ring
buffer with `start_c` (the oldest row) and `count_c`. Logical row j (0 = oldest, as in the official
tensor) lives at physical row offset_c + (start_c + j) % cap_c, so a uniform index in [0, count_c)
addresses the same row as the official one and a read gathers only the sampled rows.

One update per step takes all classes' keys packed as rows [key (D floats), class id] and makes a
single `gather` call, which returns every rank's rows concatenated in rank order (identity in one
process). Each class then enqueues its rows in that order, reproducing the official per-class
all_gather_object concatenation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Gather = Callable[[Tensor], Tensor]


def pack_keys(keys: Tensor, classes: Tensor) -> Tensor:
    """Rows [key, class id] in float32; class ids are exact in float32 below 2**24."""
    if keys.dim() != 2 or classes.dim() != 1 or keys.shape[0] != classes.shape[0]:
        raise ValueError(
            f"pack_keys needs keys [M, D] and classes [M], given {tuple(keys.shape)} and {tuple(classes.shape)}"
        )
    return torch.cat([keys.detach().float(), classes.to(keys.device, torch.float32).unsqueeze(1)], dim=1)


class MemoryBank:
    """Fixed-capacity per-class FIFO of D-dimensional keys with uniform sampling over each class."""

    def __init__(self, capacities: Sequence[int], dim: int, device: torch.device | str = "cpu") -> None:
        if not capacities or min(capacities) <= 0:
            raise ValueError(f"memory bank capacities must be positive, given {list(capacities)}")
        self.capacities = [int(c) for c in capacities]
        self.dim = int(dim)
        self.device = torch.device(device)
        offsets = [0]
        for cap in self.capacities[:-1]:
            offsets.append(offsets[-1] + cap)
        self.offsets = offsets
        total = offsets[-1] + self.capacities[-1]
        # torch.empty does not touch the pages, so an unused capacity costs no memory on CPU.
        self.storage = torch.empty(total, self.dim, device=self.device)
        self.norms = torch.empty(total, device=self.device)  # L2 norm of each row, for the cosine
        self.start = [0] * len(self.capacities)
        self.count = [0] * len(self.capacities)
        self._offsets_t = torch.tensor(offsets, device=self.device)
        self._caps_t = torch.tensor(self.capacities, device=self.device)
        self._workspace: Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.capacities)

    def fill(self) -> list[float]:
        """Fraction of each class's capacity in use."""
        return [n / cap for n, cap in zip(self.count, self.capacities)]

    # -- update -------------------------------------------------------------------------------
    def update(self, packed_local: Tensor, gather: Gather = lambda x: x) -> list[int]:
        """Gathers every rank's packed rows (one call, also when this rank has none) and enqueues them.

        Returns the number of rows each class received (all ranks), the official `new_keys`.
        """
        if packed_local.dim() != 2 or packed_local.shape[1] != self.dim + 1:
            raise ValueError(
                f"memory bank update expects packed rows [M, {self.dim + 1}] (key + class id), "
                f"given {tuple(packed_local.shape)}"
            )
        packed = gather(packed_local.to(self.device, torch.float32))
        return self.enqueue(packed)

    def enqueue(self, packed: Tensor) -> list[int]:
        """Enqueue already gathered rows [key, class id], each class in row order."""
        num_classes = self.num_classes
        if packed.shape[0] == 0:
            return [0] * num_classes
        ids = packed[:, self.dim]
        cls = ids.long()
        bad = (cls.float() != ids) | (cls < 0) | (cls >= num_classes)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"memory bank: packed row {row} has class id {float(ids[row])}, expected an integer in [0, {num_classes})"
            )
        cls, order = torch.sort(cls, stable=True)  # class-major, rank/row order kept within a class
        keys = packed[order, : self.dim]
        counts_t = torch.bincount(cls, minlength=num_classes)
        counts = counts_t.tolist()
        first = torch.cumsum(counts_t, 0) - counts_t  # index of each class's first row in `cls`
        within = torch.arange(cls.shape[0], device=cls.device) - first[cls]  # k-th new row of its class
        caps = self._caps_t[cls]
        ends = torch.tensor(
            [(s + n) % cap for s, n, cap in zip(self.start, self.count, self.capacities)], device=self.device
        )[cls]
        # Rows older than the newest `capacity` of one update would be overwritten anyway; drop them so
        # that every kept row has its own slot.
        keep = within >= counts_t[cls] - caps
        phys = self._offsets_t[cls] + (ends + within) % caps
        phys, keys = phys[keep], keys[keep]
        self.storage.index_copy_(0, phys, keys)
        self.norms.index_copy_(0, phys, torch.linalg.vector_norm(keys, dim=1))
        for c, n in enumerate(counts):
            if n == 0:
                continue
            cap = self.capacities[c]
            total = self.count[c] + n
            if total > cap:
                self.start[c] = (self.start[c] + total - cap) % cap
                self.count[c] = cap
            else:
                self.count[c] = total
        return counts

    # -- read ---------------------------------------------------------------------------------
    def physical_index(self, classes: Tensor, logical: Tensor) -> Tensor:
        """Physical rows of logical rows `logical` (0 = oldest) of classes `classes` (broadcast)."""
        classes = classes.to(self.device)
        logical = logical.to(self.device)
        start = torch.tensor(self.start, device=self.device)[classes]
        return self._offsets_t[classes] + (start + logical) % self._caps_t[classes]

    def read(self, classes: Tensor, logical: Tensor, *, reuse_buffer: bool = False) -> tuple[Tensor, Tensor]:
        """(rows [M, D], their norms [M]) for logical indices of the given classes; gathers M rows only.

        reuse_buffer: write the rows into a grow-only workspace kept by the bank (valid until the next
        such read). On CPU a fresh multi-hundred-MB tensor per step costs more in page faults than the
        gather itself. Autograd notices if a saved workspace is overwritten before its backward.
        """
        phys = self.physical_index(classes, logical)
        if not reuse_buffer:
            return self.storage.index_select(0, phys), self.norms.index_select(0, phys)
        if self._workspace is None or self._workspace.shape[0] < phys.shape[0]:
            self._workspace = torch.empty(phys.shape[0], self.dim, device=self.device)
        rows = torch.index_select(self.storage, 0, phys, out=self._workspace[: phys.shape[0]])
        return rows, self.norms.index_select(0, phys)

    def logical(self, cls: int) -> Tensor:
        """A copy of class `cls`'s rows, oldest first (for tests and checkpoints, not the hot path)."""
        n = self.count[cls]
        idx = self.physical_index(torch.full((n,), cls, dtype=torch.long), torch.arange(n))
        return self.storage.index_select(0, idx)

    # -- checkpoint ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Contents per class in logical order plus counts; independent of the ring layout."""
        return {
            "capacities": list(self.capacities),
            "dim": self.dim,
            "counts": list(self.count),
            "rows": [self.logical(c).cpu() for c in range(self.num_classes)],
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["capacities"]) != self.capacities or int(state["dim"]) != self.dim:
            raise ValueError(
                f"memory bank state has capacities {state['capacities']} and dim {state['dim']}; "
                f"this bank has {self.capacities} and {self.dim}"
            )
        for c, rows in enumerate(state["rows"]):
            n = int(state["counts"][c])
            if rows.shape != (n, self.dim):
                raise ValueError(
                    f"memory bank state: class {c} rows have shape {tuple(rows.shape)}, expected ({n}, {self.dim})"
                )
            off = self.offsets[c]
            rows = rows.to(self.device, torch.float32)
            self.storage[off : off + n] = rows
            self.norms[off : off + n] = torch.linalg.vector_norm(rows, dim=1)
            self.start[c] = 0
            self.count[c] = n
