"""`probexec prior` and `probexec posterior` as a user runs them, including what goes wrong."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import probexec
from probexec.inference import PoolExhaustedError, importance_sampling, remote_pool
from probexec.trace import TraceBatch

CLI = [sys.executable, "-m", "probexec"]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_posterior_is_json(tmp_path):
    r = cli(
        "posterior",
        "gum",
        "--engine",
        "is",
        "-n",
        "40000",
        "--seed",
        "1",
        "-o",
        str(tmp_path),
        "--json",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"engine", "num_traces", "ess", "seconds", "latents"}
    assert out["engine"] == "is" and out["num_traces"] == 40000
    mu = out["latents"]["mu"]
    assert abs(mu["mean"] - 7.25) < 4 * math.sqrt(1 / 1.2) / math.sqrt(out["ess"])
    assert (tmp_path / "posterior.npz").exists() and (tmp_path / "summary.json").exists()
    with np.load(tmp_path / "posterior.npz", allow_pickle=False) as f:
        assert f["latent/mu"].shape == (40000,) and f["log_weights"].shape == (40000,)


def test_posterior_rmh_json_and_resume(tmp_path):
    args = [
        "posterior",
        "branching",
        "--engine",
        "rmh",
        "-n",
        "2000",
        "--chains",
        "4",
        "--burn-in",
        "200",
        "--seed",
        "2",
        "--json",
        "--quiet",
    ]
    r = cli(*args, "-o", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["engine"] == "rmh" and out["num_traces"] == 2000 and list(out["latents"]) == ["r"]
    assert 0 < out["acceptance_rate"] < 1 and out["r_hat"]["r"] < 1.1
    assert (tmp_path / "a" / "rmh_state.npz").exists()
    r = cli(*args, "-o", str(tmp_path / "b"), "--resume", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr


def test_posterior_smc_json(tmp_path):
    r = cli(
        "posterior", "gum", "--engine", "smc", "-n", "300", "--moves", "3", "--ess-fraction", "0.6",
        "--seed", "5", "-o", str(tmp_path), "--json", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["engine"] == "smc" and out["num_traces"] == 300
    assert out["moves"] == 3 and out["ess_fraction"] == 0.6 and out["betas"][-1] == 1.0
    # Each stage keeps 60 % of the particles' ESS, the last one at least that.
    assert out["ess"] >= 0.6 * 300 - 1e-6
    assert abs(out["log_evidence"] - (-8.2394)) < 1.0
    mu = out["latents"]["mu"]
    assert abs(mu["mean"] - 7.25) < 4 * math.sqrt(1 / 1.2) / math.sqrt(out["ess"] / 2)
    with np.load(tmp_path / "posterior.npz", allow_pickle=False) as f:
        assert f["latent/mu"].shape == (300,) and f["log_weights"].shape == (300,)
    r = cli(
        "posterior", "branching", "--engine", "smc", "-n", "50", "--stratify", "r=5,6,7", "--observe", "obs=6",
        "-o", str(tmp_path / "strat"), "--json", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["num_traces"] == 150 and out["stratum"] == "r" and set(out["strata"]) == {"5", "6", "7"}
    # r > 4: obs ~ Poisson(6) whatever r is, so P(r | obs) restricted to 5..7 is the prior's Poisson(4).
    prior = np.array([4.0**k / math.factorial(k) for k in (5, 6, 7)])
    got = [out["strata"][k]["probability"] for k in ("5", "6", "7")]
    np.testing.assert_allclose(got, prior / prior.sum(), rtol=1e-9)
    # With a pilot of 10 particles a value: each value's two runs are exact, so their pooled
    # evidence is too, and the particles add up to -n a value.
    r = cli(
        "posterior", "branching", "--engine", "smc", "-n", "50", "--stratify", "r=5,6,7", "--observe", "obs=6",
        "--stratify-pilot", "10", "--stratify-keep", "3", "-o", str(tmp_path / "pilot"), "--json", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["pilot"] == 10 and out["num_traces"] == 150
    got = [out["strata"][k]["probability"] for k in ("5", "6", "7")]
    np.testing.assert_allclose(got, prior / prior.sum(), rtol=1e-9)
    assert all(out["strata"][k]["traces"] > 10 for k in ("5", "6", "7"))  # all within 3 nats


def test_observations_from_flags_and_files(tmp_path):
    (tmp_path / "obs.json").write_text(json.dumps({"obs": [8.0, 9.0]}))
    np.savez(tmp_path / "obs.npz", obs=np.array([8.0, 9.0]))
    means = []
    base = ("posterior", "gum", "-n", "5000", "--seed", "3", "-o", str(tmp_path / "o"), "--json", "--quiet")
    for extra in (
        ["--observe", "obs=8,9"],
        ["--observe", "obs=[8, 9]"],
        ["--observe-file", str(tmp_path / "obs.json")],
        ["--observe-file", str(tmp_path / "obs.npz")],
    ):
        r = cli(*base, *extra)
        assert r.returncode == 0, r.stderr
        means.append(json.loads(r.stdout)["latents"]["mu"]["mean"])
    assert max(means) - min(means) < 1e-12  # same seed, same data: same answer
    r = cli(*base, "--observe", "obs=0,0")
    assert json.loads(r.stdout)["latents"]["mu"]["mean"] < 2


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["posterior", "nope", "-n", "10"], 2, "unknown simulator 'nope'"),
        (
            ["posterior", "gum", "-n", "10", "--observe", "y=1"],
            1,
            "has no observation or latent named 'y'; names: mu, obs",
        ),
        (
            ["posterior", "gum", "-n", "10", "--observe", "obs=1,2,3"],
            1,
            "has 3 value(s); the model observes shape [2]",
        ),
        (["posterior", "gum", "-n", "10", "--observe", "obs=nan,1"], 1, "contains NaN"),
        (["posterior", "gum", "-n", "10", "--observe", "obs"], 1, "wants NAME=VALUE"),
        (["posterior", "gum", "-n", "0"], 1, "-n must be at least 1"),
        (["prior", "gum", "-n", "0"], 1, "-n must be at least 1"),
        (["posterior", "gum", "-n", "10", "--observe-file", "/nonexistent.json"], 1, "does not exist"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, args, code, message):
    t0 = time.monotonic()
    r = cli(*args, "-o", str(tmp_path / "out"))
    assert r.returncode == code, r.stdout + r.stderr
    assert message in r.stderr
    assert not (tmp_path / "out" / "posterior.npz").exists()
    assert time.monotonic() - t0 < 30  # refused before any long run


def test_prior_dataset_round_trip(tmp_path):
    r = cli(
        "prior",
        "branching",
        "-n",
        "3000",
        "-o",
        str(tmp_path / "traces.npz"),
        "--workers",
        "2",
        "--seed",
        "4",
        "--json",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    batch = TraceBatch.load(info["file"])
    assert batch.num_traces == 3000
    r_values = batch.values_of("r")
    assert abs(r_values.mean() - 4) < 4 * 2 / math.sqrt(3000)
    assert batch.trace(0).variables[0].name == "r"
    # A damaged file is refused with its name in the message.
    broken = tmp_path / "broken.npz"
    broken.write_bytes(Path(info["file"]).read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"broken\.npz: not a readable probexec trace file"):
        TraceBatch.load(broken)


def test_worker_dying_mid_run_is_replaced_by_the_others():
    with remote_pool("slow", workers=2) as pool:
        victim = pool.models[0].pid

        def kill_soon():
            time.sleep(0.5)
            os.kill(victim, signal.SIGKILL)

        threading.Thread(target=kill_soon).start()
        post = importance_sampling(pool, 6000, {"obs": [8.0, 9.0]}, seed=0, progress=False)
        assert post.num_traces == 6000  # the dead worker's chunk was redone by the other
        assert len(pool.failures) == 1 and "killed by SIGKILL" in pool.failures[0]


def test_every_worker_dead_keeps_finished_chunks():
    with remote_pool("gum", workers=2) as pool:
        for m in pool.models:
            os.kill(m.pid, signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(PoolExhaustedError, match="every worker of the 'gum' pool died") as info:
            importance_sampling(pool, 5000, {"obs": [8.0, 9.0]}, progress=False)
        assert info.value.partial == {}


def test_python_driver_api_matches_the_cli():
    with probexec.RemoteModel("gum") as model:
        post = model.posterior(20000, engine="is", observe={"obs": [8.0, 9.0]}, seed=1)
        assert post.summary()["engine"] == "is"
        with pytest.raises(ValueError, match="unknown engine 'hmc'"):
            model.posterior(10, engine="hmc")


@pytest.mark.parametrize("sim", ["calorimeter", "tau_decay"])
def test_physics_simulators_end_to_end_through_the_cli(tmp_path, sim):
    """simulate an event, then prior sampling and importance sampling on it, all from the command line."""
    r = cli(
        "simulate",
        sim,
        "-n",
        "2",
        "--seed",
        "3",
        "-o",
        str(tmp_path / "events.npz"),
        "--quiet",
        "--workers",
        "1",
    )
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "events.npz", allow_pickle=False) as f:
        image = f["calorimeter"][0]
        assert image.shape == (20 * 35 * 35,) and np.isfinite(image).all()
        assert (f["calorimeter__mean"] >= 0).all()
    np.savez(tmp_path / "obs.npz", calorimeter=image.reshape(20, 35, 35))
    r = cli("prior", sim, "-n", "20", "-o", str(tmp_path / "prior"), "--workers", "1", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["num_traces"] == 20
    r = cli(
        "posterior",
        sim,
        "--engine",
        "is",
        "-n",
        "20",
        "--observe-file",
        str(tmp_path / "obs.npz"),
        "-o",
        str(tmp_path / "post"),
        "--json",
        "--quiet",
        "--workers",
        "1",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["num_traces"] == 20 and out["ess"] >= 1.0
    assert set(out["latents"]) == set(probexec.get_simulator(sim).latents)
