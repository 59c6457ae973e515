"""The examples a physicist starts from keep working."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import probexec

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: float = 120) -> str:
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_prior_sampling_example():
    out = run("examples/prior_sampling.py", "branching")
    assert "per_draw" in out and "stream" in out and "2 trace type(s)" in out


def test_importance_sampling_example(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "importance_sampling.py"), "gum", "20000"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    mean = float(r.stdout.split("mu: mean ")[1].split(",")[0])
    assert abs(mean - 7.25) < 0.3 and (tmp_path / "is_posterior" / "posterior.npz").exists()


def test_rmh_example():
    out = run("examples/rmh.py", "branching", "2000")
    assert "R-hat" in out and "P(r=5)" in out


def test_python_model_example():
    out = run("examples/python_model.py")
    slope = float(out.split("slope: posterior mean ")[1].split()[0])
    assert 1.5 < slope < 2.4  # least squares through the data gives 1.95


@pytest.mark.skipif(
    shutil.which("cmake") is None and not (Path(sys.prefix) / "bin" / "cmake").exists(), reason="no cmake"
)
def test_out_of_tree_simulator_example(tmp_path):
    cmake = (
        str(Path(sys.prefix) / "bin" / "cmake") if (Path(sys.prefix) / "bin" / "cmake").exists() else "cmake"
    )
    build = tmp_path / "build"
    subprocess.run(
        [cmake, "-S", ROOT / "examples" / "my_simulator", "-B", build, f"-DCMAKE_PREFIX_PATH={sys.prefix}"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run([cmake, "--build", build], check=True, capture_output=True, timeout=300)
    exe = build / "my_simulator"
    with probexec.RemoteModel(executable=exe) as model:
        batch = model.prior(2000, seed=0, mode="stream")
        energy = batch.values_of("energy")
        assert abs(energy.mean() - 20.0) < 4 * 10.0 / len(energy) ** 0.5  # Gamma(4, 0.2): mean 20, std 10
        readings = batch.values_of("reading")
        assert (abs(readings - batch.values_of("deposit")) < 10).all()
        source = batch.addresses[batch.addresses.ids_named("energy")[0]].source
        assert "main.cpp:" in source
    assert os.path.exists(exe)


def test_render_tau_events_example(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "events.png"
    run("examples/render_tau_events.py", "2", str(out), timeout=180)
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
