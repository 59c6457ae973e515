"""Prior draws with NumPy, for the engine's per-draw hot path.

Sampling only: densities always come from the torch-backed classes of this package. The per-draw
engine must answer every `Sample` message within a few microseconds to stay near the ZeroMQ
round-trip floor, and constructing a torch distribution alone costs ~35 µs; NumPy's Generator
draws a scalar in under 1 µs. Parameters arrive in wire order (see `registry.WIRE_TYPES`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Params = Sequence[np.ndarray]


def value_shape(dist_type: int, params: Params) -> tuple[int, ...]:
    """Shape of one draw: the broadcast parameter shape (Categorical: without the category axis)."""
    if dist_type == 3:
        return tuple(np.shape(params[0])[:-1])
    if len(params) == 1:
        return tuple(np.shape(params[0]))
    return tuple(np.broadcast_shapes(*(np.shape(p) for p in params)))


def _categorical(g: np.random.Generator, p: Params, shape: tuple[int, ...]) -> np.ndarray:
    probs = np.asarray(p[0], dtype=np.float64)
    cdf = np.cumsum(probs, axis=-1)
    u = g.random((*shape, 1)) * cdf[..., -1:]
    return np.minimum((u >= cdf).sum(-1), probs.shape[-1] - 1).astype(np.float64)


_SAMPLERS: dict[int, Callable[[np.random.Generator, Params, tuple[int, ...]], np.ndarray]] = {
    1: lambda g, p, s: g.normal(p[0], p[1], size=s),
    2: lambda g, p, s: g.uniform(p[0], p[1], size=s),
    3: _categorical,
    4: lambda g, p, s: g.poisson(p[0], size=s).astype(np.float64),
    5: lambda g, p, s: (g.random(size=s) < p[0]).astype(np.float64),
    6: lambda g, p, s: g.beta(p[0], p[1], size=s),
    7: lambda g, p, s: g.exponential(1.0 / np.asarray(p[0]), size=s),
    8: lambda g, p, s: g.gamma(p[0], 1.0 / np.asarray(p[1]), size=s),
    9: lambda g, p, s: g.lognormal(p[0], p[1], size=s),
    10: lambda g, p, s: g.binomial(np.rint(p[0]).astype(np.int64), p[1], size=s).astype(np.float64),
    11: lambda g, p, s: np.asarray(p[0]) * g.weibull(p[1], size=s),
}


def sample_wire(dist_type: int, params: Params, rng: np.random.Generator) -> np.ndarray:
    """One draw (float64 array of the value's shape) from a wire distribution."""
    try:
        sampler = _SAMPLERS[dist_type]
    except KeyError:
        raise ValueError(f"cannot sample unknown wire distribution type {dist_type}") from None
    return np.asarray(sampler(rng, params, value_shape(dist_type, params)), dtype=np.float64)
