"""Shared fixtures: C++ simulators started as real server processes over ZeroMQ."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import probexec

PREFIX = Path(sys.prefix)
EXAMPLE_SIMULATOR = Path(__file__).resolve().parent.parent / "examples" / "my_simulator" / "main.cpp"


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


# --- simulators built outside this repository, as their authors build them ----------------------
def build_tool(name: str) -> str | None:
    """`name` from this environment's bin/ (pip's cmake, ninja) if there, else from PATH."""
    local = PREFIX / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def run_checked(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited with {proc.returncode}\n"
        f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


def build_with_pkg_config(src: Path, output: str = "sim") -> Path:
    """`src/main.cpp` compiled and linked against the installed front end with plain g++ and
    `pkg-config --cflags --libs probexec`, into `src/output`."""
    pkg_config = build_tool("pkg-config")
    if pkg_config is None:
        pytest.skip("pkg-config is not installed")
    env = dict(os.environ)
    pc_path = [str(PREFIX / "lib" / "pkgconfig")]
    if env.get("PKG_CONFIG_PATH"):
        pc_path.append(env["PKG_CONFIG_PATH"])
    env["PKG_CONFIG_PATH"] = os.pathsep.join(pc_path)
    flags = run_checked([pkg_config, "--cflags", "--libs", "probexec"], src, env=env).split()
    exe = src / output
    run_checked(["g++", "-O1", "-g", "main.cpp", "-o", str(exe), *flags], src, env=env, timeout=120)
    return exe


@pytest.fixture(scope="session")
def my_simulator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's example simulator (`examples/my_simulator`), built once per test session."""
    src = tmp_path_factory.mktemp("my_simulator")
    shutil.copy(EXAMPLE_SIMULATOR, src / "main.cpp")
    return build_with_pkg_config(src, "my_simulator")
