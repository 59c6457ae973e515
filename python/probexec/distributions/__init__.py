"""Distributions the engine samples, scores and exchanges with the C++ simulators.

Every class wraps `torch.distributions` where torch has the distribution, adding generator-controlled
sampling, `-inf` (never an exception) outside the support, named parameter validation, and wire
encoding (`wire_type`, `param_names`, `params()`; decoding is `from_wire`). All values are float64
tensors; discrete values (indices, counts, 0/1 outcomes) are float64 tensors holding integers.
"""

from .base import SUPPORT_KINDS, ArrayLike, Distribution, SupportKind
from .mixture import Mixture
from .registry import WIRE_TYPES, from_wire, wire_type_name
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
from .truncated import TruncatedNormal

__all__ = [
    "SUPPORT_KINDS",
    "WIRE_TYPES",
    "ArrayLike",
    "Bernoulli",
    "Beta",
    "Binomial",
    "Categorical",
    "Distribution",
    "Exponential",
    "Gamma",
    "LogNormal",
    "Mixture",
    "Normal",
    "Poisson",
    "SupportKind",
    "TruncatedNormal",
    "Uniform",
    "Weibull",
    "from_wire",
    "wire_type_name",
]
