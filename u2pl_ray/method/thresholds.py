"""Pixel entropy, numpy-exact percentile thresholds and the two threshold schedules (spec §3.2-3.3, §5.1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

ENTROPY_EPS = 1e-10


def entropy(prob: Tensor, dim: int = 1) -> Tensor:
    """-sum p*log(p + 1e-10) over `dim` (natural log, epsilon inside the log), in float32."""
    prob = prob.float()
    return -torch.sum(prob * torch.log(prob + ENTROPY_EPS), dim=dim)


def entropy_from_logits(logits: Tensor, dim: int = 1) -> Tensor:
    return entropy(torch.softmax(logits.float(), dim=dim), dim=dim)


def _kth_and_next(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k-th and (k+1)-th smallest values of 1-D `x` (0-based k), as 0-d tensors, without a full sort.

    One selection plus two elementwise passes: the next order statistic equals the k-th when it is
    repeated, otherwise it is the smallest value above it.
    """
    n = x.numel()
    if k == 0:
        kth = x.min()
    elif k == n - 1:
        kth = x.max()
    else:
        kth = torch.kthvalue(x, k + 1).values
    if k + 1 >= n:
        return kth, kth
    at_most = x <= kth
    repeated = at_most.sum() >= k + 2  # k+2 values <= kth: the (k+1)-th is kth again
    above = x.masked_fill(at_most, math.inf).min()
    return kth, torch.where(repeated, kth, above)


def percentiles(values: Tensor, qs: Sequence[float]) -> list[Tensor]:
    """`np.percentile(values, q)` (method 'linear', q a Python float) for each q, bit for bit.

    numpy computes the virtual index `(n-1)*(q/100)` in float64, takes the neighbouring order
    statistics a <= b of the float32 data, and interpolates in float32 with the weight rounded to
    float32: `a + (b-a)*g` when g < 0.5, else `b - (b-a)*(1-g)`. Returns 0-d float32 tensors on the
    device of `values` (no host round trip of the data).
    """
    x = values.detach().reshape(-1).float()
    n = x.numel()
    if n == 0:
        raise ValueError("percentile of an empty set: no valid pixels to threshold")
    cache: dict[int, tuple[Tensor, Tensor]] = {}
    out: list[Tensor] = []
    for q in qs:
        q = float(q)
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile q must be in [0, 100], given {q}")
        virtual = (n - 1) * (q / 100)
        if virtual >= n - 1:
            lo = n - 1
            gamma = 0.0
        else:
            lo = math.floor(virtual)
            gamma = virtual - lo
        if lo not in cache:
            cache[lo] = _kth_and_next(x, lo)
        a, b = cache[lo]
        diff = b - a
        if gamma < 0.5:
            out.append(a + diff * torch.tensor(gamma, dtype=torch.float32, device=x.device))
        else:
            out.append(b - diff * torch.tensor(1.0 - gamma, dtype=torch.float32, device=x.device))
    return out


def percentile(values: Tensor, q: float) -> Tensor:
    return percentiles(values, [q])[0]


def drop_percent(epoch: int, epochs: int, drop_percent0: float) -> float:
    """Entropy percentile above which unlabelled pixels are dropped: 80 at epoch 0 -> 100 (spec §3.2)."""
    unreliable = (100 - drop_percent0) * (1 - epoch / epochs)
    return 100 - unreliable


def alpha_t(epoch: int, epochs: int, alpha0: float) -> float:
    """Percent of lowest / highest entropy pixels used by the contrastive masks: alpha0 -> 0 (spec §5.1)."""
    return alpha0 * (1 - epoch / epochs)
