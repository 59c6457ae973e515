"""The eleven distributions that travel on the wire, each a thin wrapper over a `torch.distributions` class.

The wrappers add what the engine needs on top of torch: generator-controlled sampling (torch's own
`sample` draws from the global generator only), `-inf` instead of exceptions or NaN outside the support,
exact `-inf` for outcomes that degenerate parameters (probability 0 or 1) rule out, and cheap parameter
validation with messages that name the offending parameter. The densities themselves are torch's.

Values of the discrete distributions (Categorical, Poisson, Bernoulli, Binomial) are float64 tensors
holding integers, so that every draw the engine records has the same dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.distributions as td

from .base import (
    ArrayLike,
    Distribution,
    SupportKind,
    as_float64,
    as_shape,
    broadcast_batch_shape,
    require,
)

__all__ = [
    "Bernoulli",
    "Beta",
    "Binomial",
    "Categorical",
    "Exponential",
    "Gamma",
    "LogNormal",
    "Normal",
    "Poisson",
    "Uniform",
    "Weibull",
]

_INF = math.inf
_F64 = torch.float64
_TINY = torch.finfo(_F64).tiny


def _positive(dist: str, name: str, x: torch.Tensor) -> None:
    # `0 < x < inf` is false for NaN too, so one comparison chain covers NaN, sign and overflow.
    require((x > 0) & (x < _INF), dist, f"parameter '{name}' must be finite and > 0", **{name: x})


def _finite(dist: str, name: str, x: torch.Tensor) -> None:
    require(torch.isfinite(x), dist, f"parameter '{name}' must be finite", **{name: x})


def _probability(dist: str, name: str, x: torch.Tensor) -> None:
    require((x >= 0) & (x <= 1), dist, f"parameter '{name}' must be in [0, 1]", **{name: x})


class _TorchBacked(Distribution):
    """Shared machinery for distributions that are exactly one torch distribution."""

    torch_dist: td.Distribution
    #: A value inside every instance's support, substituted for out-of-support values before torch
    #: evaluates them (some torch log_probs index with the value or take logs of negatives).
    _safe_value: ClassVar[float] = 0.0

    def _in_support(self) -> torch.Tensor | float:
        return self._safe_value

    def _impossible(self, value: torch.Tensor) -> torch.Tensor | None:
        """Mask of in-support values that degenerate parameters make impossible; None when not needed."""
        return None

    @property
    def _device(self) -> torch.device:
        return self._params[0].device

    def log_prob(self, value: ArrayLike) -> torch.Tensor:
        v = as_float64(value, device=self._device)
        ok = self.torch_dist.support.check(v)
        lp = self.torch_dist.log_prob(torch.where(ok, v, self._in_support()))
        lp = torch.where(ok, lp, -_INF)
        impossible = self._impossible(v)
        if impossible is not None:
            lp = torch.where(impossible, -_INF, lp)
        return lp

    @property
    def mean(self) -> torch.Tensor:
        return self.torch_dist.mean

    @property
    def variance(self) -> torch.Tensor:
        return self.torch_dist.variance

    def _uniform(
        self, sample_shape: Sequence[int] | torch.Size, generator: torch.Generator | None
    ) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return torch.rand(shape, generator=generator, dtype=_F64, device=self._device)

    def _normal(
        self, sample_shape: Sequence[int] | torch.Size, generator: torch.Generator | None
    ) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return torch.randn(shape, generator=generator, dtype=_F64, device=self._device)

    def _exponential(
        self, sample_shape: Sequence[int] | torch.Size, generator: torch.Generator | None
    ) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return torch.empty(shape, dtype=_F64, device=self._device).exponential_(generator=generator)


class Normal(_TorchBacked):
    """Gaussian with the given mean and standard deviation (wire type 1)."""

    wire_type = 1
    param_names = ("mean", "stddev")
    torch_dist: td.Normal

    def __init__(self, mean: ArrayLike, stddev: ArrayLike, *, validate: bool = True) -> None:
        loc, scale = as_float64(mean), as_float64(stddev)
        if validate:
            broadcast_batch_shape("Normal", mean=loc, stddev=scale)
            _finite("Normal", "mean", loc)
            _positive("Normal", "stddev", scale)
        self._set_params(loc, scale)
        self.torch_dist = td.Normal(loc, scale, validate_args=False)

    @property
    def support_kind(self) -> SupportKind:
        return "real"

    def sample(
        self, sample_shape: Sequence[int] | torch.Size | int = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.torch_dist.loc + self.torch_dist.scale * self._normal(sample_shape, generator)


class Uniform(_TorchBacked):
    """Uniform on [low, high) (wire type 2); log_prob is -inf outside, never an error."""

    wire_type = 2
    param_names = ("low", "high")
    torch_dist: td.Uniform
    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, low: ArrayLike, high: ArrayLike, *, validate: bool = True) -> None:
        lo, hi = as_float64(low), as_float64(high)
        if validate:
            broadcast_batch_shape("Uniform", low=lo, high=hi)
            _finite("Uniform", "low", lo)
            _finite("Uniform", "high", hi)
            require(lo < hi, "Uniform", "parameter 'low' must be < 'high'", low=lo, high=hi)
        self._set_params(lo, hi)
        self.torch_dist = td.Uniform(lo, hi, validate_args=False)

    @property
    def support_kind(self) -> SupportKind:
        return "interval"

    @property
    def support_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.torch_dist.low, self.torch_dist.high

    def _in_support(self) -> torch.Tensor:
        return self.torch_dist.low

    def sample(
        self, sample_shape: Sequence[int] | torch.Size | int = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        low, high = self.torch_dist.low, self.torch_dist.high
        return low + (high - low) * self._uniform(sample_shape, generator)


class Categorical(_TorchBacked):
    """Distribution over indices 0..K-1 (wire type 3); probs has shape (..., K).

    Non-negative weights are accepted and normalised, since simulators often pass unnormalised weights.
    The torch distribution is built from log-probabilities rather than probs so that a zero-weight
    category has log_prob exactly -inf (torch clamps probs to eps, giving about -36 instead).
    """

    wire_type = 3
    param_names = ("probs",)
    torch_dist: td.Categorical
    probs: torch.Tensor

    def __init__(self, probs: ArrayLike, *, validate: bool = True) -> None:
        weights = as_float64(probs)
        if weights.dim() == 0:
            raise ValueError("Categorical: parameter 'probs' must have at least one dimension (..., K)")
        if validate:
            require(
                (weights >= 0) & (weights < _INF),
                "Categorical",
                "parameter 'probs' must be finite and non-negative",
                probs=weights,
            )
        total = weights.sum(-1, keepdim=True)
        if validate:
            require(
                total[..., 0] > 0,
                "Categorical",
                "parameter 'probs' must not be all zero",
                probs_sum=total[..., 0],
            )
        normalised = weights / total
        self._set_params(normalised)
        self.torch_dist = td.Categorical(logits=normalised.log(), validate_args=False)

    @property
    def support_kind(self) -> SupportKind:
        return "discrete_finite"

    @property
    def num_categories(self) -> int:
        return self.probs.shape[-1]

    @property
    def support_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return as_float64(0.0), as_float64(self.num_categories - 1)

    @property
    def batch_shape(self) -> torch.Size:
        return self.probs.shape[:-1]

    @property
    def mean(self) -> torch.Tensor:
        # torch reports NaN here (categories are labels to it); for the engine they are integer indices.
        k = torch.arange(self.num_categories, dtype=_F64, device=self._device)
        return (self.probs * k).sum(-1)

    @property
    def variance(self) -> torch.Tensor:
        k = torch.arange(self.num_categories, dtype=_F64, device=self._device)
        mean = (self.probs * k).sum(-1)
        return ((self.probs * k * k).sum(-1) - mean * mean).clamp(min=0.0)

    def sample(
        self, sample_shape: Sequence[int] | torch.Size | int = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        n = as_shape(sample_shape).numel()
        if shape.numel() == 0:
            return torch.empty(shape, dtype=_F64, device=self._device)
        flat = self.probs.reshape(-1, self.num_categories)
        idx = torch.multinomial(flat, n, replacement=True, generator=generator)  # (batch, n)
        return idx.T.reshape(shape).to(_F64)


class Poisson(_TorchBacked):
    """Poisson counts with the given rate (wire type 4); rate 0 is allowed (always 0)."""

    wire_type = 4
    param_names = ("rate",)
    torch_dist: td.Poisson
    rate: torch.Tensor

    def __init__(self, rate: ArrayLike, *, validate: bool = True) -> None:
        r = as_float64(rate)
        if validate:
            require((r >= 0) & (r < _INF), "Poisson", "parameter 'rate' must be finite and >= 0", rate=r)
        self._set_params(r)
        self.torch_dist = td.Poisson(r, validate_args=False)

    @property
    def support_kind(self) -> SupportKind:
        return "discrete_nonnegative"

    def sample(
        self, sample_shape: Sequence[int] | torch.Size | int = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return torch.poisson(self.torch_dist.rate.expand(shape), generator=generator)


class Bernoulli(_TorchBacked):
    """0/1 outcome with P(1) = probs (wire type 5); values are float64 0.0 or 1.0."""

    wire_type = 5
    param_names = ("probs",)
    torch_dist: td.Bernoulli
    probs: torch.Tensor

    def __init__(self, probs: ArrayLike, *, validate: bool = True) -> None:
        p = as_float64(probs)
        if validate:
            _probability("Bernoulli", "probs", p)
        self._set_params(p)
        self.torch_dist = td.Bernoulli(probs=p, validate_args=False)

    @property
    def support_kind(self) -> SupportKind:
        return "boolean"

    def _impossible(self, value: torch.Tensor) -> torch.Tensor:
        # torch clamps probs away from 0 and 1, so without this P(1 | p=0) would be about e^-36, not 0.
        p = self.probs
        return ((p == 0) & (value == 1)) | ((p == 1) & (value == 0))

    def sample(
        self, sample_shape: Sequence[int] | torch.Size | int = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return torch.bernoulli(self.torch_dist.probs.expand(shape), generator=generator)


class Beta(_TorchBacked):
    """Beta on [0, 1] (wire type 6) in torch's parameter order: concentration1 (alpha), concentration0."""

    wire_type = 6
    param_names = ("concentration1", "concentration0")
    torch_dist: td.Beta
    concentration1: torch.Tensor
    concentration0: torch.Tensor
    _safe_value = 0.5

    def __init__(
        self, concentration1: ArrayLike, concentration0: ArrayLike, *, validate: bool = True
    ) -> None:
        c1, c0 = as_float64(concentration1), as_float64(concentration0)
        if validate:
            broadcast_batch_shape("Beta", concentration1=c1, concentration0=c0)
            _positive("Beta", "concentration1", c1)
            _positive("Beta", "concentration0", c0)
        self._set_params(c1, c0)
        self.torch_dist = td.Beta(c1, c0, validate_args=False)

    @property
    def support_kind(self) -> SupportKind:
        return "unit_interval"

    def sample(
        self, sample_shape: Sequence[int] | torch.Size | int = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        conc = torch.stack([self.torch_dist.concentration1, self.torch_dist.concentration0], -1)
        # The same Dirichlet kernel torch's Beta uses (robust for tiny concentrations), but with a generator.
        return torch._sample_dirichlet(conc.expand((*shape, 2)), generator=generator)[..., 0]


class Exponential(_TorchBacked):
    """Exponential with the given rate (wire type 7)."""

    wire_type = 7
    param_names = ("rate",)
    torch_dist: td.Exponential
    rate: torch.Tensor
    _safe_value = 1.0

    def __init__(self, rate: ArrayLike, *, validate: bool = True) -> None:
        r = as_float64(rate)
        if validate:
            _positive("Exponential", "rate", r)
        self._set_params(r)
        self.torch_dist = td.Exponential(r, validate_args=False)

    @property
    def support_kind(self) -> SupportKind:
        return "positive"

    def sample(
        self, sample_shape: Sequence[int] | torch.Size | int = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self._exponential(sample_shape, generator) / self.torch_dist.rate


class Gamma(_TorchBacked):
    """Gamma with shape `concentration` and inverse scale `rate` (wire type 8)."""

    wire_type = 8
    param_names = ("concentration", "rate")
    torch_dist: td.Gamma
    concentration: torch.Tensor
    rate: torch.Tensor
    _safe_value = 1.0

    def __init__(self, concentration: ArrayLike, rate: ArrayLike, *, validate: bool = True) -> None:
        c, r = as_float64(concentration), as_float64(rate)
        if validate:
            broadcast_batch_shape("Gamma", concentration=c, rate=r)
            _positive("Gamma", "concentration", c)
            _positive("Gamma", "rate", r)
        self._set_params(c, r)
        self.torch_dist = td.Gamma(c, r, validate_args=False)

    @property
    def support_kind(self) -> SupportKind:
        return "positive"

    def sample(
        self, sample_shape: Sequence[int] | torch.Size | int = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        # torch's own Gamma sampler kernel, called with a generator; clamped like torch does because small
        # concentrations underflow to 0, which would then score as an impossible value.
        draws = torch._standard_gamma(self.torch_dist.concentration.expand(shape), generator=generator)
        return (draws / self.torch_dist.rate).clamp(min=_TINY)


class LogNormal(_TorchBacked):
    """exp of a Normal(loc, scale) (wire type 9); loc and scale are those of the underlying Normal."""

    wire_type = 9
    param_names = ("loc", "scale")
    torch_dist: td.LogNormal
    loc: torch.Tensor
    scale: torch.Tensor
    _safe_value = 1.0

    def __init__(self, loc: ArrayLike, scale: ArrayLike, *, validate: bool = True) -> None:
        m, s = as_float64(loc), as_float64(scale)
        if validate:
            broadcast_batch_shape("LogNormal", loc=m, scale=s)
            _finite("LogNormal", "loc", m)
            _positive("LogNormal", "scale", s)
        self._set_params(m, s)
        self.torch_dist = td.LogNormal(m, s, validate_args=False)

    @property
    def support_kind(self) -> SupportKind:
        return "positive"

    def sample(
        self, sample_shape: Sequence[int] | torch.Size | int = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        normal = self.torch_dist.loc + self.torch_dist.scale * self._normal(sample_shape, generator)
        return normal.exp().clamp(min=_TINY)


class Binomial(_TorchBacked):
    """Number of successes in total_count trials (wire type 10); total_count is a float64 integer."""

    wire_type = 10
    param_names = ("total_count", "probs")
    torch_dist: td.Binomial
    total_count: torch.Tensor
    probs: torch.Tensor

    def __init__(self, total_count: ArrayLike, probs: ArrayLike, *, validate: bool = True) -> None:
        n, p = as_float64(total_count), as_float64(probs)
        if validate:
            broadcast_batch_shape("Binomial", total_count=n, probs=p)
            require(
                (n >= 0) & (n < _INF) & (n == n.round()),
                "Binomial",
                "parameter 'total_count' must be a finite non-negative integer",
                total_count=n,
            )
            _probability("Binomial", "probs", p)
        self._set_params(n, p)
        self.torch_dist = td.Binomial(n, probs=p, validate_args=False)

    @property
    def support_kind(self) -> SupportKind:
        return "discrete_finite"

    @property
    def support_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros_like(self.torch_dist.total_count), self.torch_dist.total_count

    def _impossible(self, value: torch.Tensor) -> torch.Tensor:
        # As for Bernoulli: torch's eps-clamped probs would give a tiny but finite mass here.
        p, n = self.probs, self.total_count
        return ((p == 0) & (value > 0)) | ((p == 1) & (value < n))

    def sample(
        self, sample_shape: Sequence[int] | torch.Size | int = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        n = self.torch_dist.total_count.expand(shape)
        p = self.torch_dist.probs.expand(shape)
        return torch.binomial(n, p, generator=generator)


class Weibull(_TorchBacked):
    """Weibull with the given scale and shape `concentration` (wire type 11), torch's parameter order."""

    wire_type = 11
    param_names = ("scale", "concentration")
    torch_dist: td.Weibull
    scale: torch.Tensor
    concentration: torch.Tensor
    _safe_value = 1.0

    def __init__(self, scale: ArrayLike, concentration: ArrayLike, *, validate: bool = True) -> None:
        s, c = as_float64(scale), as_float64(concentration)
        if validate:
            broadcast_batch_shape("Weibull", scale=s, concentration=c)
            _positive("Weibull", "scale", s)
            _positive("Weibull", "concentration", c)
        self._set_params(s, c)
        self.torch_dist = td.Weibull(s, c, validate_args=False)

    @property
    def support_kind(self) -> SupportKind:
        return "positive"

    def sample(
        self, sample_shape: Sequence[int] | torch.Size | int = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        # Same construction as torch's Weibull (scale * E^(1/k), E ~ Exp(1)), with a generator; clamped
        # because E can be exactly 0, which is outside the (open) support torch declares.
        e = self._exponential(sample_shape, generator)
        return (self.torch_dist.scale * e.pow(1.0 / self.torch_dist.concentration)).clamp(min=_TINY)
