"""Empirical: weighted statistics checked against hand computations and known distributions.

Statistical tolerances are derived from the sample size (or the ESS for weighted samples), with
fixed seeds, so that a failure means a wrong estimator rather than bad luck.
"""

from __future__ import annotations

import json
import math
import sys
import zipfile

import numpy as np
import pytest

from probexec.empirical import Empirical


def normal_logpdf(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def assert_within(estimate: float, exact: float, se: float, what: str, k: float = 4.0) -> None:
    assert abs(estimate - exact) < k * se, f"{what}: {estimate:.5f} vs {exact:.5f}, > {k} SE = {k * se:.5f}"


# ---------------------------------------------------------------- moments and weights


def test_weighted_mean_and_std_match_numpy():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    w = np.array([0.1, 0.2, 0.3, 0.4])
    e = Empirical(x, np.log(w) + 123.0, name="x")  # an offset on the log weights changes nothing
    mean = np.sum(w * x)
    var = np.sum(w * (x - mean) ** 2)
    assert e.mean == pytest.approx(mean, rel=1e-14)
    assert e.variance == pytest.approx(var, rel=1e-13)
    assert e.stddev == pytest.approx(math.sqrt(var), rel=1e-13)
    assert e.mean == pytest.approx(np.average(x, weights=w), rel=1e-14)
    np.testing.assert_allclose(e.weights, w, rtol=1e-14)
    np.testing.assert_array_equal(e.log_weights, np.log(w) + 123.0)
    assert isinstance(e.mean, float)
    assert e.num_samples == 4 and len(e) == 4 and e.present_fraction == pytest.approx(1.0)


def test_huge_log_weights_are_normalised_stably():
    e = Empirical([0.0, 1.0], [-1e5, -1e5 + math.log(3.0)])
    np.testing.assert_allclose(e.weights, [0.25, 0.75], rtol=1e-12)
    assert e.mean == pytest.approx(0.75)


def test_unweighted_matches_numpy_population_moments():
    x = np.random.default_rng(1).normal(size=101)
    e = Empirical(x)
    assert not e.is_weighted
    assert e.mean == pytest.approx(np.mean(x), rel=1e-12)
    assert e.stddev == pytest.approx(np.std(x), rel=1e-12)
    np.testing.assert_array_equal(e.log_weights, np.zeros(101))


def test_ess_equal_weights_and_one_dominant():
    assert Empirical(np.arange(50.0)).ess == pytest.approx(50.0, rel=1e-12)
    assert Empirical(np.arange(50.0), np.full(50, -3.0)).ess == pytest.approx(50.0, rel=1e-12)
    lw = np.full(50, -40.0)
    lw[7] = 0.0
    ess = Empirical(np.arange(50.0), lw).ess
    assert 1.0 <= ess < 1.0 + 1e-12


def test_nan_rows_are_absent():
    x = np.array([1.0, np.nan, 3.0, np.nan, 5.0])
    w = np.array([1.0, 2.0, 1.0, 4.0, 2.0])
    e = Empirical(x, np.log(w), name="branch")
    assert e.num_samples == 3 and len(e) == 5
    assert e.present_fraction == pytest.approx((1 + 1 + 2) / 10)
    np.testing.assert_allclose(e.weights, [0.25, 0.25, 0.5])
    assert e.mean == pytest.approx(0.25 * 1 + 0.25 * 3 + 0.5 * 5)
    np.testing.assert_array_equal(e.values, [1.0, 3.0, 5.0])
    np.testing.assert_array_equal(e.present, [True, False, True, False, True])


def test_vector_row_with_any_nan_is_absent():
    x = np.array([[1.0, 2.0], [np.nan, 0.0], [3.0, 4.0]])
    e = Empirical(x)
    assert e.num_samples == 2
    assert e.present_fraction == pytest.approx(2 / 3)
    np.testing.assert_allclose(e.mean, [2.0, 3.0])


def test_all_absent_is_allowed_but_has_no_statistics():
    e = Empirical([np.nan, np.nan], name="never")
    assert e.num_samples == 0 and e.present_fraction == 0.0 and e.ess == 0.0
    assert "never" in repr(e)
    with pytest.raises(ValueError, match="no present sample"):
        _ = e.mean


def test_neg_inf_and_nan_log_weights_are_zero_weight():
    x = np.array([1.0, 100.0, 3.0, -50.0])
    lw = np.array([0.0, -np.inf, 0.0, np.nan])
    e = Empirical(x, lw)
    assert e.mean == pytest.approx(2.0)
    assert e.ess == pytest.approx(2.0)
    assert e.num_samples == 4  # present rows, whatever their weight
    assert e.quantile(0.0) == 1.0 and e.quantile(1.0) == 3.0  # zero-weight rows never returned
    np.testing.assert_array_equal(e.log_weights[:3], lw[:3])  # raw weights kept as given
    inf_row = Empirical([1.0, np.inf, 3.0], [0.0, -np.inf, 0.0])
    assert inf_row.mean == 2.0 and inf_row.stddev == 1.0  # no 0 * inf = NaN


def test_invalid_weights_raise():
    with pytest.raises(ValueError, match="every log weight is -inf"):
        Empirical([1.0, 2.0], [-np.inf, -np.inf])
    with pytest.raises(ValueError, match="every log weight"):
        Empirical([1.0, 2.0], [np.nan, -np.inf])
    with pytest.raises(ValueError, match=r"\+inf"):
        Empirical([1.0, 2.0], [0.0, np.inf])
    with pytest.raises(ValueError, match="length 3 but values has 2 rows"):
        Empirical([1.0, 2.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="shape"):
        Empirical(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="at least one sample"):
        Empirical([])
    with pytest.raises(ValueError, match="numeric"):
        Empirical(["a", "b"])


def test_arrays_are_read_only_copies():
    x = np.array([1.0, 2.0])
    e = Empirical(x)
    x[0] = 99.0
    assert e.mean == 1.5
    with pytest.raises(ValueError):
        e.values[0] = 5.0


# ---------------------------------------------------------------- quantiles


@pytest.mark.parametrize("n", [1, 2, 10, 37, 1000])
def test_unweighted_quantiles_equal_numpy_inverted_cdf(n):
    x = np.random.default_rng(n).normal(size=n)
    q = np.concatenate([np.linspace(0.0, 1.0, 101), [0.3, 0.7, 0.05, 0.95, 1 / 3]])
    e = Empirical(x)
    np.testing.assert_array_equal(e.quantile(q), np.quantile(x, q, method="inverted_cdf"))
    assert e.median == np.quantile(x, 0.5, method="inverted_cdf")
    # equal but non-zero log weights must give exactly the same answer
    np.testing.assert_array_equal(
        Empirical(x, np.full(n, -7.25)).quantile(q), np.quantile(x, q, method="inverted_cdf")
    )


def test_weighted_quantile_by_hand():
    e = Empirical([3.0, 1.0, 2.0], np.log([0.5, 0.2, 0.3]))
    # sorted: 1 (cum 0.2), 2 (cum 0.5), 3 (cum 1.0)
    np.testing.assert_array_equal(e.quantile([0.0, 0.19, 0.21, 0.49, 0.51, 1.0]), [1, 1, 2, 2, 3, 3])
    assert isinstance(e.quantile(0.3), float)


def test_vector_quantiles_are_per_component():
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.normal(size=200), rng.exponential(size=200)])
    e = Empirical(x)
    q = [0.1, 0.5, 0.9]
    np.testing.assert_array_equal(e.quantile(q), np.quantile(x, q, axis=0, method="inverted_cdf"))
    assert e.quantile(0.5).shape == (2,)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        e.quantile(1.5)


