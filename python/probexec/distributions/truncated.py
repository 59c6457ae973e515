"""Normal distribution restricted to [low, high], for proposals that must respect a bounded prior.

torch has no truncated normal, so this is one of the few places where the numerics are ours. The
density is torch's Normal log_prob minus log Z; everything that involves Z is done in log space with
`log_ndtr`, and intervals lying above the mean are mirrored into the lower tail, where the normal CDF
keeps full relative precision. Without that, a bound at +10 sigma would give Z = 1 - 1 = 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributions as td

from .base import ArrayLike, Distribution, SupportKind, as_float64, broadcast_batch_shape, require

__all__ = ["TruncatedNormal"]

_INF = math.inf
_F64 = torch.float64
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
#: Below this log CDF the inverse CDF would work on (sub)normal-underflowing probabilities; there the
#: truncated normal is within ~1e-3 relative of an exponential tail, which is sampled instead.
_LOG_CDF_UNDERFLOW = -600.0


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, switching formulas at -log 2 to stay accurate at both ends."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _log_std_normal_pdf(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * z * z - _HALF_LOG_2PI


class TruncatedNormal(Distribution):
    """Normal(mean, stddev) conditioned on [low, high]; either bound may be infinite.

    `mean`/`stddev` as parameters are those of the untruncated normal; the `mean`/`stddev` properties
    are the moments of the truncated distribution.
    """

    wire_type = 0
    param_names = ("mean", "stddev", "low", "high")
    torch_dist = None
    low: torch.Tensor
    high: torch.Tensor

    def __init__(
        self, mean: ArrayLike, stddev: ArrayLike, low: ArrayLike, high: ArrayLike, *, validate: bool = True
    ) -> None:
        loc, scale, lo, hi = as_float64(mean), as_float64(stddev), as_float64(low), as_float64(high)
        if validate:
            batch = broadcast_batch_shape("TruncatedNormal", mean=loc, stddev=scale, low=lo, high=hi)
            require(torch.isfinite(loc), "TruncatedNormal", "parameter 'mean' must be finite", mean=loc)
            require(
                (scale > 0) & (scale < _INF),
                "TruncatedNormal",
                "parameter 'stddev' must be finite and > 0",
                stddev=scale,
            )
            # `lo < hi` is false when either is NaN, so this one check also rejects NaN bounds.
            require(lo < hi, "TruncatedNormal", "parameter 'low' must be < 'high'", low=lo, high=hi)
        else:
            batch = torch.broadcast_shapes(loc.shape, scale.shape, lo.shape, hi.shape)
        self._set_params(loc, scale, lo, hi)
        self._batch_shape = batch
        self._base = td.Normal(loc, scale, validate_args=False)

        # Standardised bounds, and their mirror image whenever the interval's centre lies above the mean,
        # so that the inverse CDF below always works in the lower tail.
        a = (lo - loc) / scale
        b = (hi - loc) / scale
        self._a, self._b = a, b
        self._flip = (a + b) > 0  # NaN (both bounds infinite) compares False: no flip, as wanted.
        self._lo_std = torch.where(self._flip, -b, a)
        self._hi_std = torch.where(self._flip, -a, b)
        self._log_cdf_lo = torch.special.log_ndtr(self._lo_std)
        self._log_cdf_hi = torch.special.log_ndtr(self._hi_std)
        #: log of the normaliser Z = Phi(b) - Phi(a), accurate even when Z is astronomically small.
        self.log_normalizer = self._log_cdf_hi + _log1mexp(self._log_cdf_lo - self._log_cdf_hi)

    @property
    def loc(self) -> torch.Tensor:
        return self._params[0]

    @property
    def scale(self) -> torch.Tensor:
        return self._params[1]

    @property
    def batch_shape(self) -> torch.Size:
        return self._batch_shape

    @property
    def support_kind(self) -> SupportKind:
        """Kind "real" or "positive" when the bounds coincide with those supports, else "interval".

        An "interval" may have one infinite bound; `support_bounds` gives them.
        """
        lo, hi = self.low, self.high
        if bool(torch.all(hi == _INF)):
            if bool(torch.all(lo == -_INF)):
                return "real"
            if bool(torch.all(lo == 0)):
                return "positive"
        return "interval"

    @property
    def support_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.low, self.high

    def log_prob(self, value: ArrayLike) -> torch.Tensor:
        v = as_float64(value, device=self.loc.device)
        inside = (v >= self.low) & (v <= self.high)
        return torch.where(inside, self._base.log_prob(v) - self.log_normalizer, -_INF)

    def sample(
        self, sample_shape: Sequence[int] | torch.Size | int = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, generator=generator, dtype=_F64, device=self.loc.device)

        # Inverse CDF in the (possibly mirrored) lower-tail coordinates.
        cdf_lo, cdf_hi = self._log_cdf_lo.exp(), self._log_cdf_hi.exp()
        z = torch.special.ndtri(cdf_lo + u * (cdf_hi - cdf_lo))

        # Where even the upper bound's CDF underflows, the mass sits just inside that bound, at distance
        # ~1/|bound|: sample the exponential tail approximation t = alpha + Exp(alpha) truncated to beta.
        alpha, beta = -self._hi_std, -self._lo_std
        tail = alpha - torch.log1p(u * torch.expm1(-alpha * (beta - alpha))) / alpha
        z = torch.where(self._log_cdf_hi < _LOG_CDF_UNDERFLOW, -tail, z)

        z = torch.where(self._flip, -z, z)
        x = self.loc + self.scale * z
        # Rounding can put a draw a hair outside; a value outside would score -inf under this distribution.
        return torch.maximum(torch.minimum(x, self.high), self.low)

    def _ratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """phi(a)/Z and phi(b)/Z, formed in log space so both stay finite in the far tails."""
        ra = torch.exp(_log_std_normal_pdf(self._a) - self.log_normalizer)
        rb = torch.exp(_log_std_normal_pdf(self._b) - self.log_normalizer)
        return ra, rb

    @property
    def mean(self) -> torch.Tensor:
        ra, rb = self._ratios()
        return (self.loc + self.scale * (ra - rb)).expand(self._batch_shape)

    @property
    def variance(self) -> torch.Tensor:
        ra, rb = self._ratios()
        # a * phi(a) is 0 at an infinite bound, but -inf * 0 evaluates to NaN.
        a_ra = torch.where(torch.isinf(self._a), 0.0, self._a * ra)
        b_rb = torch.where(torch.isinf(self._b), 0.0, self._b * rb)
        d = ra - rb
        var = self.scale * self.scale * (1.0 + a_ra - b_rb - d * d).clamp(min=0.0)
        return var.expand(self._batch_shape)
