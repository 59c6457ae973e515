"""Prior sampling of every C++ test model, over ipc and tcp, per draw and streamed: moments
against the analytic prior, log-densities against closed forms, identical structure either way."""

from __future__ import annotations

import math

import numpy as np
import pytest

import probexec
from conftest import assert_close, assert_moments
from probexec.trace import FLAG_CONTROLLED, FLAG_REPLACE, FLAG_VALUE_OMITTED, OBSERVE, SAMPLE, TAG

N_PER_DRAW = 1500
N_STREAM = 40000
SQRT5 = math.sqrt(5.0)


def normal_logpdf(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


@pytest.mark.parametrize("mode", ["per_draw", "stream"])
def test_gum_prior_moments_and_densities(remote, transport, mode):
    model = remote("gum", transport=transport)
    assert model.address.startswith(transport)
    assert model.peer_version == 2 and model.supports_streaming
    n = N_PER_DRAW if mode == "per_draw" else N_STREAM
    batch = model.prior(n, seed=11, mode=mode, observe={"obs": [8.0, 9.0]})
    assert batch.num_traces == n
    mu = batch.values_of("mu")
    assert np.isfinite(mu).all()
    assert_moments(mu, 1.0, SQRT5, f"gum prior mu ({mode}, {transport})")
    np.testing.assert_allclose(batch.log_prior(), normal_logpdf(mu, 1.0, SQRT5), rtol=0, atol=1e-9)
    expected_ll = normal_logpdf(8.0, mu, math.sqrt(2)) + normal_logpdf(9.0, mu, math.sqrt(2))
    np.testing.assert_allclose(batch.log_likelihood(), expected_ll, rtol=0, atol=1e-9)
    # One trace type: sample mu, observe obs.
    assert len(set(batch.trace_types())) == 1
    t = batch.trace(0)
    assert [v.kind for v in t.variables] == ["sample", "observe"]
    assert [v.name for v in t.variables] == ["mu", "obs"]
    assert t.variables[0].controlled and not t.variables[1].controlled
    assert t.variables[1].value.tolist() == [8.0, 9.0]
    assert "gum" in t.variables[0].address


def test_per_draw_and_stream_share_address_ids_across_processes(remote):
    a = remote("gum").prior(5, seed=1, mode="per_draw")
    b = remote("gum").prior(5, seed=1, mode="stream")
    assert a.trace_types()[0] == b.trace_types()[0]


def test_marsaglia_prior_and_rejection_loop_length(remote, transport):
    model = remote("gum_marsaglia", transport=transport)
    batch = model.prior(N_STREAM, seed=3, mode="stream")
    mu = batch.values_of("mu")  # a tag
    assert_moments(mu, 1.0, SQRT5, "marsaglia prior mu")
    # Each loop iteration draws two uniforms; iterations ~ Geometric(pi/4).
    samples = np.zeros(batch.num_traces)
    np.add.at(samples, batch.row_trace, batch.kind == SAMPLE)
    iterations = samples / 2
    p = math.pi / 4
    assert_close(
        iterations.mean(), 1 / p, math.sqrt((1 - p) / p**2 / len(iterations)), "Marsaglia iterations"
    )
    # Every uniform draw is marked replace, and the trace types vary with the loop length.
    assert (batch.flags[batch.kind == SAMPLE] & FLAG_REPLACE).all()
    assert len(set(batch.trace_types())) > 3
    per_draw = model.prior(300, seed=3, mode="per_draw")
    assert (per_draw.flags[per_draw.kind == SAMPLE] & FLAG_REPLACE).all()
    assert_moments(per_draw.values_of("mu"), 1.0, SQRT5, "marsaglia per-draw mu")


@pytest.mark.parametrize("mode", ["per_draw", "stream"])
def test_hmm_prior_state_marginals(remote, transport, mode):
    n = 600 if mode == "per_draw" else 20000
    batch = remote("hmm", transport=transport).prior(n, seed=5, mode=mode)
    T = np.array([[0.1, 0.5, 0.4], [0.2, 0.2, 0.6], [0.15, 0.15, 0.7]])
    marginal = np.full(3, 1 / 3)
    for t in range(17):
        states = batch.values_of(f"state_{t}")
        for k in range(3):
            freq = float((states == k).mean())
            assert_close(
                freq, marginal[k], math.sqrt(marginal[k] * (1 - marginal[k]) / n), f"P(state_{t} = {k})"
            )
        marginal = marginal @ T
    assert batch.trace(0).length == 17 + 16


@pytest.mark.parametrize("mode", ["per_draw", "stream"])
def test_branching_prior(remote, transport, mode):
    n = 1500 if mode == "per_draw" else 40000
    batch = remote("branching", transport=transport).prior(n, seed=9, mode=mode)
    r = batch.values_of("r")
    assert_moments(r, 4.0, 2.0, "branching r ~ Poisson(4)")
    s = batch.values_of("s")
    has_s = ~np.isnan(s)
    np.testing.assert_array_equal(has_s, r <= 4)
    types = set(batch.trace_types())
    assert len(types) == 2  # r <= 4: (r, s, obs); r > 4: (r, obs)
    assert sorted(len(t) for t in types) == [2, 3]


def test_kitchen_sink_every_type_and_uncontrolled_draws(remote):
    model = remote("kitchen_sink", record_uncontrolled_values=True)
    for mode in ("per_draw", "stream"):
        batch = model.prior(200, seed=2, mode=mode)
        trace = batch.trace(0)
        names = [v.name for v in trace.variables]
        assert names[:12] == [
            "normal",
            "uniform",
            "categorical",
            "poisson",
            "bernoulli",
            "beta",
            "exponential",
            "gamma",
            "lognormal",
            "binomial",
            "weibull",
            "vector",
        ]
        noise = [v for v in trace.variables if v.name == "noise"]
        assert len(noise) == 10 and not any(v.controlled for v in noise)
        assert [v.instance for v in noise] == list(range(1, 11))
        tagged = trace.named("noise_sum")
        assert tagged.tagged
        assert float(tagged.value) == pytest.approx(sum(float(v.value) for v in noise), abs=1e-12)
        assert trace.named("vector").value.shape == (3,)
        assert np.isfinite(batch.log_prob()).all()
        assert set(np.unique(batch.kind)) == {SAMPLE, OBSERVE, TAG}
        # Discrete values are integers within their supports.
        cat = batch.values_of("categorical")
        assert set(np.unique(cat)) <= {0.0, 1.0, 2.0}
        assert (batch.values_of("binomial") <= 10).all()
        vec = batch.values_of("vector")
        assert vec.shape == (200, 3)
        assert_close(vec[:, 2].mean(), 2.0, 0.5 / math.sqrt(200), "vector[2] mean")
        # Per-draw: controlled draws were chosen by the engine; uncontrolled came as local draws.
        controlled = (batch.flags & FLAG_CONTROLLED) != 0
        assert controlled.sum() == 12 * 200


@pytest.mark.parametrize("mode", ["per_draw", "stream"])
def test_uncontrolled_draws_are_counted_by_default(remote, mode):
    """By default an uncontrolled draw leaves one row per address and trace, with a count."""
    model = remote("kitchen_sink")
    batch = model.prior(50, seed=1, mode=mode)
    noise_rows = np.isin(batch.address_id, batch.addresses.ids_named("noise"))
    assert noise_rows.sum() == 50
    assert (batch.count[noise_rows] == 10).all()
    assert (batch.flags[noise_rows] & FLAG_VALUE_OMITTED).all()
    assert np.isnan(batch.log_prob()[noise_rows]).all()
    noise = batch.trace(0).named("noise")
    assert noise.value is None and noise.count == 10 and not noise.controlled
    # The tag still carries the sum the simulator computed from those draws.
    assert np.isfinite(batch.values_of("noise_sum")).all()


def test_draw_locally_flag(remote):
    """The engine can answer a controlled draw with 'draw it yourself': the value comes back."""
    from probexec.inference.prior import sample_prior

    model = remote("gum")
    batch = sample_prior(model, N_PER_DRAW, seed=4, mode="per_draw", local=True)
    mu = batch.values_of("mu")
    assert_moments(mu, 1.0, SQRT5, "gum mu drawn locally on request")
    assert (batch.flags[batch.kind == SAMPLE] & FLAG_CONTROLLED).all()


def test_streaming_is_reproducible_with_a_seed(remote):
    model = remote("gum")
    a = model.prior(100, seed=42, mode="stream").values_of("mu")
    b = model.prior(100, seed=42, mode="stream").values_of("mu")
    c = model.prior(100, seed=43, mode="stream").values_of("mu")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_traces_materialise_as_records(remote):
    batch = remote("branching").prior(20, seed=0, mode="stream")
    for trace in batch:
        assert isinstance(trace, probexec.Trace)
        assert trace.trace_type == tuple(v.address_id for v in trace.variables)
        assert trace.log_joint == pytest.approx(trace.log_prior + trace.log_likelihood)
        assert trace.result is not None and float(trace.result) == float(trace["r"])
        assert trace.wall_time >= 0


def test_standalone_run_writes_events_numpy_reads(tmp_path):
    """`--standalone --output` writes one array per named quantity (zip CRCs checked by numpy)."""
    import subprocess

    out = tmp_path / "events.npz"
    exe = probexec.get_simulator("gum").path()
    subprocess.run(
        [str(exe), "--standalone", "--seed", "2", "--traces", "500", "--output", str(out), "--quiet"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with np.load(out, allow_pickle=False) as f:
        assert set(f.files) == {"mu", "obs", "obs__mean"}
        mu, obs, mean = f["mu"], f["obs"], f["obs__mean"]
    assert mu.shape == (500,) and obs.shape == (500, 2)
    np.testing.assert_array_equal(mean, np.stack([mu, mu], axis=1))
    assert_moments(mu, 1.0, SQRT5, "standalone gum mu")
    # The simulated observations scatter around mu with sigma sqrt(2).
    assert_moments((obs - mean).ravel(), 0.0, math.sqrt(2), "standalone gum obs - mu")
