"""The NumPy log-densities of small rows (`fast_log_prob`) against the torch-backed classes they
stand in for, on random parameters and on the edges: values off the support, NaN, the ends of
a Uniform, zero weights and rates, p = 0 and 1. `TraceBatch.log_prob` takes this path for every
RMH and SMC step, so a difference here would move every acceptance ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probexec.distributions import from_wire
from probexec.distributions.fast_log_prob import log_prob_rows

NAN, INF = math.nan, math.inf


def _torch_rows(dist_type: int, vals: np.ndarray, prm: np.ndarray) -> np.ndarray:
    """The reference: one torch-backed distribution per row."""
    k, vn = vals.shape
    out = []
    for r in range(k):
        if dist_type == 3:
            params = [torch.from_numpy(prm[r].reshape(vn, -1))]
        else:
            params = [torch.from_numpy(prm[r, j * vn : (j + 1) * vn]) for j in range(prm.shape[1] // vn)]
        lp = from_wire(dist_type, params, validate=False).log_prob(torch.from_numpy(vals[r]))
        out.append(float(lp.sum()))
    return np.array(out)


def _check(dist_type: int, vals: np.ndarray, prm: np.ndarray) -> None:
    fast = log_prob_rows(dist_type, vals, prm)
    assert fast is not None
    want = _torch_rows(dist_type, vals, prm)
    assert np.array_equal(np.isneginf(fast), np.isneginf(want)), (fast, want)
    finite = np.isfinite(want)
    np.testing.assert_allclose(fast[finite], want[finite], rtol=1e-12, atol=1e-12)


def test_normal_and_uniform_rows_match_torch():
    rng = np.random.default_rng(1)
    loc, scale = rng.normal(0, 5, (50, 3)), rng.uniform(0.01, 4, (50, 3))
    vals = rng.normal(loc, 3 * scale)
    vals[0, 1], vals[1, 0], vals[2, 2] = NAN, INF, -INF
    _check(1, vals, np.concatenate([loc, scale], 1))
    low = rng.uniform(-5, 5, (50, 2))
    high = low + rng.uniform(0.1, 3, (50, 2))
    vals = rng.uniform(low - 1, high + 1)
    vals[0] = low[0]  # the low end is in, the high end is out: [low, high)
    vals[1] = high[1]
    vals[2, 0] = NAN
    _check(2, vals, np.concatenate([low, high], 1))


def test_discrete_rows_match_torch_with_zero_weights_rates_and_certain_outcomes():
    rng = np.random.default_rng(2)
    weights = rng.uniform(0, 3, (40, 5))
    weights[:10, 2] = 0.0  # a category that cannot happen
    vals = rng.integers(-1, 7, (40, 1)).astype(float)
    vals[:10] = 2.0
    vals[10], vals[11] = 1.5, NAN
    _check(3, vals, weights)
    # A vector-valued Categorical: two values a row, their weights one after the other.
    _check(3, rng.integers(0, 3, (20, 2)).astype(float), rng.uniform(0.1, 1, (20, 6)))
    rate = rng.uniform(0, 20, (40, 1))
    rate[:5] = 0.0
    vals = rng.poisson(rate).astype(float)
    vals[1], vals[6], vals[7], vals[8] = 3.0, -1.0, 2.5, INF
    _check(4, vals, rate)
    p = rng.uniform(0, 1, (40, 1))
    p[:4] = [[0.0], [0.0], [1.0], [1.0]]
    vals = (rng.uniform(size=(40, 1)) < p).astype(float)
    vals[:4] = [[0.0], [1.0], [0.0], [1.0]]
    vals[5], vals[6] = 0.5, NAN
    _check(5, vals, p)


@pytest.mark.parametrize(
    ("dist_type", "vals", "prm"),
    [
        (1, [[0.0]], [[0.0, 0.0]]),  # scale 0
        (1, [[0.0]], [[NAN, 1.0]]),
        (2, [[0.5]], [[1.0, 1.0]]),  # low == high
        (3, [[0.0]], [[0.0, 0.0]]),  # all-zero weights
        (4, [[1.0]], [[-1.0]]),
        (5, [[1.0]], [[1.5]]),
        (1, [[0.0, 1.0]], [[0.0, 1.0]]),  # scalar parameters against a vector value
        (7, [[1.0]], [[1.0]]),  # a type it does not score
    ],
)
def test_what_the_wire_would_not_carry_is_left_to_the_torch_path(dist_type, vals, prm):
    assert log_prob_rows(dist_type, np.array(vals), np.array(prm)) is None
