"""Divergences and diagnostics computed as named, simulation-based calibration, the IC code paths
on synthetic input, and the report end to end (CLI, files, rendering in a headless browser)."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from probexec.analytics import analyse, jensen_shannon, kl_divergence, write_report
from probexec.analytics.diagnostics import (
    autocorrelation,
    importance_diagnostics,
    mcmc_diagnostics,
    read_training_log,
)
from probexec.analytics.divergence import compare, histogram, shared_bins
from probexec.analytics.interesting import rank_addresses
from probexec.analytics.report import ReportOptions
from probexec.analytics.sbc import chi2_sf, simulation_based_calibration
from probexec.analytics.sources import memory_source
from probexec.inference.result import Posterior
from probexec.trace import OBSERVE


# --- divergences -----------------------------------------------------------------------------
def test_jensen_shannon_in_bits():
    p, q = np.array([0.5, 0.5]), np.array([1.0, 0.0])
    m = (p + q) / 2
    expected = 0.5 * (0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1])) + 0.5 * math.log2(1 / m[0])
    assert jensen_shannon(p, q) == pytest.approx(expected)
    assert jensen_shannon(q, p) == pytest.approx(expected)
    assert jensen_shannon(p, p) == 0.0
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint: 1 bit


def test_kl_divergence_of_two_gaussians_from_histograms():
    rng = np.random.default_rng(0)
    n = 400_000
    a, b = rng.normal(0.0, 1.0, n), rng.normal(1.0, 1.5, n)
    exact = math.log(1.5 / 1.0) + (1.0 + 1.0**2) / (2 * 1.5**2) - 0.5  # KL(N(0,1) || N(1,1.5))
    edges = np.linspace(-8, 9, 200)
    est = kl_divergence(histogram(a, None, edges), histogram(b, None, edges), n)
    assert est == pytest.approx(exact, abs=0.01)


def test_compare_counts_absence_and_weights():
    rng = np.random.default_rng(1)
    v = rng.normal(size=5000)
    same = compare((v, None, 1.0), (v, None, 1.0), discrete=False)
    assert same["js_bits"] == pytest.approx(0.0, abs=1e-12)
    # Same values, but the address occurs in half the traces only: JS of (1, 0) vs (0.5, 0.5) bins.
    half = compare((v, None, 1.0), (v, None, 0.5), discrete=False)
    assert half["js_bits"] == pytest.approx(jensen_shannon([1.0, 0.0], [0.5, 0.5]))
    assert half["js_values_bits"] == pytest.approx(0.0, abs=1e-12)
    # Weights count: weighting toward v > 0 moves the distribution.
    lw = np.where(v > 0, 0.0, -50.0)
    moved = compare((v, None, 1.0), (v, lw, 1.0), discrete=False)
    assert moved["js_values_bits"] > 0.3
    edges = shared_bins([np.array([0.0, 1, 1, 2])], discrete=True)
    np.testing.assert_array_equal(edges, [-0.5, 0.5, 1.5, 2.5])


# --- diagnostics ----------------------------------------------------------------------------
def test_autocorrelation_of_an_ar1_chain():
    rng = np.random.default_rng(2)
    phi, n = 0.8, 200_000
    x = np.zeros((2, n))
    e = rng.normal(size=(2, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    rho = autocorrelation(x, 5)
    np.testing.assert_allclose(rho, phi ** np.arange(6), atol=0.02)
    rows = mcmc_diagnostics({"x": x.ravel()}, chains=2)
    # ESS of an AR(1): N (1 - phi) / (1 + phi).
    assert rows[0]["ess"] == pytest.approx(2 * n * (1 - phi) / (1 + phi), rel=0.1)
    assert rows[0]["r_hat"] == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="do not split into 3 chains"):
        mcmc_diagnostics({"x": x.ravel()[:-2]}, chains=3)


def test_importance_diagnostics():
    d = importance_diagnostics(np.zeros(100))
    assert d["ess"] == pytest.approx(100) and d["max_weight"] == pytest.approx(0.01)
    d = importance_diagnostics(np.array([0.0, -np.inf, -1000.0, np.nan]))
    assert d["finite"] == 2 and d["ess"] == pytest.approx(1.0) and d["max_weight"] == pytest.approx(1.0)


def _training_csv(path: Path, rows: int = 30) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "epoch", "traces", "loss", "valid_loss", "lr", "traces_per_s"])
        for s in range(1, rows + 1):
            w.writerow([s, s // 10, 64 * s, 5 / s, (6 / s if s % 5 == 0 else ""), 1e-3, 1500.0])
    return path


def test_training_log_reading(tmp_path):
    log = read_training_log(_training_csv(tmp_path / "t.csv"))
    assert log["loss"][0] == 5.0 and np.isnan(log["valid_loss"][0]) and log["valid_loss"][4] == 6 / 5
    (tmp_path / "bad.csv").write_text("step,loss\n1,abc\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: column 'loss' holds 'abc'"):
        read_training_log(tmp_path / "bad.csv")
    (tmp_path / "nohead.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks column"):
        read_training_log(tmp_path / "nohead.csv")


# --- simulation-based calibration --------------------------------------------------------------
@pytest.mark.slow
def test_sbc_of_importance_sampling_on_gum_is_uniform_and_catches_overconfidence(remote):
    model = remote("gum")
    good = simulation_based_calibration(model, "is", 100, 2000, latents=["mu"], num_draws=49, seed=1)
    assert len(good.ranks["mu"]) == 100
    assert good.uniformity()["mu"]["p_value"] > 1e-3
    # A likelihood counted three times makes posteriors too narrow: the ranks pile up at the ends.
    bad = simulation_based_calibration(
        model, "is", 100, 2000, latents=["mu"], num_draws=49, seed=1, likelihood_importance=3.0
    )
    assert bad.uniformity()["mu"]["p_value"] < 1e-3


def test_chi2_survival_function():
    # Known quantiles: P(chi2_1 > 3.841) = 0.05, P(chi2_10 > 18.307) = 0.05.
    assert chi2_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-5)
    assert chi2_sf(18.307038, 10) == pytest.approx(0.05, abs=1e-5)


# --- IC code paths on synthetic input -------------------------------------------------------------
def _ic_posterior(prior_batch, shift: float) -> Posterior:
    """A stand-in for an IC posterior on GUM: mu drawn from a proposal N(7.25 + shift, 1) in place
    of the prior, weighted by prior x likelihood / proposal, as an IC engine does."""
    rng = np.random.default_rng(3)
    b = prior_batch.select(slice(0, prior_batch.num_traces))
    mu_rows = np.nonzero(np.isin(b.address_id, b.addresses.ids_named("mu")))[0]
    obs_rows = np.nonzero(np.isin(b.address_id, b.addresses.ids_named("obs", OBSERVE)))[0]
    mu = 7.25 + shift + rng.normal(size=len(mu_rows))
    b.values = b.values.copy()
    b.values[b.value_offsets[mu_rows]] = mu
    b.params = b.params.copy()  # the observation's mean follows mu
    b.params[b.param_offsets[obs_rows]] = mu
    b.params[b.param_offsets[obs_rows] + 1] = mu
    b.condition({"obs": [8.0, 9.0]})
    log_q = -0.5 * (mu - 7.25 - shift) ** 2 - 0.5 * math.log(2 * math.pi)
    lw = b.log_prior() + b.log_likelihood() - log_q
    return Posterior("ic", b, lw, ["mu"], 0.0)


def test_ic_proposal_divergence_from_the_prior(remote):
    prior = remote("gum").stream(20_000, seed=7)
    ref = analyse(memory_source(prior, "prior"), progress=False)
    post = analyse(memory_source(_ic_posterior(prior, 0.0), "ic"), progress=False)
    rows = {r["label"]: r for r in rank_addresses(ref.addresses, post.addresses, "ic")}
    mu = rows["mu"]
    # Both the proposal and the weighted posterior sit near the exact posterior N(7.25, 0.913),
    # far from the prior N(1, 2.236): large divergences, and the weighted mean is right.
    assert mu["proposal_js_bits"] > 0.7 and mu["js_bits"] > 0.7
    assert mu["posterior_mean"] == pytest.approx(7.25, abs=4 * 0.913 / math.sqrt(1000))
    assert mu["kl_posterior_prior_nats"] > 1.0


def test_report_with_ic_posterior_and_training_log(tmp_path, remote):
    prior = remote("gum").stream(5000, seed=8)
    analyses = [
        analyse(memory_source(prior, "prior"), progress=False),
        analyse(memory_source(_ic_posterior(prior, 0.5), "ic"), progress=False),
    ]
    page = write_report(
        analyses,
        tmp_path / "r",
        ReportOptions(truth={"mu": 7.0}, training_log=str(_training_csv(tmp_path / "train.csv"))),
    )
    text = page.read_text()
    assert "IC training" in text and "proposal_js_bits" in text
    assert (tmp_path / "r" / "figures" / "training.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["training"]["last_loss"] == pytest.approx(5 / 30)
    assert summary["diagnostics"]["ic"]["traces"] == 5000


# --- the report end to end --------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_report(tmp_path_factory):
    """prior (probexec prior), IS and RMH posteriors (probexec posterior), then the report, all
    through the command lines a user runs."""
    d = tmp_path_factory.mktemp("analytics")
    py = sys.executable

    def run(*args: str) -> subprocess.CompletedProcess:
        r = subprocess.run([py, *args], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r

    run(
        "-m",
        "probexec",
        "prior",
        "gum_marsaglia",
        "-n",
        "20000",
        "-o",
        str(d / "prior"),
        "--seed",
        "1",
        "--workers",
        "1",
        "--quiet",
    )
    common = ["--observe", "obs=8,9", "--seed", "2", "--workers", "1", "--quiet"]
    run(
        "-m",
        "probexec",
        "posterior",
        "gum_marsaglia",
        "--engine",
        "is",
        "-n",
        "5000",
        "-o",
        str(d / "is"),
        *common,
    )
    run("-m", "probexec", "posterior", "gum_marsaglia", "--engine", "rmh", "-n", "2000", "--chains", "2",
        "--burn-in", "200", "-o", str(d / "rmh"), *common)  # fmt: skip
    r = run(
        "-m", "probexec.analytics", f"prior={d / 'prior'}", str(d / "is"), str(d / "rmh"),
        "-o", str(d / "report"), "--truth", "mu=7.5", "--quiet",
    )  # fmt: skip
    return d / "report", r


@pytest.mark.slow
def test_cli_report_files(cli_report):
    out, _ = cli_report
    csvs = {p.name for p in (out / "csv").glob("*.csv")}
    assert {
        "addresses_prior.csv",
        "trace_types_prior.csv",
        "trace_lengths_prior.csv",
        "transitions_prior.csv",
    } <= csvs
    assert {"informative_is.csv", "informative_rmh.csv", "mcmc_rmh.csv", "weights_is.csv"} <= csvs
    with open(out / "csv" / "addresses_prior.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows][2:] == ["mu", "obs"] and all(r["file_line"] for r in rows)
    with open(out / "csv" / "mcmc_rmh.csv") as fh:
        mcmc = list(csv.DictReader(fh))
    # The same split-R-hat and ESS as the engine itself reported.
    engine = json.loads((out.parent / "rmh" / "summary.json").read_text())
    assert mcmc[0]["latent"] == "mu"
    assert float(mcmc[0]["r_hat"]) == pytest.approx(engine["r_hat"]["mu"])
    assert float(mcmc[0]["ess"]) == pytest.approx(engine["ess_per_latent"]["mu"])
    dot = (out / "graphs" / "graph_prior_all.dot").read_text()
    assert dot.startswith("digraph") and "START" in dot and "END" in dot
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prior"]["trace_types"] >= 5 and len(summary["prior"]["loops"]) == 1
    # The tag mu is what the observation informs most.
    assert summary["informative"]["is"][0]["label"] == "mu"
    if shutil.which("dot"):
        assert (out / "graphs" / "graph_prior_all.svg").read_text().lstrip().startswith("<?xml")


def test_cli_errors_are_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "probexec.analytics", str(tmp_path / "none"), "-o", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and r.stderr.startswith("probexec analytics:") and "no such file" in r.stderr


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _render(page: Path, profile: Path) -> dict[str, str]:
    """Loads `page` in headless chromium; returns the data-* attributes its script set on <body>."""
    r = subprocess.run(
        [
            _chromium(),  # type: ignore[list-item]
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", r.stdout)
    assert body, r.stdout[:500]
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (make system-deps installs it)")
def test_report_renders_in_a_headless_browser(cli_report, tmp_path):
    """The page loads in chromium with no script or resource error and every figure decodes."""
    out, _ = cli_report
    attrs = _render(out / "index.html", tmp_path / "profile")
    assert attrs.get("status") == "ok", attrs
    assert attrs["errors"] == "0" and attrs["broken-images"] == "0", attrs
    assert int(attrs["images"]) >= 8


TAU_PAGE = Path(__file__).resolve().parents[1] / "docs" / "analytics" / "tau" / "index.html"


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (make system-deps installs it)")
def test_tau_report_in_docs_renders(tmp_path):
    """The checked-in tau decay report (docs/analytics/make_tau_report.py) renders without errors."""
    assert TAU_PAGE.is_file(), "docs/analytics/tau/index.html is missing"
    attrs = _render(TAU_PAGE, tmp_path / "profile")
    assert attrs.get("status") == "ok", attrs
    assert attrs["errors"] == "0" and attrs["broken-images"] == "0", attrs
    assert int(attrs["images"]) >= 10
