"""Decoding distributions from the wire, where a draw request names its type by number.

The numbering is the 1-based position in the wire protocol's distribution union and must never be
reordered: the C++ side encodes the same numbers. Each class's own `wire_type` is the source of truth;
the table here is built from it and checked, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import ArrayLike, Distribution
from .standard import (
    Bernoulli,
    Beta,
    Binomial,
    Categorical,
    Exponential,
    Gamma,
    LogNormal,
    Normal,
    Poisson,
    Uniform,
    Weibull,
)

__all__ = ["WIRE_TYPES", "from_wire", "wire_type_name"]

_WIRE_CLASSES: tuple[type[Distribution], ...] = (
    Normal,
    Uniform,
    Categorical,
    Poisson,
    Bernoulli,
    Beta,
    Exponential,
    Gamma,
    LogNormal,
    Binomial,
    Weibull,
)

#: Wire type number (1-based position in the wire union) -> distribution class.
WIRE_TYPES: dict[int, type[Distribution]] = {cls.wire_type: cls for cls in _WIRE_CLASSES}

if sorted(WIRE_TYPES) != list(range(1, len(_WIRE_CLASSES) + 1)):  # pragma: no cover - import-time guard
    raise RuntimeError(f"distribution wire types are not 1..{len(_WIRE_CLASSES)}: {sorted(WIRE_TYPES)}")


def from_wire(wire_type: int, params: Sequence[ArrayLike], validate: bool = True) -> Distribution:
    """Build the distribution a wire message describes; `params` are in the wire's field order.

    Validation stays on by default because wire parameters come from user simulator code, where a
    negative stddev is a bug the user should hear about by name rather than as NaN weights later.
    """
    cls = WIRE_TYPES.get(int(wire_type))
    if cls is None:
        raise ValueError(
            f"unknown distribution wire type {wire_type!r}; known types are "
            + ", ".join(f"{t}={c.__name__}" for t, c in WIRE_TYPES.items())
        )
    if len(params) != len(cls.param_names):
        raise ValueError(
            f"{cls.__name__} (wire type {wire_type}) takes {len(cls.param_names)} parameters "
            f"{cls.param_names}, got {len(params)}"
        )
    return cls(*params, validate=validate)  # type: ignore[call-arg]


def wire_type_name(t: int) -> str:
    """Class name for a wire type number; an unknown number gives a descriptive string, not an error,
    because this is meant for log and error messages about messages that may themselves be malformed."""
    cls = WIRE_TYPES.get(int(t))
    return cls.__name__ if cls is not None else f"<unknown wire type {t}>"
