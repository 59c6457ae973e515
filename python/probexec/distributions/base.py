"""The abstract `Distribution` every probexec distribution derives from.

The engine needs more from a distribution than `torch.distributions` offers directly: draws must be
reproducible from an explicit `torch.Generator` (the engine replays and controls the simulator's
randomness), densities must never raise on values outside the support (proposals are scored under
priors, and an impossible value is simply `-inf`), and every distribution must be able to say how it
travels on the wire (`wire_type`, `param_names`, `params()`). Densities themselves are delegated to the
wrapped torch distribution in `torch_dist` wherever torch has one.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch

__all__ = [
    "SUPPORT_KINDS",
    "ArrayLike",
    "Distribution",
    "SupportKind",
    "as_float64",
    "as_shape",
    "require",
]

#: Anything a parameter or a value may be given as; it is converted to a float64 tensor.
ArrayLike = float | int | bool | Sequence[Any] | np.ndarray | torch.Tensor

SupportKind = Literal[
    "real",
    "positive",
    "interval",
    "unit_interval",
    "discrete_finite",
    "discrete_nonnegative",
    "boolean",
]

#: Every value `Distribution.support_kind` may take; proposal construction dispatches on these.
SUPPORT_KINDS: tuple[SupportKind, ...] = (
    "real",
    "positive",
    "interval",
    "unit_interval",
    "discrete_finite",
    "discrete_nonnegative",
    "boolean",
)

_INF = math.inf


def as_float64(x: ArrayLike, device: torch.device | None = None) -> torch.Tensor:
    """Convert a parameter or value to a float64 tensor.

    Everything is float64 so that values coming back from the C++ side (doubles) round-trip exactly and
    so that discrete values (indices, counts) can share one tensor type with continuous ones.
    """
    return torch.as_tensor(x, dtype=torch.float64, device=device)


def as_shape(sample_shape: Sequence[int] | torch.Size | int) -> torch.Size:
    """Accept a bare int for a single sample dimension, as callers often write `sample(1000)`."""
    if isinstance(sample_shape, int):
        return torch.Size((sample_shape,))
    return torch.Size(sample_shape)


def _format_tensor(t: torch.Tensor) -> str:
    if t.dim() == 0:
        return repr(t.item())
    if t.numel() <= 8:
        return repr(t.detach().cpu().tolist())
    return f"tensor(shape={tuple(t.shape)})"


def require(ok: torch.Tensor, dist: str, message: str, **shown: torch.Tensor) -> None:
    """Raise `ValueError` unless every element of `ok` is true.

    The message names the distribution, the rule that failed and the offending value(s) at the first
    failing batch position, because a simulator usually builds parameters from computed quantities and
    the user needs to know which element went wrong. The check costs one `all()`; the search for the
    bad element happens only on the error path.
    """
    if bool(ok.all()):
        return
    bad = (~ok).nonzero()
    index = tuple(int(i) for i in bad[0]) if bad.numel() else ()
    parts = []
    for name, t in shown.items():
        try:
            value = torch.broadcast_to(t, ok.shape)[index]
        except RuntimeError:
            parts.append(f"{name}={_format_tensor(t)}")
        else:
            parts.append(f"{name}={value.item()!r}")
    where = f" at batch index {index}" if index else ""
    raise ValueError(f"{dist}: {message}, got {', '.join(parts)}{where}")


def broadcast_batch_shape(dist: str, **params: torch.Tensor) -> torch.Size:
    """Broadcast parameter shapes, turning torch's RuntimeError into a ValueError naming the parameters."""
    try:
        return torch.broadcast_shapes(*(p.shape for p in params.values()))
    except RuntimeError:
        shapes = ", ".join(f"{name} shape {tuple(p.shape)}" for name, p in params.items())
        raise ValueError(f"{dist}: parameter shapes do not broadcast ({shapes})") from None


