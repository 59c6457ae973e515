"""The defensive mixture of IC (Hesterberg's defensive importance sampling): its option and weights.

A share ε of the traces is drawn wholly from the prior and every trace is weighted against
(1 - ε) q(x) + ε p(x). Then p(x) p(y | x) / ((1 - ε) q(x) + ε p(x)) is at most p(y | x) / ε: no
trace weighs more than 1/ε times its likelihood, and an event the network reads badly costs at
most about 1/ε times the variance of importance sampling from the prior. Without the mixture,
one trace the proposal thought unlikely can take all the weight. The arithmetic lives here, the
driver that draws the prior's traces and scores them in `ic.py`; the CLI checks the option with
`check_defensive` before any simulator starts.
"""

from __future__ import annotations

import math

import numpy as np


def check_defensive(defensive: float, name: str = "defensive") -> None:
    if not 0.0 <= defensive <= 1.0:
        raise ValueError(f"{name} is the share of traces drawn from the prior, in [0, 1]; got {defensive}")


def defensive_log_ratio(q_minus_p: np.ndarray, defensive: float) -> np.ndarray:
    """log(Q(x) / p(x)) for the mixture Q = (1 - ε) q + ε p, from each trace's log(q(x) / p(x))."""
    if defensive == 0.0:
        return q_minus_p
    if defensive == 1.0:
        return np.zeros_like(q_minus_p)
    return np.logaddexp(math.log1p(-defensive) + q_minus_p, math.log(defensive))
