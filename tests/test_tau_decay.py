"""Tau decay physics: the engine-free check tool `probexec-tau-physics` decays 20 000 taus and the
checks a physicist would make are asserted here (conservation, masses, resonance line shapes,
channel frequencies, rest-frame distributions); then the tau -> calorimeter simulator is run once
standalone and once under the engine."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import probexec
import probexec.simulators

N_DECAYS = 20000
SEED = 7
BINS = 200
# Addresses' readable forms (addr2line) are irrelevant to these checks and cost seconds.
ENV = {**os.environ, "PROBEXEC_NO_ADDR2LINE": "1"}


def find_binary(name: str) -> Path | None:
    """PROBEXEC_SIM_DIR first, then the package's bin/, then PATH."""
    candidates = []
    if os.environ.get("PROBEXEC_SIM_DIR"):
        candidates.append(Path(os.environ["PROBEXEC_SIM_DIR"]) / name)
    candidates.append(probexec.simulators.BIN_DIR / name)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    found = shutil.which(name)
    return Path(found) if found else None


@pytest.fixture(scope="module")
def report() -> dict:
    exe = find_binary("probexec-tau-physics")
    if exe is None:
        pytest.skip(
            "probexec-tau-physics not built (set PROBEXEC_SIM_DIR to the build's simulators/tau_decay)"
        )
    r = subprocess.run(
        [str(exe), "--decays", str(N_DECAYS), "--seed", str(SEED), "--bins", str(BINS)],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_four_momentum_conservation(report):
    assert report["decays"] == N_DECAYS
    # max over all decays and components of |sum of products - tau| / E_tau
    assert report["max_rel_p4_violation"] < 1e-9
    # invariant mass of all products vs the tau mass
    assert report["max_rel_mass_violation"] < 1e-9
    # every product on its mass shell: |m^2 - m0^2| / E^2
    assert report["max_product_mass_violation"] < 1e-9
    # the largest final state: 3 pi pi0 nu with pi0 -> gamma gamma
    assert report["max_products"] == 6


def test_channel_frequencies(report):
    channels = report["channels"]
    probs = np.array([c["probability"] for c in channels])
    assert abs(probs.sum() - 1.0) < 1e-12
    assert sum(c["count"] for c in channels) == N_DECAYS
    for c in channels:
        p, k = c["probability"], c["count"]
        sigma = math.sqrt(N_DECAYS * p * (1 - p))
        assert abs(k - N_DECAYS * p) < 4 * sigma, f"{c['name']}: {k} vs {N_DECAYS * p:.1f} +- {sigma:.1f}"


def test_visible_mass(report):
    m_tau = report["tau_mass"]
    single = {"e nu nu": 0.000511, "mu nu nu": 0.10566, "pi nu": 0.13957, "K nu": 0.49368}
    minimum = {  # sum of the visible masses
        "pi pi0 nu": 0.13957 + 0.13498,
        "pi 2pi0 nu": 0.13957 + 2 * 0.13498,
        "3pi nu": 3 * 0.13957,
        "3pi pi0 nu": 3 * 0.13957 + 0.13498,
        "K pi0 nu": 0.49368 + 0.13498,
        "pi K0 nu": 0.13957 + 0.49761,
    }
    for c in report["channels"]:
        lo, hi = c["visible_mass_min"], c["visible_mass_max"]
        if c["name"] in single:  # one visible particle: its own mass (m from E^2 - p^2 at E ~ 20 GeV)
            assert abs(lo - single[c["name"]]) < 1e-7 and abs(hi - single[c["name"]]) < 1e-7, c
        else:
            assert minimum[c["name"]] - 1e-9 <= lo <= hi <= m_tau + 1e-9, c


def test_rest_frame_distributions(report):
    m_tau = report["tau_mass"]
    # Flat 3-body phase space with (nearly) massless products: E_e ~ linear on [0, m/2], mean m/3,
    # standard deviation (m/2)/sqrt(18).
    e = report["electron_rest_energy"]
    se = (m_tau / 2) / math.sqrt(18) / math.sqrt(e["count"])
    assert abs(e["mean"] - m_tau / 3) < 4 * se, (e, m_tau / 3, se)
    # Two-body decays: momentum fixed by the masses, direction isotropic (unpolarised tau).
    h = report["two_body_hadron"]
    assert h["max_rel_momentum_violation"] < 1e-9
    assert abs(h["mean_cos"]) < 4 / math.sqrt(3 * h["count"]), h


def bw_pdf(m: np.ndarray, mass: float, width: float) -> np.ndarray:
    """The relativistic Breit-Wigner the simulator samples, unnormalised: 1/((m^2-M^2)^2 + M^2 G^2)."""
    return 1.0 / ((m * m - mass * mass) ** 2 + (mass * width) ** 2)


def truncated_bw_median_and_density(
    mass: float, width: float, low: float, high: float
) -> tuple[float, float]:
    grid = np.linspace(low, high, 400001)
    f = bw_pdf(grid, mass, width)
    cdf = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) / 2 * np.diff(grid))])
    norm = cdf[-1]
    median = float(np.interp(0.5, cdf / norm, grid))
    return median, float(bw_pdf(np.array(median), mass, width) / norm)


