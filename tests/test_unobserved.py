"""An observation nobody gave data for is simulated, and marginalised: it is not part of the
likelihood. Counting it weighted every trace by how likely its own simulated value was, which
biased the posterior wherever the noise depends on the latents (a Poisson rate) and cut the ESS
elsewhere."""

from __future__ import annotations

import math

import numpy as np
import pytest

import probexec
from conftest import assert_close
from probexec.inference import importance_sampling, rmh
from probexec.simulators import get_simulator
from probexec.trace import FLAG_SIMULATED, OBSERVE
from test_posterior import hmm_exact_marginals

HMM_OBS = get_simulator("hmm").default_observations


@pytest.mark.parametrize("mode", ["stream", "per_draw"])
def test_nothing_observed_leaves_the_prior(mode):
    """branching: obs ~ Poisson(rate(r)). Unobserved, every weight is 1 and r keeps its
    Poisson(4) prior; weighted by its own simulated obs, E[r] came out 4.28."""
    n = 20_000 if mode == "stream" else 4_000
    with probexec.RemoteModel("branching") as model:
        batch = model.prior(n, seed=0, mode=mode)
        rows = batch.kind == OBSERVE
        assert rows.any() and (batch.flags[rows] & FLAG_SIMULATED).all()
        np.testing.assert_array_equal(batch.log_likelihood(), 0.0)
        post = importance_sampling(model, n, {}, seed=1, progress=False)
    assert post.ess == pytest.approx(n)
    assert_close(post["r"].mean, 4.0, 2.0 / math.sqrt(n), f"E[r], nothing observed ({mode})")


def test_conditioning_makes_an_observation_data_again():
    with probexec.RemoteModel("hmm") as model:
        batch = model.prior(50, seed=2, mode="stream")
        batch.condition({"obs_1": HMM_OBS["obs_1"]})
    first = np.isin(batch.address_id, batch.addresses.ids_named("obs_1", OBSERVE))
    rest = (batch.kind == OBSERVE) & ~first
    assert first.any() and not (batch.flags[first] & FLAG_SIMULATED).any()
    assert (batch.flags[rest] & FLAG_SIMULATED).all()
    # The likelihood is obs_1's alone: N(y; mean(state_1), 1).
    means = np.array([-1.0, 1.0, 0.0])[batch.values_of("state_1").astype(int)]
    y = HMM_OBS["obs_1"][0]
    np.testing.assert_allclose(batch.log_likelihood(), -0.5 * (y - means) ** 2 - 0.5 * math.log(2 * math.pi))


def test_half_the_hmm_observed_matches_forward_backward():
    observe = {f"obs_{t}": HMM_OBS[f"obs_{t}"] for t in range(1, 9)}
    exact = hmm_exact_marginals(8)
    with probexec.RemoteModel("hmm") as model:
        post = importance_sampling(model, 40_000, observe, seed=3, progress=False)
        chain = rmh(model, 6_000, observe, chains=2, burn_in=500, seed=4, progress=False)
    assert post.ess > 0.025 * 40_000  # 0.039 here; 0.013 when the 8 simulated observations counted too
    for t in (4, 8, 12):
        p = exact[t, 2]
        for got, ess, what in ((post, post.ess, "IS"), (chain, chain.ess, "RMH")):
            share = float(np.mean(got.traces.values_of(f"state_{t}") == 2)) if what == "RMH" else None
            if share is None:
                w = np.exp(got.log_weights - got.log_weights.max())
                share = float(np.sum(w * (got.traces.values_of(f"state_{t}") == 2)) / w.sum())
            assert_close(share, p, math.sqrt(p * (1 - p) / ess), f"{what} P(state_{t} = 2)")
