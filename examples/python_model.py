"""A model written in Python runs through the same engine as a C++ simulator.

python examples/python_model.py
"""

from __future__ import annotations

import math

import numpy as np
import torch

import probexec
from probexec.distributions import Normal, Uniform


def line_fit():
    """Straight line through noisy points: slope and intercept unknown."""
    slope = probexec.sample(Normal(0.0, 10.0), name="slope")
    intercept = probexec.sample(Uniform(-5.0, 5.0), name="intercept")
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    probexec.observe(Normal(slope * x + intercept, 0.5), name="y")
    return slope


def main() -> None:
    model = probexec.PythonModel(line_fit)
    y = [1.1, 2.9, 5.2, 7.1, 8.8]
    batch = model.prior(20_000, seed=0, observe={"y": y})
    # Self-normalised importance weights with the prior as proposal.
    logw = batch.log_likelihood()
    w = np.exp(logw - logw.max())
    w /= w.sum()
    for name in ("slope", "intercept"):
        v = batch.values_of(name)
        mean = float(np.sum(w * v))
        print(f"{name}: posterior mean {mean:.3f} +- {math.sqrt(float(np.sum(w * (v - mean) ** 2))):.3f}")
    print(f"effective sample size {1 / np.sum(w**2):.0f} of {batch.num_traces}")


if __name__ == "__main__":
    main()
