"""Log-densities of a batch's small rows with NumPy, for the per-trace hot path of RMH and SMC.

An MCMC step scores its one new trace: a few rows of each of a handful of distribution types.
Through the torch-backed classes each type costs a distribution object, a support check and a
few `torch.where`s, about 250 µs together for a group of a few scalars, and on a tau trace that
was 46 % of an RMH step's engine CPU (1.22 of 2.64 ms). The formulas here are the same
densities, with the same conventions as `standard.py`: -inf outside the support (the value NaN
included) and for outcomes that degenerate parameters rule out (a Bernoulli's p = 0 or 1, a
Poisson's rate 0). Parameters the wire would not carry (a scale <= 0, low >= high, negative or
all-zero weights, NaN) are left to the torch path, which has its own conventions for them.
Parameters arrive flat per row, in wire order (`TraceBatch.params`): [k, params per row].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_NEG_INF = -math.inf


def _normal(vals: np.ndarray, prm: np.ndarray) -> np.ndarray | None:
    vn = vals.shape[1]
    loc, scale = prm[:, :vn], prm[:, vn:]
    if not (np.all(np.isfinite(loc)) and np.all((scale > 0) & (scale < math.inf))):
        return None
    z = (vals - loc) / scale
    lp = -0.5 * z * z - np.log(scale) - _HALF_LOG_2PI
    return np.where(np.isnan(vals), _NEG_INF, lp)


def _uniform(vals: np.ndarray, prm: np.ndarray) -> np.ndarray | None:
    vn = vals.shape[1]
    low, high = prm[:, :vn], prm[:, vn:]
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        return None
    return np.where((low <= vals) & (vals < high), -np.log(high - low), _NEG_INF)


def _categorical(vals: np.ndarray, prm: np.ndarray) -> np.ndarray | None:
    k, vn = vals.shape
    weights = prm.reshape(k, vn, -1)
    total = weights.sum(-1)
    if not (np.all((weights >= 0) & (weights < math.inf)) and np.all(total > 0)):
        return None
    cats = weights.shape[-1]
    ok = (vals >= 0) & (vals <= cats - 1) & (vals == np.floor(vals))
    idx = np.where(ok, vals, 0).astype(np.int64)
    w = np.take_along_axis(weights, idx[..., None], -1)[..., 0]
    with np.errstate(divide="ignore"):
        return np.where(ok, np.log(w / total), _NEG_INF)


def _poisson(vals: np.ndarray, prm: np.ndarray) -> np.ndarray | None:
    rate = prm
    if not np.all((rate >= 0) & (rate < math.inf)):
        return None
    ok = (vals >= 0) & (vals == np.floor(vals)) & np.isfinite(vals)
    v = np.where(ok, vals, 0.0)
    log_fact = torch.special.gammaln(torch.from_numpy(v + 1.0)).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        # v log(rate), with 0 log 0 = 0: rate 0 gives mass 1 at v = 0 and none elsewhere.
        v_log_rate = np.where(v == 0, 0.0, v * np.log(rate))
    return np.where(ok, v_log_rate - rate - log_fact, _NEG_INF)


def _bernoulli(vals: np.ndarray, prm: np.ndarray) -> np.ndarray | None:
    p = prm
    if not np.all((p >= 0) & (p <= 1)):
        return None
    with np.errstate(divide="ignore"):
        lp = np.where(vals == 1, np.log(p), np.log1p(-p))
    return np.where((vals == 0) | (vals == 1), lp, _NEG_INF)


_SCORERS: dict[int, Callable[[np.ndarray, np.ndarray], np.ndarray | None]] = {
    1: _normal,
    2: _uniform,
    3: _categorical,
    4: _poisson,
    5: _bernoulli,
}


# Parameters per value in a row (a Categorical's are its weights: any whole number per value).
_PARAMS_PER_VALUE: dict[int, int | None] = {1: 2, 2: 2, 3: None, 4: 1, 5: 1}


def log_prob_rows(dist_type: int, vals: np.ndarray, prm: np.ndarray) -> np.ndarray | None:
    """Σ log-density per row of `vals` [k, vn] (float64) with flat parameters `prm` [k, pn], or
    None where this module does not score that type or those parameters (the caller then uses
    the torch-backed class)."""
    scorer = _SCORERS.get(dist_type)
    if scorer is None:
        return None
    vn, pn = vals.shape[1], prm.shape[1]
    per_value = _PARAMS_PER_VALUE[dist_type]
    if vn == 0 or (pn != per_value * vn if per_value is not None else pn == 0 or pn % vn):
        return None  # parameters broadcast against the value: the torch path's business
    lp = scorer(vals, prm)
    return None if lp is None else lp.sum(1)
