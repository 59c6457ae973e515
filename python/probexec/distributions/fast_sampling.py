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
    if all(type(p) is float for p in params):  # scalar priors, most draws: no NumPy shape calls
        return ()
    shapes = [np.shape(p) for p in params]
    if all(s == shapes[0] for s in shapes):  # the common case (scalars), without broadcasting
        return tuple(shapes[0])
    return tuple(np.broadcast_shapes(*shapes))


def _categorical(g: np.random.Generator, p: Params, shape: tuple[int, ...]) -> np.ndarray:
    probs = np.atleast_1d(np.asarray(p[0], dtype=np.float64))  # one category arrives as a float
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


# Scalar parameters (Python floats, as the codec decodes them): NumPy's scalar paths are ~10x
# faster than its broadcasting ones.
_SCALAR: dict[int, Callable[..., float]] = {
    1: lambda g, m, s: g.normal(m, s),
    2: lambda g, lo, hi: g.uniform(lo, hi),
    4: lambda g, r: float(g.poisson(r)),
    5: lambda g, p: float(g.random() < p),
    6: lambda g, a, b: g.beta(a, b),
    7: lambda g, r: g.exponential(1.0 / r),
    8: lambda g, c, r: g.gamma(c, 1.0 / r),
    9: lambda g, m, s: g.lognormal(m, s),
    10: lambda g, n, p: float(g.binomial(round(n), p)),
    11: lambda g, scale, c: scale * g.weibull(c),
}


def sample_wire(dist_type: int, params: Params, rng: np.random.Generator) -> np.ndarray | float:
    """One draw from a wire distribution: a float when every parameter is a float (a scalar draw),
    else a float64 array of the value's shape."""
    # Per-draw hot path: two type checks, no generator expression.
    if type(params[0]) is float and (len(params) == 1 or type(params[1]) is float):
        scalar = _SCALAR.get(dist_type)
        if scalar is not None:
            return scalar(rng, *params)
    try:
        sampler = _SAMPLERS[dist_type]
    except KeyError:
        raise ValueError(f"cannot sample unknown wire distribution type {dist_type}") from None
    return np.asarray(sampler(rng, params, value_shape(dist_type, params)), dtype=np.float64)
