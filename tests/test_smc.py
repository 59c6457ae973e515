"""Tempered SMC: exact posteriors and evidence on models where both are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from probexec.inference import remote_pool, smc
from probexec.inference.smc import next_beta, stratified_smc, stratum_values, systematic_resample
from test_posterior import OBS, branching_exact, check_discrete, check_normal_posterior

# Resampling copies particles and the moves only partly decorrelate the copies, so a weighted
# sample of ESS k is worth less than k independent draws. The tests count it as k / 2.
CORRELATION = 2.0


def gum_log_evidence() -> float:
    """log p(obs = [8, 9]) when mu ~ N(1, 5) and obs_i ~ N(mu, 2): obs ~ N([1, 1], 5 11' + 2 I)."""
    cov = 5.0 * np.ones((2, 2)) + 2.0 * np.eye(2)
    d = np.array(OBS["obs"]) - 1.0
    return float(
        -0.5 * d @ np.linalg.solve(cov, d) - 0.5 * math.log(np.linalg.det(cov)) - math.log(2 * math.pi)
    )


def test_next_beta_keeps_the_asked_ess():
    rng = np.random.default_rng(0)
    log_lik = rng.normal(-50.0, 20.0, size=1000)
    beta = next_beta(log_lik, 0.0, 0.5)
    w = np.exp((beta - 0.0) * (log_lik - log_lik.max()))
    assert 0.0 < beta < 1.0
    assert w.sum() ** 2 / (w * w).sum() == pytest.approx(500.0, rel=1e-6)
    assert next_beta(np.zeros(10), 0.3, 0.5) == 1.0  # a flat likelihood: straight to the posterior


def test_systematic_resampling_copies_in_proportion_to_weight():
    w = np.array([0.5, 0.25, 0.125, 0.125, 0.0])
    idx = systematic_resample(np.log(w + 1e-300), np.random.default_rng(1))
    counts = np.bincount(idx, minlength=5)
    # Systematic resampling gives each particle floor(n w) or ceil(n w) copies.
    assert counts.sum() == 5 and counts[4] == 0
    assert all(abs(c - 5 * p) < 1 for c, p in zip(counts, w, strict=True))


def test_smc_gum_posterior_and_evidence():
    with remote_pool("gum", workers=2) as pool:
        post = smc(pool, 400, OBS, seed=3, progress=False)
    ess = post.ess / CORRELATION
    check_normal_posterior(post, "mu", ess)
    st = post.stats
    assert st["betas"][0] == 0.0 and st["betas"][-1] == 1.0 and np.all(np.diff(st["betas"]) > 0)
    # Each stage's incremental weights keep half the particles' ESS: log Z's variance is about
    # (1 / ess_fraction - 1) / n per stage.
    se = math.sqrt(st["stages"] * (1 / st["ess_fraction"] - 1) / 400)
    assert abs(st["log_evidence"] - gum_log_evidence()) < 4 * se, (st["log_evidence"], gum_log_evidence(), se)
    assert st["simulator_runs"] >= 400 * (1 + 5 * (st["stages"] - 1))  # a GUM trace has one site


def test_smc_marsaglia_with_a_rejection_loop():
    with remote_pool("gum_marsaglia", workers=2) as pool:
        post = smc(pool, 400, OBS, seed=4, latents=["mu"], progress=False)
    check_normal_posterior(post, "mu", post.ess / CORRELATION)
    st = post.stats
    se = math.sqrt(st["stages"] * (1 / st["ess_fraction"] - 1) / 400)
    assert abs(st["log_evidence"] - gum_log_evidence()) < 4 * se, (st["log_evidence"], gum_log_evidence(), se)


def test_smc_branching_matches_enumeration():
    """Changing trace structure (Poisson draws that exist in some traces only) under tempering."""
    with remote_pool("branching", workers=2) as pool:
        post = smc(pool, 600, {"obs": [6.0]}, seed=5, latents=["r"], progress=False)
    check_discrete(post, "r", branching_exact(), post.ess / CORRELATION)


def test_smc_is_reproducible_and_checks_its_arguments():
    with remote_pool("gum", workers=2) as pool:
        a = smc(pool, 50, OBS, seed=11, moves=2, progress=False)
        b = smc(pool, 50, OBS, seed=11, moves=2, progress=False)
        with pytest.raises(ValueError, match="at least 2 particles"):
            smc(pool, 1, OBS)
        with pytest.raises(ValueError, match="ess_fraction"):
            smc(pool, 10, OBS, ess_fraction=1.0)
    assert np.array_equal(a["mu"].values, b["mu"].values)
    assert a.stats["log_evidence"] == b.stats["log_evidence"]


def test_stratified_smc_branching_matches_enumeration():
    """One SMC per value of r, weighted by its evidence p(obs, r): for r > 4 nothing else is
    drawn and the evidence is exact; for r <= 4 it is estimated over s."""
    exact = branching_exact()
    with remote_pool("branching", workers=2) as pool:
        post = stratified_smc(pool, 100, {"obs": [6.0]}, "r", values=range(25), seed=6, progress=False)
    strata = post.stats["strata"]
    assert sum(v["probability"] for v in strata.values()) == pytest.approx(1.0)
    probs = post["r"].probabilities()
    for r, p in enumerate(exact[:25]):
        assert probs.get(r, 0.0) == pytest.approx(strata[str(r)]["probability"], abs=1e-12)
        if r > 4:  # no latent left: one stage, the exact evidence
            assert strata[str(r)]["stages"] == 1
        # An evidence estimate of relative error e moves P(r) by about p (1 - p) e; e is
        # sqrt(stages (1 / ess_fraction - 1) / particles) per stratum.
        e = math.sqrt(strata[str(r)]["stages"] * 1.0 / 100)
        assert abs(probs.get(r, 0.0) - p) < 4 * max(p * (1 - p) * e, 1e-9) + 1e-4, (r, probs.get(r), p)


def test_stratum_values_come_from_the_prior():
    with remote_pool("hmm", workers=1) as pool:
        assert stratum_values(pool, "state_1") == [0.0, 1.0, 2.0]
    with remote_pool("gum", workers=1) as pool:
        with pytest.raises(ValueError, match="'mu' is not a Categorical, Bernoulli or Binomial"):
            stratum_values(pool, "mu")
        with pytest.raises(ValueError, match="no sample named 'nope'"):
            stratum_values(pool, "nope")
        with pytest.raises(ValueError, match="'obs' is observed"):
            stratified_smc(pool, 10, OBS, "obs", values=[1.0])


def test_a_stratum_value_no_trace_can_have_gets_probability_zero():
    """r = -1 has prior probability 0 under the Poisson: its run finds no trace to start from."""
    with remote_pool("branching", workers=2) as pool:
        post = stratified_smc(pool, 20, {"obs": [6.0]}, "r", values=[-1, 5], seed=7, progress=False)
    strata = post.stats["strata"]
    assert strata["-1"]["probability"] == 0.0 and "finite joint density" in strata["-1"]["error"]
    assert strata["5"]["probability"] == pytest.approx(1.0)
    assert post.num_traces == 20
