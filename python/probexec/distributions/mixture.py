"""Finite mixtures of arbitrary probexec distributions.

torch's `MixtureSameFamily` needs every component to be one batched distribution of a single family;
proposals built by the engine routinely mix families (say a Normal around the prior mode and a
heavy-tailed fallback), so this composes `Distribution` objects directly and has no `torch_dist`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import ArrayLike, Distribution, SupportKind, as_float64, as_shape, require
from .standard import Categorical

__all__ = ["Mixture"]

_CONTINUOUS: frozenset[str] = frozenset({"real", "positive", "interval", "unit_interval"})
_DISCRETE: frozenset[str] = frozenset({"discrete_finite", "discrete_nonnegative", "boolean"})


class Mixture(Distribution):
    """sum_k weights[k] * components[k]; weights may be unnormalised and may carry batch dimensions.

    All components must share one batch shape (and event shape), and must be all continuous or all
    discrete: a mixture of a density and a mass function has no log_prob in a common sense.
    """

    wire_type = 0
    param_names = ("weights",)
    torch_dist = None
    weights: torch.Tensor

    def __init__(
        self, components: Sequence[Distribution], weights: ArrayLike, *, validate: bool = True
    ) -> None:
        comps = tuple(components)
        if not comps:
            raise ValueError("Mixture: needs at least one component")
        for i, c in enumerate(comps):
            if not isinstance(c, Distribution):
                raise TypeError(
                    f"Mixture: component {i} is a {type(c).__name__}, not a probexec Distribution"
                )
        batch, event = comps[0].batch_shape, comps[0].event_shape
        for i, c in enumerate(comps[1:], start=1):
            if c.batch_shape != batch or c.event_shape != event:
                raise ValueError(
                    f"Mixture: component {i} ({c!r}) has batch shape {tuple(c.batch_shape)} and event shape "
                    f"{tuple(c.event_shape)}, but component 0 ({comps[0]!r}) has {tuple(batch)} and "
                    f"{tuple(event)}; all components must match"
                )
        kinds = {c.support_kind for c in comps}
        if kinds & _CONTINUOUS and kinds & _DISCRETE:
            raise ValueError(
                f"Mixture: cannot mix continuous and discrete components (support kinds {sorted(kinds)})"
            )

        w = as_float64(weights)
        if w.dim() == 0 or w.shape[-1] != len(comps):
            raise ValueError(
                f"Mixture: parameter 'weights' must have shape (..., {len(comps)}) for {len(comps)} "
                f"components, got shape {tuple(w.shape)}"
            )
        try:
            ok_shape = torch.broadcast_shapes(w.shape[:-1], batch) == batch
        except RuntimeError:
            ok_shape = False
        if not ok_shape:
            raise ValueError(
                f"Mixture: parameter 'weights' batch shape {tuple(w.shape[:-1])} does not broadcast to the "
                f"components' batch shape {tuple(batch)}"
            )
        if validate:
            require(
                (w >= 0) & (w < torch.inf),
                "Mixture",
                "parameter 'weights' must be finite and non-negative",
                weights=w,
            )
        total = w.sum(-1, keepdim=True)
        if validate:
            require(
                total[..., 0] > 0,
                "Mixture",
                "parameter 'weights' must not be all zero",
                weights_sum=total[..., 0],
            )
        normalised = w / total

        self.components = comps
        self._set_params(normalised)
        self._log_weights = normalised.log()
        self._batch_shape = batch
        self._event_shape = event
        self._kinds = kinds

    @property
    def batch_shape(self) -> torch.Size:
        return self._batch_shape

    @property
    def event_shape(self) -> torch.Size:
        return self._event_shape

    @property
    def support_kind(self) -> SupportKind:
        """The components' common kind, or the smallest kind covering their union."""
        if len(self._kinds) == 1:
            return next(iter(self._kinds))  # type: ignore[return-value]
        if self._kinds <= _DISCRETE:
            return "discrete_nonnegative" if "discrete_nonnegative" in self._kinds else "discrete_finite"
        if "real" in self._kinds:
            return "real"
        lo, hi = self.support_bounds
        if bool(torch.all(lo == 0)) and bool(torch.all(hi == torch.inf)):
            return "positive"
        return "interval"

    @property
    def support_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds of the union of the components' supports (which need not itself be an interval)."""
        bounds = [c.support_bounds for c in self.components]
        lo = torch.stack(torch.broadcast_tensors(*(b[0] for b in bounds))).amin(0)
        hi = torch.stack(torch.broadcast_tensors(*(b[1] for b in bounds))).amax(0)
        return lo, hi

    def _component_axis(self, sample_ndim: int) -> int:
        return sample_ndim + len(self._batch_shape)

    def log_prob(self, value: ArrayLike) -> torch.Tensor:
        v = as_float64(value, device=self.weights.device)
        lps = torch.stack([c.log_prob(v) for c in self.components], dim=-1)
        # logsumexp returns -inf (not NaN) when every term is -inf, i.e. outside every component's support.
        return torch.logsumexp(lps + self._log_weights, dim=-1)

    def sample(
        self, sample_shape: Sequence[int] | torch.Size | int = (), generator: torch.Generator | None = None
    ) -> torch.Tensor:
        sample_shape = as_shape(sample_shape)
        axis = self._component_axis(len(sample_shape))
        # Drawing from every component and selecting keeps this fully vectorised; K is small in practice.
        draws = torch.stack([c.sample(sample_shape, generator) for c in self.components], dim=axis)
        chooser = Categorical(self.weights.expand((*self._batch_shape, len(self.components))), validate=False)
        idx = chooser.sample(sample_shape, generator).long()
        idx = idx.reshape(idx.shape + (1,) + (1,) * len(self._event_shape))
        idx = idx.expand(idx.shape[: axis + 1] + self._event_shape)
        return draws.gather(axis, idx).squeeze(axis)

    def _component_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        shape = self._batch_shape + self._event_shape
        means = torch.stack([c.mean.expand(shape) for c in self.components], dim=-1)
        variances = torch.stack([c.variance.expand(shape) for c in self.components], dim=-1)
        return means, variances

    def _weights_for_moments(self) -> torch.Tensor:
        # Weights are (..., K) over the batch; move K after any event dimensions to line up with moments.
        w = self.weights
        return w.reshape(w.shape[:-1] + (1,) * len(self._event_shape) + w.shape[-1:])

    @property
    def mean(self) -> torch.Tensor:
        means, _ = self._component_moments()
        return (self._weights_for_moments() * means).sum(-1)

    @property
    def variance(self) -> torch.Tensor:
        # Law of total variance: E[Var | k] + Var[E | k].
        means, variances = self._component_moments()
        w = self._weights_for_moments()
        mean = (w * means).sum(-1, keepdim=True)
        return (w * (variances + (means - mean) ** 2)).sum(-1)

    def __repr__(self) -> str:
        comps = ", ".join(repr(c) for c in self.components)
        return f"{super().__repr__()[:-1]}, components=[{comps}])"
