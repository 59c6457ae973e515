"""Stratified runs with a pilot: how the traces are shared out, how two runs of one value are
pooled, and the combined posterior against enumeration."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from probexec.inference import remote_pool, run_engine
from probexec.inference.prior import sample_prior
from probexec.inference.result import Posterior
from probexec.inference.strata import allocate, pilot_shares, pooled, stratified
from test_posterior import branching_exact


def test_allocate_shares_out_every_trace_in_proportion():
    shares = allocate(1000, [0.5, 0.3, 0.2, 0.0])
    assert shares == [500, 300, 200, 0]
    # Unnormalised and uneven: the sum is kept, and no share is more than one off its exact part.
    p = np.array([3.0, 1.0, 1.0, 1e-12, 2.0])
    shares = allocate(101, p)
    assert sum(shares) == 101 and shares[3] == 0
    assert np.all(np.abs(np.array(shares) - 101 * p / p.sum()) < 1)
    assert allocate(0, [1.0, 2.0]) == [0, 0]
    for bad in ([], [0.0, 0.0], [1.0, math.nan], [1.0, -0.5]):
        with pytest.raises(ValueError, match="cannot share"):
            allocate(10, bad)


def test_pilot_shares_are_half_by_probability_half_even_over_the_values_in_the_running():
    log_z = np.array([0.0, math.log(0.25), -9.0, -40.0, -math.inf])
    p = np.exp(log_z) / np.exp(log_z).sum()
    # Within 10 nats: the first three; -40 gets its (tiny) proportional half only, -inf nothing.
    want = 0.5 * p + 0.5 * np.array([1, 1, 1, 0, 0]) / 3
    assert np.allclose(pilot_shares(log_z, 10.0), want, rtol=1e-12, atol=0)
    assert pilot_shares(log_z, 10.0).sum() == pytest.approx(1.0)
    # One lucky pilot trace (0.99 on one value): the other value in the running keeps a quarter.
    assert pilot_shares(np.array([0.0, math.log(0.01 / 0.99)]), 10.0)[1] == pytest.approx(0.255)
    with pytest.raises(ValueError, match="no value has a finite pilot evidence"):
        pilot_shares(np.array([-math.inf]), 10.0)


def test_pooled_runs_estimate_the_evidence_over_all_their_traces():
    """Two importance-sampling runs of one proposal: the pooled evidence is the mean weight over
    both, a dropped trace counting as weight 0, whatever the runs' sizes."""

    with remote_pool("gum", workers=1) as pool:
        traces = sample_prior(pool, 3, seed=1, progress=False)

    def run(rows: list[int], log_w: list[float], dropped: int) -> Posterior:
        return Posterior("is", traces.select(np.array(rows)), np.array(log_w), ["mu"], 1.0, dropped=dropped)

    a, b = run([0, 1], [0.0, math.log(3.0)], 1), run([2], [math.log(5.0)], 0)
    both = pooled(a, b)
    assert both.log_evidence == pytest.approx(math.log((1 + 3 + 5) / 4))
    assert both.dropped == 1 and both.seconds == 2.0 and both.num_traces == 3
    assert np.array_equal(both["mu"].values, traces.values_of("mu"))


def _branching_with_pilot(
    engine: str, n: int, pilot: int, values: list[int], seed: int
) -> tuple[Posterior, list[dict], list[int]]:
    """Branching with obs = 6, stratified over r with a pilot: the posterior, each value's
    `strata` entry, and the traces each value should have got after its pilot."""
    with remote_pool("branching", workers=2) as pool:
        post = run_engine(
            pool,
            engine,
            n,
            {"obs": [6.0]},
            stratify=("r", values),
            stratify_pilot=pilot,
            seed=seed,
            progress=False,
        )
    strata = [post.stats["strata"][f"{r:g}"] for r in values]
    assert post.stats["pilot"] == pilot
    shares = pilot_shares(np.array([s["pilot_log_evidence"] for s in strata]), 10.0)
    return post, strata, allocate((n - pilot) * len(values), shares)


def test_a_pilot_shares_the_traces_out_by_probability_and_matches_enumeration():
    """Branching, r stratified over 0..12 with obs = 6 (IS from the prior): 30 traces a value
    first, then the rest of 13 x 300 by `pilot_shares`. No trace is lost or added; values the
    pilot finds out of reach (r = 3, 4: obs = 6 is far below their Poisson rate of 35 or more)
    get no more; each value's evidence and P(r) are the exact ones within 4 standard errors."""
    n, pilot, values = 300, 30, list(range(13))
    post, strata, more = _branching_with_pilot("is", n, pilot, values, seed=3)
    assert post.num_traces + post.dropped == n * len(values)
    for r, s in enumerate(strata):
        assert s["traces"] == pilot + more[r], (r, s)
    assert strata[3]["traces"] == strata[4]["traces"] == pilot  # 20 and 120 nats out
    assert max(range(13), key=lambda r: strata[r]["traces"]) == 5  # a third of the posterior

    joint = branching_exact(joint=True)[:13]
    exact = joint / joint.sum()
    e = np.array([math.sqrt(max(s["traces"] / max(s["ess"], 1.0) - 1.0, 0.0) / s["traces"]) for s in strata])
    probs = post["r"].probabilities()
    assert sum(s["probability"] for s in strata) == pytest.approx(1.0)
    for r, s in enumerate(strata):
        assert probs.get(r, 0.0) == pytest.approx(s["probability"], abs=1e-12)
        if joint[r] < 1e-12:
            continue
        assert abs(math.exp(s["log_evidence"]) / joint[r] - 1) <= 4 * e[r] + 1e-9, (r, s, joint[r])
        tol = 4 * exact[r] * (e[r] + float(np.sum(exact * e))) + 1e-9
        assert abs(probs.get(r, 0.0) - exact[r]) <= tol, (r, probs.get(r), exact[r])


