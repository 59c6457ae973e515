"""Proposal heads: from the LSTM's output at one address to a distribution over that address's value.

Each head is built for the prior's type, so the proposal lives on the prior's support and is
expressed relative to the prior's own parameters (a Normal's proposal is a mixture over
`(x - mean) / stddev`), which keeps one network usable across draws whose priors move from trace
to trace. Every head computes `log_prob` of the value actually drawn — the importance weight needs
the exact density of what was sampled — and discrete priors get discrete proposals.

Wire type numbers: 1 Normal, 2 Uniform, 3 Categorical, 4 Poisson, 5 Bernoulli, 6 Beta,
7 Exponential, 8 Gamma, 9 LogNormal, 10 Binomial, 11 Weibull.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

NORMAL, UNIFORM, CATEGORICAL, POISSON, BERNOULLI, BETA = 1, 2, 3, 4, 5, 6
EXPONENTIAL, GAMMA, LOGNORMAL, BINOMIAL, WEIBULL = 7, 8, 9, 10, 11
NUM_DIST_TYPES = 12

_LOG_2PI = math.log(2 * math.pi)
_Frame = tuple[Tensor, Tensor, Tensor]  # a count head's prior mean, spread and top of its range
_Parts = tuple[Tensor, Tensor, Tensor]  # a mixture's log weights, means and log scales


def _split(params: Tensor, k: int) -> list[Tensor]:
    """The k parameters of a draw of `size` values, stored back to back ([B, k*size])."""
    size = params.shape[1] // k
    return [params[:, j * size : (j + 1) * size] for j in range(k)]


def _log_normal_interval(a: Tensor, b: Tensor) -> Tensor:
    """log(Φ(b) − Φ(a)) for a < b, accurate in both tails (an interval right of 0 is mirrored)."""
    flip = a > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    l_lo, l_hi = torch.special.log_ndtr(lo), torch.special.log_ndtr(hi)
    return l_hi + torch.log(-torch.expm1((l_lo - l_hi).clamp(max=-1e-200)))


def _mog_log_prob(z: Tensor, log_weights: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """Mixture of normals, per element: z [B,S], normalised log weights and components [B,S,K]
    -> [B,S]."""
    d = (z.unsqueeze(-1) - means) * torch.exp(-log_scales)
    return torch.logsumexp(log_weights - 0.5 * d * d - log_scales, -1) - 0.5 * _LOG_2PI


def _pick_component(log_weights: Tensor, gen: torch.Generator | None) -> Tensor:
    """One component per element, [B,S,1], by inverting the weights' CDF at a uniform draw (a
    third of the time of `torch.multinomial` on such small rows)."""
    cdf = torch.exp(log_weights).cumsum(-1)
    u = torch.rand(cdf.shape[:-1], generator=gen, device=cdf.device, dtype=cdf.dtype).unsqueeze(-1)
    # u * total: the weights' sum differs from 1 by rounding. The clamp covers u * total equal to it.
    below = (cdf < u * cdf[..., -1:]).sum(-1, keepdim=True)
    return below.clamp_max(log_weights.shape[-1] - 1)


def _mog_sample(
    log_weights: Tensor, means: Tensor, log_scales: Tensor, gen: torch.Generator | None
) -> Tensor:
    k = _pick_component(log_weights, gen)
    m, s = means.gather(-1, k).squeeze(-1), torch.exp(log_scales.gather(-1, k).squeeze(-1))
    return m + s * torch.randn(m.shape, generator=gen, device=m.device, dtype=m.dtype)


class ProposalHead(nn.Module):
    """Base: `raw = layer(h)` holds the proposal's parameters; subclasses say what they mean."""

    outputs_per_value: int = 1

    def __init__(self, hidden: int, value_size: int, param_size: int, components: int) -> None:
        super().__init__()
        self.value_size = value_size
        self.param_size = param_size
        self.components = components
        self.layer = nn.Sequential(
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, value_size * self.outputs_per_value)
        )

    def raw(self, h: Tensor) -> Tensor:
        return self.layer(h)

    def log_prob(self, raw: Tensor, params: Tensor, value: Tensor) -> Tensor:
        """log q(value) per trace: [B]."""
        raise NotImplementedError

    def sample(self, raw: Tensor, params: Tensor, gen: torch.Generator | None = None) -> Tensor:
        """Values [B, value_size] drawn from the proposal."""
        raise NotImplementedError

    def sample_with_log_prob(
        self, raw: Tensor, params: Tensor, gen: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Values drawn from the proposal and their log q: what an inference round needs, in one
        call so a head can share the work the two have in common."""
        value = self.sample(raw, params, gen)
        return value, self.log_prob(raw, params, value)

    def features(self, params: Tensor, value: Tensor) -> Tensor:
        """The value as the next LSTM step sees it: standardised by the prior, [B, feature_size]."""
        raise NotImplementedError

    def feature_size(self) -> int:
        return self.value_size


class _MixtureHead(ProposalHead):
    """A mixture of `components` normals per value element, in a space the subclass defines by
    `to_z` (value -> standardised z, with the log-Jacobian) and `from_z`."""

    def __init__(self, hidden: int, value_size: int, param_size: int, components: int) -> None:
        self.outputs_per_value = 3 * components
        super().__init__(hidden, value_size, param_size, components)

    def _parts(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised log weights, means and log scales, each [B, value_size, components]."""
        r = raw.reshape(raw.shape[0], self.value_size, 3, self.components)
        return F.log_softmax(r[:, :, 0], -1), r[:, :, 1], r[:, :, 2].clamp(-7.0, 3.0)

    def to_z(self, params: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def from_z(self, params: Tensor, z: Tensor) -> Tensor:
        raise NotImplementedError

    def log_prob(self, raw: Tensor, params: Tensor, value: Tensor) -> Tensor:
        z, log_jac = self.to_z(params, value)
        return (_mog_log_prob(z, *self._parts(raw)) + log_jac).sum(-1)

    def sample(self, raw: Tensor, params: Tensor, gen: torch.Generator | None = None) -> Tensor:
        return self.from_z(params, _mog_sample(*self._parts(raw), gen))

    def sample_with_log_prob(
        self, raw: Tensor, params: Tensor, gen: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        parts = self._parts(raw)
        value = self.from_z(params, _mog_sample(*parts, gen))
        # Scored at the value as sent (`to_z` of it, not the z drawn): they differ where
        # `from_z` clamps to the support.
        z, log_jac = self.to_z(params, value)
        return value, (_mog_log_prob(z, *parts) + log_jac).sum(-1)

    def features(self, params: Tensor, value: Tensor) -> Tensor:
        return self.to_z(params, value)[0].clamp(-10.0, 10.0)


class NormalHead(_MixtureHead):
    """Normal prior: mixture over (x - mean) / stddev."""

    def to_z(self, params: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        mean, std = _split(params, 2)
        return (value - mean) / std, -torch.log(std)

    def from_z(self, params: Tensor, z: Tensor) -> Tensor:
        mean, std = _split(params, 2)
        return mean + std * z


class LogNormalHead(_MixtureHead):
    """LogNormal prior: mixture over (log x - loc) / scale, so the proposal is positive."""

    def to_z(self, params: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        loc, scale = _split(params, 2)
        logx = torch.log(value.clamp_min(1e-30))
        return (logx - loc) / scale, -torch.log(scale) - logx

    def from_z(self, params: Tensor, z: Tensor) -> Tensor:
        loc, scale = _split(params, 2)
        return torch.exp(loc + scale * z)


class PositiveHead(_MixtureHead):
    """Gamma, Exponential, Weibull: mixture over log(x / s), s the prior's scale."""

    def __init__(
        self, dist_type: int, hidden: int, value_size: int, param_size: int, components: int
    ) -> None:
        super().__init__(hidden, value_size, param_size, components)
        self.dist_type = dist_type

    def _scale(self, params: Tensor) -> Tensor:
        if self.dist_type == EXPONENTIAL:
            return 1.0 / params
        if self.dist_type == GAMMA:
            conc, rate = _split(params, 2)
            return conc / rate
        return _split(params, 2)[0]  # Weibull(scale, concentration)

    def to_z(self, params: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        logx = torch.log(value.clamp_min(1e-30))
        return logx - torch.log(self._scale(params)), -logx

    def from_z(self, params: Tensor, z: Tensor) -> Tensor:
        return self._scale(params) * torch.exp(z)


class BoundedHead(_MixtureHead):
    """Uniform and Beta: a mixture of logit-normals on the prior's interval (normals over
    logit((x - low) / width)), so every proposed value is inside the support."""

    def __init__(
        self, dist_type: int, hidden: int, value_size: int, param_size: int, components: int
    ) -> None:
        super().__init__(hidden, value_size, param_size, components)
        self.dist_type = dist_type

    def _interval(self, params: Tensor) -> tuple[Tensor, Tensor]:
        if self.dist_type == UNIFORM:
            low, high = _split(params, 2)
            return low, high - low
        z = torch.zeros(params.shape[0], self.value_size, device=params.device, dtype=params.dtype)
        return z, z + 1.0

    def to_z(self, params: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        low, width = self._interval(params)
        u = ((value - low) / width).clamp(1e-7, 1 - 1e-7)
        return torch.log(u) - torch.log1p(-u), -torch.log(u) - torch.log1p(-u) - torch.log(width)

    def from_z(self, params: Tensor, z: Tensor) -> Tensor:
        low, width = self._interval(params)
        return low + width * torch.sigmoid(z).clamp(1e-7, 1 - 1e-7)

    def features(self, params: Tensor, value: Tensor) -> Tensor:
        low, width = self._interval(params)
        return (value - low) / width * 2.0 - 1.0


class CategoricalHead(ProposalHead):
    """Categorical: a softmax over the prior's categories."""

    def __init__(self, hidden: int, value_size: int, param_size: int, components: int) -> None:
        self.categories = max(param_size // max(value_size, 1), 1)
        self.outputs_per_value = self.categories
        super().__init__(hidden, value_size, param_size, components)

    def _logits(self, raw: Tensor) -> Tensor:
        return F.log_softmax(raw.reshape(raw.shape[0], self.value_size, self.categories), -1)

    def log_prob(self, raw: Tensor, params: Tensor, value: Tensor) -> Tensor:
        idx = value.long().clamp(0, self.categories - 1).unsqueeze(-1)
        return self._logits(raw).gather(-1, idx).squeeze(-1).sum(-1)

    def sample(self, raw: Tensor, params: Tensor, gen: torch.Generator | None = None) -> Tensor:
        p = torch.exp(self._logits(raw)).reshape(-1, self.categories)
        return torch.multinomial(p, 1, generator=gen).reshape(raw.shape[0], self.value_size).to(params.dtype)

    def features(self, params: Tensor, value: Tensor) -> Tensor:
        idx = value.long().clamp(0, self.categories - 1)
        return F.one_hot(idx, self.categories).to(params.dtype).reshape(value.shape[0], -1)

    def feature_size(self) -> int:
        return self.value_size * self.categories


class BernoulliHead(ProposalHead):
    def log_prob(self, raw: Tensor, params: Tensor, value: Tensor) -> Tensor:
        return -F.binary_cross_entropy_with_logits(raw, value, reduction="none").sum(-1)

    def sample(self, raw: Tensor, params: Tensor, gen: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(raw), generator=gen)

    def features(self, params: Tensor, value: Tensor) -> Tensor:
        return value * 2.0 - 1.0


class CountHead(ProposalHead):
    """Poisson and Binomial: a discretised mixture of normals around the prior's mean, truncated
    to the support, mixed with the prior itself (weight `prior_weight`) so the proposal covers
    every count the posterior can reach. A probability for each integer, never a density."""

    prior_weight = 0.05

    def __init__(
        self, dist_type: int, hidden: int, value_size: int, param_size: int, components: int
    ) -> None:
        self.outputs_per_value = 3 * components
        super().__init__(hidden, value_size, param_size, components)
        self.dist_type = dist_type

    def _frame(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Prior mean, spread and the upper end of the proposal's range, float64. For a Poisson
        the range ends 40 spreads above the mean: finite, so every CDF and gradient stays finite
        (the prior share of the mixture still reaches any count)."""
        p = params.double()
        if self.dist_type == POISSON:
            spread = p.sqrt().clamp_min(0.5)
            return p, spread, torch.ceil(p + 40 * spread + 40)
        n, prob = _split(p, 2)
        mean = n * prob
        return mean, (mean * (1 - prob)).sqrt().clamp_min(0.5), n

    def _prior_log_prob(self, params: Tensor, k: Tensor) -> Tensor:
        """The prior's log mass at counts k (float64, -inf off its support), written out: a
        `torch.distributions` object per call cost more than the rest of an inference round's
        count head."""
        p = params.double()
        if self.dist_type == POISSON:
            lp = torch.special.xlogy(k, p) - p - torch.lgamma(k + 1)
            return torch.where(k >= 0, lp, -math.inf)
        n, prob = _split(p, 2)
        lp = (
            torch.lgamma(n + 1)
            - torch.lgamma(k + 1)
            - torch.lgamma((n - k).clamp_min(0) + 1)
            + torch.special.xlogy(k, prob)
            + torch.special.xlogy(n - k, 1 - prob)
        )
        return torch.where((k >= 0) & (k <= n), lp, -math.inf)

    def _parts(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised log weights, means and log scales (float64), each [B, value_size, components]."""
        r = raw.double().reshape(raw.shape[0], self.value_size, 3, self.components)
        return F.log_softmax(r[:, :, 0], -1), r[:, :, 1], r[:, :, 2].clamp(-5.0, 3.0)

    def _log_mass(self, frame: _Frame, parts: _Parts, params: Tensor, k: Tensor) -> Tensor:
        """log q(k) per element, float64, computed in log space throughout: a component far
        from the support has probabilities below 1e-300, whose ratios must not become 0/0."""
        mean, spread, top = frame
        log_w, mu, log_s = parts
        # The four interval ends, each component's standardised: k's own interval and the
        # support's, stacked so each op runs once for all four (a round's few count rows cost
        # per op, not per element).
        ends = torch.stack([k - 0.5, k + 0.5, torch.full_like(k, -0.5), top + 0.5])
        z = (((ends - mean) / spread).unsqueeze(-1) - mu) * torch.exp(-log_s)
        log_mass = _log_normal_interval(z[0::2], z[1::2])  # [2, B, S, K]: k's, the support's
        log_q = torch.logsumexp(log_w + log_mass[0] - log_mass[1], -1)
        log_q = torch.where((k >= 0) & (k <= top), log_q, -math.inf)
        w = self.prior_weight
        return torch.logaddexp(log_q + math.log1p(-w), self._prior_log_prob(params, k) + math.log(w))

    def _sample(self, frame: _Frame, parts: _Parts, params: Tensor, gen: torch.Generator | None) -> Tensor:
        """Counts (float64) from the proposal."""
        mean, spread, top = frame
        log_w, mu, log_s = parts
        k = _pick_component(log_w, gen)
        m, s = mu.gather(-1, k).squeeze(-1), torch.exp(log_s.gather(-1, k).squeeze(-1))
        # Inverse-CDF sampling of the component truncated to [-0.5, top + 0.5], then rounding:
        # exactly the discretised, truncated component that `_log_mass` scores. An interval
        # right of the mean is mirrored, so the CDF is read where it is precise.
        alpha = ((-0.5 - mean) / spread - m) / s
        beta = ((top + 0.5 - mean) / spread - m) / s
        flip = alpha > 0
        lo, hi = torch.where(flip, -beta, alpha), torch.where(flip, -alpha, beta)
        a, b = torch.special.ndtr(lo), torch.special.ndtr(hi)
        u = a + (b - a) * torch.rand(a.shape, generator=gen, device=a.device, dtype=a.dtype)
        t = torch.special.ndtri(u.clamp(1e-300, 1 - 1e-16)).clamp(lo, hi)
        y = m + s * torch.where(flip, -t, t)
        counts = torch.minimum(torch.round(mean + spread * y).clamp_min(0), top)
        from_prior = (
            torch.rand(counts.shape, generator=gen, device=a.device, dtype=a.dtype) < self.prior_weight
        )
        if from_prior.any():
            p = params.double()
            if self.dist_type == POISSON:
                prior = torch.poisson(p.expand_as(counts).contiguous(), generator=gen)
            else:
                n, prob = _split(p, 2)
                prior = torch.binomial(
                    n.expand_as(counts).contiguous(), prob.expand_as(counts).contiguous(), generator=gen
                )
            counts = torch.where(from_prior, prior, counts)
        return counts

    def log_prob(self, raw: Tensor, params: Tensor, value: Tensor) -> Tensor:
        return (
            self._log_mass(self._frame(params), self._parts(raw), params, value.double())
            .sum(-1)
            .to(raw.dtype)
        )

    def sample(self, raw: Tensor, params: Tensor, gen: torch.Generator | None = None) -> Tensor:
        return self._sample(self._frame(params), self._parts(raw), params, gen).to(raw.dtype)

    def sample_with_log_prob(
        self, raw: Tensor, params: Tensor, gen: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        frame, parts = self._frame(params), self._parts(raw)
        counts = self._sample(frame, parts, params, gen)
        return counts.to(raw.dtype), self._log_mass(frame, parts, params, counts).sum(-1).to(raw.dtype)

    def features(self, params: Tensor, value: Tensor) -> Tensor:
        mean, spread, _ = self._frame(params)
        return ((value.double() - mean) / spread).clamp(-10, 10).to(value.dtype)


def make_head(
    dist_type: int, hidden: int, value_size: int, param_size: int, components: int = 5
) -> ProposalHead:
    if dist_type == NORMAL:
        return NormalHead(hidden, value_size, param_size, components)
    if dist_type == LOGNORMAL:
        return LogNormalHead(hidden, value_size, param_size, components)
    if dist_type in (UNIFORM, BETA):
        return BoundedHead(dist_type, hidden, value_size, param_size, components)
    if dist_type in (EXPONENTIAL, GAMMA, WEIBULL):
        return PositiveHead(dist_type, hidden, value_size, param_size, components)
    if dist_type == CATEGORICAL:
        return CategoricalHead(hidden, value_size, param_size, components)
    if dist_type == BERNOULLI:
        return BernoulliHead(hidden, value_size, param_size, components)
    if dist_type in (POISSON, BINOMIAL):
        return CountHead(dist_type, hidden, value_size, param_size, components)
    raise ValueError(f"no proposal head for distribution wire type {dist_type}")