def test_credible_interval_of_standard_normal():
    n = 200_000
    x = np.random.default_rng(11).normal(size=n)
    lo, hi = Empirical(x).credible_interval(0.9)
    z = 1.6448536269514722
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    se = math.sqrt(0.05 * 0.95 / n) / pdf
    assert_within(lo, -z, se, "5% quantile")
    assert_within(hi, z, se, "95% quantile")
    with pytest.raises(ValueError, match="mass"):
        Empirical(x).credible_interval(0.0)


# ---------------------------------------------------------------- importance sampling


def importance_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Proposal N(0, sd 2), target N(1, sd 1): weights are bounded, so the estimators are well behaved."""
    x = np.random.default_rng(seed).normal(0.0, 2.0, size=n)
    return x, normal_logpdf(x, 1.0, 1.0) - normal_logpdf(x, 0.0, 2.0)


def test_importance_sampling_recovers_target_moments():
    x, lw = importance_sample(40_000, seed=5)
    e = Empirical(x, lw, name="mu")
    assert 0.3 * len(e) < e.ess < len(e)  # weights do vary, but not wildly
    se_mean = 1.0 / math.sqrt(e.ess)  # target sd 1
    se_std = 1.0 / math.sqrt(2.0 * e.ess)  # sd of a normal's sample sd
    assert_within(e.mean, 1.0, se_mean, "IS mean")
    assert_within(e.stddev, 1.0, se_std, "IS std")


def test_resample_preserves_mean():
    x, lw = importance_sample(20_000, seed=6)
    e = Empirical(x, lw)
    r = e.resample(50_000, rng=np.random.default_rng(7))
    assert not r.is_weighted and len(r) == 50_000 and r.ess == pytest.approx(50_000)
    assert_within(r.mean, e.mean, e.stddev / math.sqrt(50_000), "resampled mean")
    assert set(np.unique(r.values)) <= set(e.values)
    # a seed gives a reproducible stream; default n is num_samples
    np.testing.assert_array_equal(e.resample(rng=3).values, e.resample(rng=3).values)
    assert len(e.resample(rng=1)) == e.num_samples
    s = e.sample(10, rng=4)
    assert s.shape == (10,)
    np.testing.assert_array_equal(s, e.resample(10, rng=4).values)


def test_resample_skips_absent_and_zero_weight_rows():
    e = Empirical([1.0, np.nan, 2.0, 9.0], [0.0, 0.0, 0.0, -np.inf])
    assert set(e.resample(1000, rng=0).values) == {1.0, 2.0}


# ---------------------------------------------------------------- discrete values


def test_probabilities_and_map_on_discrete_values():
    x = np.array([0, 1, 1, 2, 2, 2, 5])
    lw = np.log([1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 3.0])
    e = Empirical(x, lw)
    p = e.probabilities()
    assert list(p) == [0, 1, 2, 5]
    assert all(isinstance(k, int) for k in p)
    total = 1 + 2 + 1.5 + 3
    for k, mass in {0: 1 / total, 1: 2 / total, 2: 1.5 / total, 5: 3 / total}.items():
        assert p[k] == pytest.approx(mass)
    assert sum(p.values()) == pytest.approx(1.0)
    assert e.map == 5 and isinstance(e.map, int)
    assert Empirical(x).map == 2  # unweighted: the most frequent value
    assert Empirical([3, 1, 3, 1]).map == 1  # ties go to the smaller value


def test_map_rejects_continuous_values():
    e = Empirical([0.5, 1.5, 2.0])
    assert not e.is_discrete
    with pytest.raises(ValueError, match="histogram"):
        _ = e.map
    with pytest.raises(ValueError, match="histogram"):
        e.probabilities()


def test_vector_map_and_scalar_only_methods():
    e = Empirical([[1, 0], [1, 0], [0, 1]])
    np.testing.assert_array_equal(e.map, [1.0, 0.0])
    with pytest.raises(ValueError, match="scalar"):
        e.probabilities()
    with pytest.raises(ValueError, match="scalar"):
        e.histogram()


def test_histogram_is_weighted():
    e = Empirical([0.1, 0.2, 0.8], np.log([1.0, 1.0, 2.0]))
    h, edges = e.histogram(bins=2, range=(0.0, 1.0), density=False)
    np.testing.assert_allclose(h, [0.5, 0.5])
    np.testing.assert_allclose(edges, [0.0, 0.5, 1.0])
    hd, _ = e.histogram(bins=2, range=(0.0, 1.0))
    np.testing.assert_allclose(hd, [1.0, 1.0])  # densities over bins of width 0.5


# ---------------------------------------------------------------- vectors, combining


def test_vector_means():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(500, 3)) + np.array([1.0, -2.0, 0.5])
    lw = rng.normal(size=500)
    e = Empirical(x, lw)
    w = np.exp(lw - lw.max())
    w /= w.sum()
    np.testing.assert_allclose(e.mean, w @ x, rtol=1e-12)
    np.testing.assert_allclose(e.stddev, np.sqrt(w @ (x - w @ x) ** 2), rtol=1e-12)
    assert e.event_shape == (3,) and e.mean.shape == (3,)
    s = e.summary()
    assert isinstance(s["mean"], list) and len(s["mean"]) == 3


def test_combine_equals_one_run_on_concatenation():
    x1, lw1 = importance_sample(300, seed=1)
    x2, lw2 = importance_sample(500, seed=2)
    x1[4] = np.nan
    combined = Empirical.combine([Empirical(x1, lw1, "mu"), Empirical(x2, lw2, "mu")])
    whole = Empirical(np.concatenate([x1, x2]), np.concatenate([lw1, lw2]), "mu")
    assert combined.name == "mu" and len(combined) == 800
    assert combined.mean == whole.mean and combined.stddev == whole.stddev and combined.ess == whole.ess
    np.testing.assert_array_equal(combined.quantile([0.1, 0.5, 0.9]), whole.quantile([0.1, 0.5, 0.9]))
    assert combined.present_fraction == whole.present_fraction

    chains = Empirical.combine([Empirical([1.0, 2.0]), Empirical([3.0])], name="c")
    assert not chains.is_weighted and chains.mean == 2.0 and chains.name == "c"


def test_combine_refuses_incompatible_runs():
    with pytest.raises(ValueError, match="at least one"):
        Empirical.combine([])
    with pytest.raises(ValueError, match="mix weighted"):
        Empirical.combine([Empirical([1.0]), Empirical([1.0], [0.0])])
    with pytest.raises(ValueError, match="event shapes"):
        Empirical.combine([Empirical([1.0]), Empirical([[1.0, 2.0]])])


# ---------------------------------------------------------------- files


def test_save_load_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(50, 2))
    x[3, 1] = np.nan
    lw = rng.normal(size=50) - 1e4
    lw[5] = -np.inf
    e = Empirical(x, lw, name="θ vector")
    p = e.save(tmp_path / "post.npz")
    assert p == tmp_path / "post.npz" and sorted(f.name for f in tmp_path.iterdir()) == ["post.npz"]
    back = Empirical.load(p)
    assert back.name == e.name and back.is_weighted
    np.testing.assert_array_equal(back.raw_values, e.raw_values)
    np.testing.assert_array_equal(back.log_weights, e.log_weights)
    np.testing.assert_array_equal(back.mean, e.mean)

    u = Empirical([1.0, 2.0, np.nan], name="")
    u.save(tmp_path / "u.bin")  # no suffix added
    ub = Empirical.load(tmp_path / "u.bin")
    assert not ub.is_weighted and ub.name == "" and ub.present_fraction == u.present_fraction


def test_load_truncated_file(tmp_path):
    p = Empirical(np.arange(1000.0), np.zeros(1000)).save(tmp_path / "a.npz")
    data = p.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 0):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a valid Empirical file"):
            Empirical.load(bad)


def test_load_missing_key_wrong_dtype_version_and_pickle(tmp_path):
    meta = np.array(json.dumps({"format_version": 1, "name": "x", "weighted": True}))
    p = tmp_path / "m.npz"
    np.savez(p, values=np.zeros(3), meta=meta)
    with pytest.raises(ValueError, match=r"missing.*log_weights"):
        Empirical.load(p)

    np.savez(p, values=np.zeros(3, dtype=np.int64), log_weights=np.zeros(3), meta=meta)
    with pytest.raises(ValueError, match="dtype int64"):
        Empirical.load(p)

    np.savez(p, values=np.zeros(3), log_weights=np.zeros(4), meta=meta)
    with pytest.raises(ValueError, match="shape"):
        Empirical.load(p)

    meta2 = np.array(json.dumps({"format_version": 2, "name": "x"}))
    np.savez(p, values=np.zeros(3), log_weights=np.zeros(3), meta=meta2)
    with pytest.raises(ValueError, match="format_version 2"):
        Empirical.load(p)

    np.savez(p, values=np.zeros(3), log_weights=np.zeros(3), meta=np.array("{not json"))
    with pytest.raises(ValueError, match="JSON"):
        Empirical.load(p)

    np.savez(p, values=np.array([{"evil": 1}, 2, 3], dtype=object), log_weights=np.zeros(3), meta=meta)
    with pytest.raises(ValueError, match="pickle"):
        Empirical.load(p)

    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single"):
        Empirical.load(tmp_path / "single.npy")

    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a valid Empirical file"):
        Empirical.load(tmp_path / "text.npz")

    with pytest.raises(FileNotFoundError):
        Empirical.load(tmp_path / "nope.npz")
    assert zipfile.is_zipfile(Empirical([1.0]).save(tmp_path / "ok.npz"))


# ---------------------------------------------------------------- export, repr


def test_summary_and_repr():
    e = Empirical([1.0, 2.0, 3.0], name="k")
    s = e.summary()
    assert s == {"mean": 2.0, "std": pytest.approx(math.sqrt(2 / 3)), "ess": 3.0, "num_samples": 3.0}
    assert all(isinstance(v, float) for v in s.values())
    r = repr(e)
    assert r.startswith("Empirical(name='k', N=3, ESS=3.0, mean=2") and "std=0.8165" in r


def test_to_arviz_without_arviz_raises_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)  # makes `import arviz` fail
    with pytest.raises(ImportError, match="install arviz"):
        Empirical([1.0, 2.0]).to_arviz()


def test_to_arviz():
    pytest.importorskip("arviz")
    x, lw = importance_sample(400, seed=10)
    idata = Empirical(x, lw, name="mu").to_arviz(rng=0)
    draws = np.asarray(idata.posterior["mu"].values)
    assert draws.shape == (1, 400)
    assert set(np.unique(draws)) <= set(x)
    vec = Empirical(np.ones((5, 2)), name="v").to_arviz()
    assert np.asarray(vec.posterior["v"].values).shape == (1, 5, 2)
