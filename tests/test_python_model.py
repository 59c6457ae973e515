"""Models written in Python run through the same handlers and give the same records."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import probexec
from conftest import assert_moments
from probexec.distributions import Normal, Poisson, TruncatedNormal, Uniform


def gum():
    mu = probexec.sample(Normal(1.0, math.sqrt(5.0)), name="mu")
    probexec.observe(Normal(torch.stack([mu, mu]), math.sqrt(2.0)), name="obs")
    return mu


def helper_draw():
    return probexec.sample(Uniform(0.0, 1.0), name="u")


def two_call_sites():
    a = helper_draw()
    b = helper_draw()
    c = probexec.sample(TruncatedNormal(0.0, 1.0, 0.0, 2.0), name="t")
    probexec.tag(a + b, "ab")
    k = probexec.sample(Poisson(3.0), name="k")
    for _ in range(int(k.item()) % 3):
        probexec.sample(Normal(0.0, 1.0), name="loop")
    return c


def test_python_gum_prior_and_conditioning():
    model = probexec.PythonModel(gum)
    batch = model.prior(4000, seed=0, observe={"obs": [8.0, 9.0]})
    mu = batch.values_of("mu")
    assert_moments(mu, 1.0, math.sqrt(5.0), "python gum mu")
    expected = (
        -0.5 * ((8.0 - mu) ** 2 + (9.0 - mu) ** 2) / 2.0
        - 2 * math.log(math.sqrt(2.0))
        - math.log(2 * math.pi)
    )
    np.testing.assert_allclose(batch.log_likelihood(), expected, atol=1e-9)
    prior = -0.5 * (mu - 1.0) ** 2 / 5.0 - 0.5 * math.log(2 * math.pi * 5.0)
    np.testing.assert_allclose(batch.log_prior(), prior, atol=1e-9)


def test_python_addresses_follow_call_sites_and_instances():
    model = probexec.PythonModel(two_call_sites)
    batch = model.prior(300, seed=1)
    t = batch.trace(0)
    us = [v for v in t.variables if v.name == "u"]
    # Same line reached from two lines of the caller: two addresses, one instance each.
    assert len({v.address_id for v in us}) == 2 and [v.instance for v in us] == [1, 1]
    assert all("helper_draw" in v.address and "two_call_sites" in v.address for v in us)
    assert t.named("ab").tagged
    assert float(t["ab"]) == pytest.approx(float(us[0].value) + float(us[1].value))
    # A non-wire distribution gets its log-density from the object itself.
    tv = batch.values_of("t")
    assert ((tv >= 0) & (tv <= 2)).all()
    loops = [v for v in t.variables if v.name == "loop"]
    assert [v.instance for v in loops] == list(range(1, len(loops) + 1))
    assert len(set(batch.trace_types())) == 3


def test_python_model_runs_without_an_engine():
    value = gum()
    assert value.shape == () and torch.isfinite(value)