class Distribution(abc.ABC):
    """A probability distribution the engine can sample, score and send over the wire.

    Subclasses hold their parameters as float64 tensors under the names in `param_names`, in wire
    order, so that `params()` and `__repr__` work generically.
    """

    #: 1-based position in the wire union; 0 for distributions that never travel on the wire.
    wire_type: ClassVar[int] = 0
    #: Parameter attribute names, in wire field order.
    param_names: ClassVar[tuple[str, ...]] = ()

    #: The wrapped torch distribution, or None for compositions torch cannot express.
    torch_dist: torch.distributions.Distribution | None = None

    @abc.abstractmethod
    def sample(
        self,
        sample_shape: Sequence[int] | torch.Size | int = (),
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw float64 values of shape `sample_shape + batch_shape + event_shape`.

        `generator=None` draws from torch's global generator; pass one for reproducible replay.
        """

    @abc.abstractmethod
    def log_prob(self, value: ArrayLike) -> torch.Tensor:
        """Float64 log density (or mass); `-inf` outside the support instead of raising."""

    @property
    @abc.abstractmethod
    def mean(self) -> torch.Tensor: ...

    @property
    @abc.abstractmethod
    def variance(self) -> torch.Tensor: ...

    @property
    def stddev(self) -> torch.Tensor:
        return self.variance.sqrt()

    @property
    @abc.abstractmethod
    def support_kind(self) -> SupportKind:
        """Coarse support class; the engine uses it to choose a matching proposal family."""

    @property
    def support_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inclusive-or-open lower and upper bounds of the support (float64, broadcastable to batch shape).

        `support_kind` says which family of proposal fits; the bounds say where to put it. Subclasses with
        parameter-dependent supports ("interval", "discrete_finite") override this.
        """
        lo, hi = {
            "real": (-_INF, _INF),
            "positive": (0.0, _INF),
            "unit_interval": (0.0, 1.0),
            "discrete_nonnegative": (0.0, _INF),
            "boolean": (0.0, 1.0),
        }.get(self.support_kind, (-_INF, _INF))
        return as_float64(lo), as_float64(hi)

    @property
    def batch_shape(self) -> torch.Size:
        if self.torch_dist is None:
            raise NotImplementedError(f"{type(self).__name__} must define batch_shape")
        return self.torch_dist.batch_shape

    @property
    def event_shape(self) -> torch.Size:
        if self.torch_dist is None:
            return torch.Size()
        return self.torch_dist.event_shape

    #: Parameters as given (converted to float64, not broadcast), in wire order; set by `_set_params`.
    _params: tuple[torch.Tensor, ...] = ()

    def _set_params(self, *values: torch.Tensor) -> None:
        """Record the parameters in wire order and expose each as an attribute of the same name.

        They are kept apart from the attributes because some wire names ("mean", "stddev") collide with
        the moment properties, which for e.g. TruncatedNormal mean something different.
        """
        if len(values) != len(self.param_names):
            raise TypeError(f"{type(self).__name__}: expected {len(self.param_names)} parameters")
        self._params = tuple(values)
        cls = type(self)
        for name, value in zip(self.param_names, values, strict=True):
            if not isinstance(getattr(cls, name, None), property):
                setattr(self, name, value)

    def params(self) -> tuple[torch.Tensor, ...]:
        """Parameters in wire order, so the engine can encode this distribution back onto the wire."""
        return self._params

    def prob(self, value: ArrayLike) -> torch.Tensor:
        return self.log_prob(value).exp()

    def _extended_shape(self, sample_shape: Sequence[int] | torch.Size | int) -> torch.Size:
        return as_shape(sample_shape) + self.batch_shape + self.event_shape

    def __repr__(self) -> str:
        args = ", ".join(
            f"{name}={_format_tensor(value)}"
            for name, value in zip(self.param_names, self._params, strict=True)
        )
        return f"{type(self).__name__}({args})"
