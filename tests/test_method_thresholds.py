import math

import numpy as np
import pytest
import torch

from u2pl_ray.method.thresholds import alpha_t, drop_percent, entropy, entropy_from_logits, percentile, percentiles


def test_entropy_hand_values():
    prob = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]]).T.reshape(1, 2, 3)
    got = entropy(prob)[0]
    expected = [
        -(1.0 * math.log(1.0 + 1e-10) + 0.0),
        -2 * 0.5 * math.log(0.5 + 1e-10),
        -(0.25 * math.log(0.25 + 1e-10) + 0.75 * math.log(0.75 + 1e-10)),
    ]
    assert got.dtype == torch.float32
    assert torch.allclose(got, torch.tensor(expected), atol=1e-7)
    # uniform over C classes -> log C; bf16 logits are handled in float32
    logits = torch.zeros(2, 21, 3, 3, dtype=torch.bfloat16)
    assert torch.allclose(entropy_from_logits(logits), torch.full((2, 3, 3), math.log(21)), atol=1e-5)


def _cases():
    rng = np.random.default_rng(123)
    for trial in range(600):
        n = int(rng.integers(1, 3000)) if trial % 5 else int(rng.integers(1, 6))
        kind = trial % 5
        if kind == 0:
            x = rng.random(n)
        elif kind == 1:  # many ties
            x = rng.integers(0, 4, n) * 0.1
        elif kind == 2:  # wide dynamic range
            x = rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30)
        elif kind == 3:  # entropy-like values in [0, log 21]
            x = rng.random(n) * math.log(21)
        else:
            x = np.exp(rng.standard_normal(n) * 5)
        qs = [float(q) for q in rng.random(4) * 100]
        yield x.astype(np.float32), qs + [0.0, 100.0, 99.75, 0.25, 20.0, 80.0, 50.0, 99.99, 1e-6]


def test_percentile_equals_numpy_bit_for_bit():
    checked = 0
    for x, qs in _cases():
        got = percentiles(torch.from_numpy(x), qs)
        for q, g in zip(qs, got):
            expected = np.percentile(x, q)
            assert expected.dtype == np.float32 and g.dtype == torch.float32
            assert g.item() == float(expected), (len(x), q, g.item(), float(expected))
            checked += 1
    assert checked > 6000


def test_percentile_extremes_and_errors():
    x = torch.tensor([3.0, 1.0, 2.0])
    assert percentile(x, 0.0).item() == 1.0
    assert percentile(x, 100.0).item() == 3.0
    assert percentile(torch.tensor([5.0]), 37.0).item() == 5.0
    # the interpolation weight is rounded to float32 before the product, and g >= 0.5 interpolates from above
    big = np.array([0.0, 16777216.0], dtype=np.float32)
    for q in (33.3333, 50.0, 66.6667, 99.9999):
        assert percentile(torch.from_numpy(big), q).item() == float(np.percentile(big, q))
    with pytest.raises(ValueError, match="empty"):
        percentile(torch.zeros(0), 50.0)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile(x, 101.0)


def test_drop_percent_and_alpha_schedules():
    assert drop_percent(0, 80, 80) == 80
    assert drop_percent(40, 80, 80) == 90
    assert drop_percent(79, 80, 80) == pytest.approx(99.75)
    assert drop_percent(79, 80, 80) == 100 - (100 - 80) * (1 - 79 / 80)
    assert alpha_t(0, 80, 20) == 20
    assert alpha_t(40, 80, 20) == 10
    assert alpha_t(79, 80, 20) == pytest.approx(0.25)
    # default configs: the unsup drop percentile and the contrastive 100 - alpha_t coincide
    for epoch in range(80):
        assert drop_percent(epoch, 80, 80) == pytest.approx(100 - alpha_t(epoch, 80, 20))