# (key in the report, nominal name): top-level resonances per channel. a1/rho is drawn in a range
# that depends on the a1 mass, so its line shape is not a plain truncated Breit-Wigner.
RESONANCES = [("3:rho", "rho"), ("4:a1", "a1"), ("5:a1", "a1"), ("8:kstar", "kstar"), ("9:kstar", "kstar")]


@pytest.mark.parametrize("key,res", RESONANCES)
def test_resonance_line_shape(report, key, res):
    mass, width = report["nominal"][res]
    r = report["resonances"][key]
    n, low, high = r["count"], r["low"], r["high"]
    assert n > 50, r
    assert low < mass < high
    # Median of the accepted masses vs that of the truncated Breit-Wigner: 4 standard errors,
    # SE = 1 / (2 f(median) sqrt(n)).
    median, density = truncated_bw_median_and_density(mass, width, low, high)
    se = 1.0 / (2.0 * density * math.sqrt(n))
    assert abs(r["median"] - median) < 4 * se, f"{key}: median {r['median']:.4f} vs {median:.4f} +- {se:.4f}"
    # The peak: the mode of a fine histogram lies within one bin width plus the half-width.
    hist = np.array(r["hist"])
    bin_width = (high - low) / len(hist)
    mode = low + (int(np.argmax(hist)) + 0.5) * bin_width
    assert abs(mode - mass) < bin_width + width / 2, f"{key}: mode {mode:.4f} vs {mass}"


def test_a1_rho_inside_kinematic_range(report):
    for key in ("4:a1/rho", "5:a1/rho"):
        r = report["resonances"][key]
        assert r["count"] == report["resonances"][key.split("/")[0]]["count"]


# --- the simulator: tau -> decay -> calorimeter -------------------------------------------------------


@pytest.fixture(scope="module")
def simulator() -> Path:
    exe = find_binary("probexec-sim-tau_decay")
    if exe is None:
        pytest.skip("probexec-sim-tau_decay not built (it needs the calorimeter library)")
    return exe


