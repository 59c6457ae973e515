"""The defensive mixture of IC (Hesterberg's defensive importance sampling): its option and weights.

A share ε of the traces is drawn wholly from the prior and every trace is weighted against
(1 - ε) q(x) + ε p(x). Then p(x) p(y | x) / ((1 - ε) q(x) + ε p(x)) is at most p(y | x) / ε: no
trace weighs more than 1/ε times its likelihood, and an event the network reads badly costs at
most about 1/ε times the variance of importance sampling from the prior. Without the mixture,
one trace the proposal thought unlikely can take all the weight. The arithmetic lives here, the
driver that draws the prior's traces and scores them in `ic.py`; the CLI checks the option with
`check_defensive` before any simulator starts.

The same arithmetic weighs traces from a mixture of two networks and the prior
(`mixture_log_ratio`, `ICDriver(mix=...)`).
"""

from __future__ import annotations

import math

import numpy as np


def check_defensive(defensive: float, name: str = "defensive") -> None:
    if not 0.0 <= defensive <= 1.0:
        raise ValueError(f"{name} is the share of traces drawn from the prior, in [0, 1]; got {defensive}")


def check_mixture(share: float, defensive: float = 0.0, name: str = "mix") -> None:
    """A second network's share of the traces: with the prior's, at most all of them."""
    if not (math.isfinite(share) and 0.0 <= share <= 1.0 - defensive):
        raise ValueError(
            f"{name} is the share of traces drawn from the second network, in [0, {1.0 - defensive:g}] "
            f"beside a defensive share of {defensive:g}; got {share}"
        )


def defensive_log_ratio(q_minus_p: np.ndarray, defensive: float) -> np.ndarray:
    """log(Q(x) / p(x)) for the mixture Q = (1 - ε) q + ε p, from each trace's log(q(x) / p(x))."""
    return mixture_log_ratio([q_minus_p], [1.0 - defensive], defensive)


def mixture_log_ratio(q_minus_p: list[np.ndarray], shares: list[float], defensive: float) -> np.ndarray:
    """log(Q(x) / p(x)) for Q = Σ_k a_k q_k + ε p, from each trace's log(q_k(x) / p(x)) per
    proposal k and the shares a_k (the prior's is ε). A proposal with no share leaves no term:
    its log q may be -inf or NaN where it was never asked."""
    terms = [math.log(a) + lr for a, lr in zip(shares, q_minus_p, strict=True) if a > 0]
    if defensive > 0:
        terms.append(np.full_like(q_minus_p[0], math.log(defensive)))
    if len(terms) == 1:
        return terms[0]
    return np.logaddexp.reduce(np.stack(terms), axis=0)
