"""IC on a simulator with a wide observation (the tau decay's 24 500-voxel image): by default the
driver scores the image as it arrives and keeps only its log-likelihood; the weights must be the
ones computed from the full rows."""

from __future__ import annotations

import numpy as np
import pytest

from probexec.inference.ic import ic_posterior
from probexec.inference.ic_drivers import ic_posterior_processes
from probexec.nn import NetworkMismatchError
from probexec.nn.training import build_network
from probexec.remote import RemoteModel
from probexec.trace import (
    FLAG_VALUE_OMITTED,
    NORMAL,
    OBSERVE,
    AddressTable,
    TraceBatch,
    TraceBatchBuilder,
    score_draw,
)
from test_ic import make_dataset


def test_score_draw_is_the_rows_log_prob():
    rng = np.random.default_rng(3)
    loc, scale = rng.normal(size=(4, 5, 7)), rng.uniform(0.1, 2.0, size=(4, 5, 7))
    value = rng.normal(size=(4, 5, 7))
    b = TraceBatchBuilder(AddressTable())
    b.add(1, 1, OBSERVE, 0, NORMAL, (loc, scale), value)
    b.add(2, 1, OBSERVE, 0, NORMAL, (0.5, 2.0), 1.5)
    b.end_trace(None, 0.0)
    lp = b.build().log_prob()
    assert score_draw(NORMAL, (loc, scale), value) == pytest.approx(lp[0], rel=1e-12)
    assert score_draw(NORMAL, (0.5, 2.0), 1.5) == pytest.approx(lp[1], rel=1e-12)
    # Image-sized draws take the wide path: a per-voxel scale, then one scale for every voxel.
    image = rng.normal(size=(4, 50, 50))
    for wide_scale in (rng.uniform(0.1, 2.0, size=image.shape), 0.7, rng.uniform(0.1, 2.0, size=(4, 1, 1))):
        b = TraceBatchBuilder(AddressTable())
        b.add(1, 1, OBSERVE, 0, NORMAL, (image * 0.9, wide_scale), image)
        b.end_trace(None, 0.0)
        want = b.build().log_prob()[0]
        assert score_draw(NORMAL, (image * 0.9, wide_scale), image) == pytest.approx(want, rel=1e-12)


def test_scored_images_give_the_weights_of_kept_images(tmp_path):
    ds = make_dataset(tmp_path / "tau", "tau_decay_fixed_spots", 24)
    groups = list(ds.iter_groups())
    net = build_network("tau_decay_fixed_spots", groups, [t.layout for t in ds.trace_types().values()])
    runs = {}
    for keep in (False, True):
        with RemoteModel("tau_decay_fixed_spots") as m:  # one in flight: the same draws both times
            obs = {"calorimeter": m.stream(1, seed=99).values_of("calorimeter")[0]}
            runs[keep] = ic_posterior(net, [m], 4, obs, seed=7, keep_observations=keep)
    scored, kept = runs[False], runs[True]
    np.testing.assert_allclose(scored.log_weights, kept.log_weights, rtol=1e-9)
    np.testing.assert_array_equal(scored.traces.values_of("px"), kept.traces.values_of("px"))
    images = (scored.traces.kind == OBSERVE) & (np.diff(kept.traces.value_offsets) >= 1024)
    assert images.sum() == 4
    assert np.all(scored.traces.flags[images] & FLAG_VALUE_OMITTED)
    assert scored.traces.params.size < kept.traces.params.size / 100
    # A trace with a scored image still reads as a trace: the image has its log-density, no value.
    t = scored.traces.trace(0)
    image = t.named("calorimeter")
    assert image.value is None and image.log_prob == pytest.approx(t.log_likelihood)


def test_driver_processes_report_a_network_that_cannot_load(tmp_path):
    """Every driver process fails to load the network: the error reaches the caller, and no driver
    waits for the others to start (each marks itself failed)."""
    bad = tmp_path / "not_a_network.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(NetworkMismatchError, match=r"not_a_network\.pt: not a readable probexec network"):
        ic_posterior_processes(bad, "gum", 10, {"obs": [8.0, 9.0]}, processes=2, in_flight=2, seed=0)


def test_rmh_keeps_images_as_their_log_likelihood_by_default(tmp_path):
    """16 000 RMH samples of the tau decay with their images took more than 24 GB: by default a
    kept sample holds its image's log-density alone, the same chain otherwise. A saved posterior
    keeps the images' log-densities too."""
    from probexec.inference.rmh import rmh

    runs = {}
    with RemoteModel("tau_decay_fixed_spots") as m:
        obs = {"calorimeter": m.stream(1, seed=99).values_of("calorimeter")[0]}
        for keep in (False, True):
            runs[keep] = rmh(m, 6, obs, chains=1, burn_in=2, seed=3, keep_observations=keep, progress=False)
    slim, full = runs[False], runs[True]
    np.testing.assert_array_equal(slim.traces.values_of("px"), full.traces.values_of("px"))
    np.testing.assert_allclose(slim.traces.log_likelihood(), full.traces.log_likelihood(), rtol=1e-12)
    assert np.isfinite(slim.traces.log_likelihood()).all()
    assert slim.traces.params.size < full.traces.params.size / 100
    full.save(tmp_path / "post")
    saved = TraceBatch.load(tmp_path / "post" / "traces.npz")
    assert saved.params.size < full.traces.params.size / 100
    np.testing.assert_allclose(saved.log_likelihood(), full.traces.log_likelihood(), rtol=1e-12)


def test_importance_sampling_keeps_images_as_their_log_likelihood_by_default():
    """32 000 tau traces of importance sampling with their images filled 24 GB and the OOM killer
    ended the run: each chunk now keeps its images as their log-density alone as it arrives."""
    from probexec.inference import importance_sampling, remote_pool

    with remote_pool("tau_decay_fixed_spots", workers=2) as pool:
        obs = {"calorimeter": pool.models[0].stream(1, seed=99).values_of("calorimeter")[0]}
        runs = {
            keep: importance_sampling(pool, 40, obs, seed=3, keep_observations=keep, progress=False)
            for keep in (False, True)
        }
    slim, full = runs[False], runs[True]
    np.testing.assert_array_equal(slim.traces.values_of("px"), full.traces.values_of("px"))
    np.testing.assert_allclose(slim.log_weights, full.log_weights, rtol=1e-12)
    assert np.isfinite(slim.log_weights).all()
    assert slim.traces.params.size < full.traces.params.size / 100
    assert slim.ess == pytest.approx(full.ess, rel=1e-12)


def test_smc_runs_on_the_tau_decay_and_keeps_no_images():
    """Tempered SMC on a calorimeter event: a few particles and stages, images held as their
    log-density only, channel probabilities that sum to one."""
    from probexec.inference import remote_pool, smc

    with remote_pool("tau_decay_fixed_spots", workers=2) as pool:
        obs = {"calorimeter": pool.models[0].stream(1, seed=99).values_of("calorimeter")[0]}
        post = smc(pool, 8, obs, seed=1, moves=1, ess_fraction=0.3, max_stages=400, progress=False)
    assert post.stats["betas"][-1] == 1.0 and post.stats["stages"] >= 2
    assert np.isfinite(post.stats["log_evidence"])
    assert post.traces.params.size < 8 * 24_500
    assert sum(post["channel"].probabilities().values()) == pytest.approx(1.0)