def test_pooled_smc_runs_weigh_each_run_by_its_particles_and_evidence():
    """Two SMC runs of one value (their evidence in `stats`, their weights normalised among
    themselves): the pooled evidence is (N1 Z1 + N2 Z2) / (N1 + N2), and each run holds the
    share N_r Z_r of the mass, whatever its particles' own weights are scaled to."""
    with remote_pool("gum", workers=1) as pool:
        traces = sample_prior(pool, 5, seed=1, progress=False)

    def run(rows: list[int], log_w: list[float], log_z: float) -> Posterior:
        stats = {"log_evidence": log_z, "stages": 2, "simulator_runs": 10 * len(rows)}
        return Posterior("smc", traces.select(np.array(rows)), np.array(log_w), ["mu"], 1.0, stats=stats)

    a = run([0, 1], [0.0, math.log(3.0)], math.log(2.0))  # the pilot: 2 particles, Z = 2
    b = run([2, 3, 4], [-7.0, -7.0, -7.0], math.log(10.0))  # 3 particles, Z = 10
    both = pooled(a, b)
    assert both.log_evidence == pytest.approx(math.log((2 * 2 + 3 * 10) / 5))
    w = np.exp(both.log_weights - np.logaddexp.reduce(both.log_weights))
    assert np.allclose(w, np.array([1 / 4 * 4, 3 / 4 * 4, 10, 10, 10]) / 34, rtol=1e-12, atol=0)
    assert both.stats["simulator_runs"] == 50 and [r["traces"] for r in both.stats["runs"]] == [2, 3]
    assert both.num_traces == 5 and np.array_equal(both["mu"].values, traces.values_of("mu"))


def test_smc_with_a_pilot_matches_enumeration():
    """Branching, r stratified over 0..9 with obs = 6, by SMC: 20 particles a value first, then
    the rest of 10 x 80 by `pilot_shares`. For r > 4 each run's evidence is exact, so the pooled
    one must be too (a pooling that gave the pilot its particles' share of the mass, not of the
    evidence, would not be); every P(r) is the exact one within the stratified SMC test's 4
    standard errors."""
    n, pilot, values = 80, 20, list(range(10))
    post, strata, more = _branching_with_pilot("smc", n, pilot, values, seed=5)
    assert post.num_traces == n * len(values)
    joint = branching_exact(joint=True)
    exact = joint[: len(values)] / joint[: len(values)].sum()
    probs = post["r"].probabilities()
    for r, s in enumerate(strata):
        assert s["traces"] == pilot + more[r], (r, s)
        assert probs.get(r, 0.0) == pytest.approx(s["probability"], abs=1e-12)
        if r > 4:
            assert s["log_evidence"] == pytest.approx(math.log(joint[r]), abs=1e-9)
        e = math.sqrt(max(s["stages"], 1) / s["traces"])
        assert abs(probs.get(r, 0.0) - exact[r]) < 4 * max(exact[r] * (1 - exact[r]) * e, 1e-9) + 1e-4, (r, s)
    assert strata[3]["traces"] == strata[4]["traces"] == pilot  # 20 and 120 nats out


def test_a_pilot_is_refused_where_it_cannot_be_pooled():
    with remote_pool("branching", workers=1) as pool:
        obs = {"obs": [6.0]}
        with pytest.raises(ValueError, match="which only is, ic, smc can pool, not rmh"):
            stratified(lambda o, s, n: None, obs, "r", [5, 6], num_traces=20, pilot=5, engine="rmh")
        with pytest.raises(ValueError, match=r"keep_nats .* >= 0; got -1"):
            run_engine(pool, "smc", 20, obs, stratify=("r", [5, 6]), stratify_pilot=5, stratify_keep=-1)
        with pytest.raises(ValueError, match="must be fewer than the 20 traces"):
            run_engine(pool, "is", 20, obs, stratify=("r", [5, 6]), stratify_pilot=20)
        with pytest.raises(ValueError, match="give stratify too"):
            run_engine(pool, "is", 20, obs, stratify_pilot=5)


def test_the_command_line_shows_each_value_most_probable_first(tmp_path):
    """Without --json a stratified run prints a row per value (P, evidence, ESS, traces, the
    pilot's P), most probable first, and the run's total log p(y)."""
    from test_inference_cli import cli

    r = cli(
        "posterior", "branching", "--engine", "is", "-n", "200", "--stratify", "r=1,5,6", "--stratify-pilot", "20",
        "--observe", "obs=6", "--seed", "4", "-o", str(tmp_path / "p"), "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert f"log p(y) {summary['log_evidence']:.3f}" in lines[0]
    header = next(i for i, line in enumerate(lines) if "log p(y, value)" in line)
    assert lines[header].split() == ["r", "P", "log", "p(y,", "value)", "ESS", "traces", "pilot", "P"]
    rows = [line.split() for line in lines[header + 1 : header + 4]]
    assert [row[0] for row in rows] == ["5", "6", "1"]  # P(5) 0.50, P(6) 0.33, P(1) 0.18
    for row in rows:
        s = summary["strata"][row[0]]
        assert float(row[1]) == pytest.approx(s["probability"], abs=1e-4) and int(row[4]) == s["traces"]
