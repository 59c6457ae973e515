"""Shared fixtures: C++ simulators started as real server processes over ZeroMQ."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

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


def weighted_moment_errors(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Standard errors of a self-normalised importance-sampling estimate of the mean and the
    standard deviation (delta method), from the weighted samples themselves.

    `std / sqrt(ESS)` assumes the proposal is as wide as the posterior; a briefly trained proposal
    network is not, and then that figure can be half the real error. These use the weights and
    values actually drawn, so a lopsided proposal widens them."""
    w = w / w.sum()
    mean = float(np.sum(w * x))
    d2 = (x - mean) ** 2
    var = float(np.sum(w * d2))
    se_mean = math.sqrt(float(np.sum(w**2 * d2)))
    se_var = math.sqrt(float(np.sum(w**2 * (d2 - var) ** 2)))
    return se_mean, se_var / (2.0 * math.sqrt(var))


def assert_moments(x: np.ndarray, mean: float, std: float, what: str) -> None:
    n = len(x)
    assert_close(float(x.mean()), mean, std / math.sqrt(n), f"{what} mean")
    # SE of the sample std for a distribution with excess kurtosis ~0 is std / sqrt(2n); for the
    # discrete and skewed cases here use the sample fourth moment.
    m4 = float(np.mean((x - x.mean()) ** 4))
    se_var = math.sqrt(max(m4 - std**4, 1e-12) / n)
    assert_close(float(x.var()), std**2, se_var, f"{what} variance")


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat after the command name: state, parent pid, ...; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def process_alive(pid: int) -> bool:
    """Alive and not a zombie (an orphan's reaper may be slow, or absent in a container)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def child_processes(parents: set[int]) -> set[int]:
    """Live processes whose parent is one of `parents` (zombies left out)."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            fields = _stat_fields(d.name)
            if fields is not None and fields[0] not in ("Z", "X") and int(fields[1]) in parents:
                out.add(int(d.name))
    return out