def test_simulator_standalone(simulator):
    r = subprocess.run(
        [str(simulator), "--standalone", "--traces", "5", "--seed", "3", "--noise-floor", "0.01"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("trace ") == 5 and "draws/trace" in r.stderr
    bad = subprocess.run(
        [str(simulator), "--standalone", "--noise-floor", "x"], capture_output=True, text=True, env=ENV
    )
    assert bad.returncode != 0 and "noise-floor" in bad.stderr


def test_simulator_under_engine(simulator, report):
    model = probexec.RemoteModel(executable=simulator, timeout=60)
    try:
        batch = model.prior(30, seed=5, mode="stream")
    finally:
        model.close()
    assert batch.num_traces == 30
    lengths = set()
    channels = batch.values_of("channel")
    for i in range(batch.num_traces):
        t = batch.trace(i)
        names = [v.name for v in t.variables]
        lengths.add(t.length)
        assert names[:4] == ["px", "py", "pz", "channel"]
        kinds = {v.name: v.kind for v in t.variables}
        for tag in ("visible_energy", "missing_pt", "visible_mass", "fs_0_p", "fs_0_pdg"):
            assert kinds[tag] == "tag", tag
        assert kinds["calorimeter"] == "observe"
        assert tuple(t.named("calorimeter").value.shape) == (20, 35, 35)
        # the final state: four-vectors summing to the tau's
        n_fs = sum(1 for name in names if name.startswith("fs_") and name.endswith("_p"))
        total = sum(t.named(f"fs_{k}_p").value.numpy() for k in range(n_fs))
        px, py, pz = (float(t.named(x).value) for x in ("px", "py", "pz"))
        m_tau = report["tau_mass"]
        np.testing.assert_allclose(
            total, [math.sqrt(px**2 + py**2 + pz**2 + m_tau**2), px, py, pz], rtol=1e-9
        )
        assert 0 <= int(channels[i]) < 10
    # rejection loops and channel choice make trace lengths vary
    assert len(lengths) > 3


def test_fixed_spots_make_the_image_likelihood_a_function_of_the_controlled_draws():
    """Rerun an event with every controlled draw replayed at its true value (a perfect proposal):
    with random spots its own image's log-likelihood scatters by hundreds of nats, so importance
    weights collapse to one trace; with `tau_decay_fixed_spots` it is the same every time, and
    a small change of px moves it only a little."""
    from probexec.handlers import Condition, PriorProposal, Replay
    from probexec.inference.prior import sample_prior
    from probexec.trace import TraceBatchBuilder

    def reruns(sim: str, px_shift: float = 0.0, n: int = 8) -> np.ndarray:
        with probexec.RemoteModel(sim) as m:
            truth = sample_prior(m, 1, seed=11, mode="per_draw", progress=False)
            replay = Replay(truth)
            if px_shift:
                key = next(k for k in replay.values if m.addresses[k[0]].name == "px")
                replay.values[key] += px_shift
            rng = np.random.default_rng(0)
            b = TraceBatchBuilder(m.addresses)
            h = [
                Condition({"calorimeter": truth.values_of("calorimeter")[0]}),
                replay,
                PriorProposal(rng, local=True),
            ]
            for _ in range(n):
                m.run_trace(h, b, seed=int(rng.integers(2**63)))
            batch = b.build()
            assert np.allclose(batch.values_of("px"), truth.values_of("px")[0] + px_shift)
            return batch.log_likelihood()

    random_spots = reruns("tau_decay")
    assert random_spots.std() > 100, random_spots
    fixed = reruns("tau_decay_fixed_spots")
    assert np.ptp(fixed) == 0.0, fixed
    nudged = reruns("tau_decay_fixed_spots", px_shift=1e-4, n=1)
    assert abs(nudged[0] - fixed[0]) < 0.05 * random_spots.std()


def test_coarse_variant_has_a_200_mev_noise_floor_and_the_same_deposits():
    """`tau_decay_coarse` is `tau_decay_fixed_spots` with --noise-floor 0.2: the same event (same
    seed) deposits the same energy, and the likelihood's stddev is sqrt(deposit + floor^2)."""
    from probexec.inference.prior import sample_prior

    images = {}
    for sim in ("tau_decay_fixed_spots", "tau_decay_coarse"):
        with probexec.RemoteModel(sim) as m:
            images[sim] = sample_prior(m, 1, seed=5, mode="per_draw", progress=False)
    fine, coarse = images["tau_decay_fixed_spots"], images["tau_decay_coarse"]
    mean = coarse.means_of("calorimeter")[0]
    np.testing.assert_array_equal(mean, fine.means_of("calorimeter")[0])
    for batch, floor in ((fine, 0.005), (coarse, 0.2)):
        row = int(np.nonzero(batch.kind == probexec.trace.OBSERVE)[0][0])
        p = batch.params[batch.param_offsets[row] : batch.param_offsets[row + 1]]
        scale = p[mean.size :]
        np.testing.assert_allclose(scale, np.sqrt(np.maximum(mean, 0) + floor**2), rtol=1e-12)


def test_wide_observation_rows_score_and_reorder_like_the_generic_path():
    """The calorimeter row (24 500 values) takes the slice-and-in-place path in `select` and
    `log_prob`; it must give what torch's Normal gives and move with its trace."""
    import torch

    from probexec.remote import RemoteModel
    from probexec.trace import OBSERVE

    with RemoteModel("tau_decay") as m:
        batch = m.stream(6, seed=5)
    lp = batch.log_prob()
    rows = np.nonzero(batch.kind == OBSERVE)[0]
    wide = [r for r in rows if batch.value_offsets[r + 1] - batch.value_offsets[r] >= 1024]
    assert len(wide) == 6
    for r in wide:
        v = batch.values[batch.value_offsets[r] : batch.value_offsets[r + 1]]
        p = batch.params[batch.param_offsets[r] : batch.param_offsets[r + 1]]
        loc, scale = torch.from_numpy(p[: len(v)]), torch.from_numpy(p[len(v) :])
        expected = torch.distributions.Normal(loc, scale).log_prob(torch.from_numpy(v)).sum().item()
        assert lp[r] == pytest.approx(expected, rel=1e-12, abs=1e-9)
    order = np.array([4, 1, 5, 0, 3, 2])
    moved = batch.select(order)
    np.testing.assert_allclose(moved.log_likelihood(), batch.log_likelihood()[order], rtol=1e-12)
    for new, old in enumerate(order):
        np.testing.assert_array_equal(
            moved.values_of("calorimeter")[new], batch.values_of("calorimeter")[old]
        )
