"""Shared fixtures: C++ simulators started as real server processes over ZeroMQ."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

import probexec


@pytest.fixture
def remote():
    """Factory for RemoteModels that are closed at the end of the test, whatever happens."""
    models: list[probexec.RemoteModel] = []

    def make(name: str, **kwargs) -> probexec.RemoteModel:
        m = probexec.RemoteModel(name, **kwargs)
        models.append(m)
        return m

    yield make
    for m in models:
        m.close()


@pytest.fixture(params=["ipc", "tcp"])
def transport(request) -> Iterator[str]:
    yield request.param


def assert_close(estimate: float, exact: float, standard_error: float, what: str, k: float = 4.0) -> None:
    """|estimate - exact| < k standard errors (the SE is derived by the caller from the sample size)."""
    assert abs(estimate - exact) < k * standard_error, (
        f"{what}: {estimate:.5f} vs exact {exact:.5f}, |diff| = {abs(estimate - exact):.5f} > {k} SE = {k * standard_error:.5f}"
    )


def assert_moments(x: np.ndarray, mean: float, std: float, what: str) -> None:
    n = len(x)
    assert_close(float(x.mean()), mean, std / math.sqrt(n), f"{what} mean")
    # SE of the sample std for a distribution with excess kurtosis ~0 is std / sqrt(2n); for the
    # discrete and skewed cases here use the sample fourth moment.
    m4 = float(np.mean((x - x.mean()) ** 4))
    se_var = math.sqrt(max(m4 - std**4, 1e-12) / n)
    assert_close(float(x.var()), std**2, se_var, f"{what} variance")
