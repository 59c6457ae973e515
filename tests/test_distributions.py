"""Tests for probexec.distributions: densities against hand-written closed forms (which pins the
parameter order of every wire type), sample moments, support handling, validation and wire round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probexec.distributions import (
    SUPPORT_KINDS,
    WIRE_TYPES,
    Bernoulli,
    Beta,
    Binomial,
    Categorical,
    Distribution,
    Exponential,
    Gamma,
    LogNormal,
    Mixture,
    Normal,
    Poisson,
    TruncatedNormal,
    Uniform,
    Weibull,
    from_wire,
    wire_type_name,
)

N_DRAWS = 200_000
LOG_2PI = math.log(2 * math.pi)


def gen(seed: int = 1234) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- closed-form densities ------------------------------------------------------------------------
# Asymmetric parameter values, so a swapped parameter order changes the numbers.

CLOSED_FORMS = [
    (
        Normal(1.5, 2.0),
        [-3.0, 0.0, 1.5, 4.2],
        lambda x: -0.5 * ((x - 1.5) / 2.0) ** 2 - math.log(2.0) - 0.5 * LOG_2PI,
    ),
    (Uniform(-1.0, 3.0), [-0.5, 0.0, 2.9], lambda x: -math.log(4.0)),
    (Categorical([0.2, 0.3, 0.5]), [0, 1, 2], lambda k: math.log([0.2, 0.3, 0.5][int(k)])),
    (Categorical([2.0, 3.0, 5.0]), [0, 1, 2], lambda k: math.log([0.2, 0.3, 0.5][int(k)])),
    (Poisson(3.5), [0, 1, 4, 11], lambda k: k * math.log(3.5) - 3.5 - math.lgamma(k + 1)),
    (Bernoulli(0.3), [0, 1], lambda k: math.log(0.3) if k == 1 else math.log(0.7)),
    (
        Beta(2.5, 1.5),
        [0.1, 0.5, 0.93],
        lambda x: (
            1.5 * math.log(x)
            + 0.5 * math.log(1 - x)
            - (math.lgamma(2.5) + math.lgamma(1.5) - math.lgamma(4.0))
        ),
    ),
    (Exponential(2.5), [0.0, 0.3, 2.0], lambda x: math.log(2.5) - 2.5 * x),
    (
        Gamma(3.0, 2.0),
        [0.2, 1.0, 3.7],
        lambda x: 3.0 * math.log(2.0) + 2.0 * math.log(x) - 2.0 * x - math.lgamma(3.0),
    ),
    (
        LogNormal(0.3, 0.7),
        [0.2, 1.0, 5.0],
        lambda x: -math.log(x) - math.log(0.7) - 0.5 * LOG_2PI - (math.log(x) - 0.3) ** 2 / (2 * 0.49),
    ),
    (
        Binomial(7, 0.3),
        [0, 2, 7],
        lambda k: math.log(math.comb(7, int(k))) + k * math.log(0.3) + (7 - k) * math.log(0.7),
    ),
    (
        Weibull(2.0, 1.5),
        [0.1, 1.0, 4.0],
        lambda x: math.log(1.5 / 2.0) + 0.5 * math.log(x / 2.0) - (x / 2.0) ** 1.5,
    ),
]


@pytest.mark.parametrize(("dist", "points", "formula"), CLOSED_FORMS, ids=lambda v: repr(v)[:40])
def test_log_prob_matches_closed_form(dist, points, formula):
    got = dist.log_prob(torch.tensor(points, dtype=torch.float64))
    assert got.dtype == torch.float64
    expected = torch.tensor([formula(float(x)) for x in points], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_log_prob_accepts_python_and_numpy_values():
    d = Normal(0.0, 1.0)
    assert d.log_prob(0.0).item() == pytest.approx(-0.5 * LOG_2PI)
    assert d.log_prob(np.array([0.0, 1.0])).shape == (2,)


# --- sample moments -------------------------------------------------------------------------------

MOMENT_CASES = [
    Normal([0.0, 1.0, -2.0], [1.0, 0.5, 3.0]),
    Uniform(-1.0, 3.0),
    Categorical([0.1, 0.2, 0.3, 0.4]),
    Categorical([[0.5, 0.5, 0.0], [0.1, 0.1, 0.8]]),
    Poisson([0.7, 12.0]),
    Bernoulli(0.3),
    Beta(2.5, 1.5),
    Beta(0.3, 0.4),
    Exponential(2.5),
    Gamma([0.5, 3.0], 2.0),
    LogNormal(0.3, 0.7),
    Binomial(7, 0.3),
    Weibull(2.0, 1.5),
    TruncatedNormal(0.0, 1.0, -0.5, 2.0),
    TruncatedNormal(1.0, 2.0, 3.0, float("inf")),
    TruncatedNormal([0.0, 0.0], 1.0, [8.0, -12.0], [9.0, -11.0]),
    Mixture([Normal(-2.0, 0.5), Normal(1.0, 1.0), Exponential(1.0)], [0.2, 0.5, 0.3]),
]


@pytest.mark.parametrize("dist", MOMENT_CASES, ids=lambda d: repr(d)[:50])
def test_sample_moments(dist):
    x = dist.sample((N_DRAWS,), generator=gen())
    assert x.dtype == torch.float64
    assert x.shape == (N_DRAWS, *dist.batch_shape)
    n = x.shape[0]
    mean, var = dist.mean.expand(dist.batch_shape), dist.variance.expand(dist.batch_shape)
    sample_mean = x.mean(0)
    assert torch.all((sample_mean - mean).abs() <= 4 * (var / n).sqrt()), (sample_mean, mean)
    # Standard error of the sample variance from the sample fourth central moment.
    centred = x - sample_mean
    m4 = (centred**4).mean(0)
    sample_var = centred.pow(2).mean(0)
    se_var = ((m4 - sample_var**2) / n).sqrt()
    assert torch.all((sample_var - var).abs() <= 4 * se_var + 1e-15), (sample_var, var)
    torch.testing.assert_close(dist.stddev.expand(dist.batch_shape), var.sqrt())


@pytest.mark.parametrize("dist", MOMENT_CASES[:13], ids=lambda d: type(d).__name__)
def test_samples_are_in_support_and_reproducible(dist):
    a = dist.sample((1000,), generator=gen(7))
    b = dist.sample((1000,), generator=gen(7))
    assert torch.equal(a, b)
    assert torch.all(torch.isfinite(dist.log_prob(a)))
    assert dist.support_kind in SUPPORT_KINDS
    if dist.support_kind.startswith("discrete") or dist.support_kind == "boolean":
        assert torch.equal(a, a.round())


def test_sample_without_generator_and_scalar_shape():
    assert Normal(0.0, 1.0).sample().shape == ()
    assert Exponential([1.0, 2.0]).sample(5).shape == (5, 2)
    assert Categorical([[0.2, 0.8]] * 3).sample((4, 5)).shape == (4, 5, 3)
    mix = Mixture([Normal([0.0, 1.0], 1.0), Normal([5.0, 6.0], 1.0)], [0.5, 0.5])
    assert mix.sample((2,)).shape == (2, 2)


# --- support handling -----------------------------------------------------------------------------

OUT_OF_SUPPORT = [
    (Normal(0.0, 1.0), [float("nan")]),
    (Uniform(-1.0, 3.0), [-1.5, 3.0, 10.0]),
    (Categorical([0.2, 0.3, 0.5]), [-1.0, 0.5, 3.0]),
    (Categorical([0.5, 0.0, 0.5]), [1.0]),
    (Poisson(3.5), [-1.0, 2.5]),
    (Bernoulli(0.3), [-1.0, 0.5, 2.0]),
    (Bernoulli(0.0), [1.0]),
    (Bernoulli(1.0), [0.0]),
    (Beta(2.5, 1.5), [-0.1, 1.1]),
    (Exponential(2.5), [-0.1]),
    (Gamma(3.0, 2.0), [-1.0]),
    (LogNormal(0.3, 0.7), [0.0, -1.0]),
    (Binomial(7, 0.3), [-1.0, 1.5, 8.0]),
    (Binomial(7, 0.0), [1.0]),
    (Binomial(7, 1.0), [6.0]),
    (Weibull(2.0, 1.5), [-1.0, 0.0]),
    (TruncatedNormal(0.0, 1.0, -1.0, 2.0), [-1.01, 2.01]),
    (Mixture([Uniform(0.0, 1.0), Uniform(2.0, 3.0)], [0.5, 0.5]), [1.5, -1.0]),
]


@pytest.mark.parametrize(("dist", "values"), OUT_OF_SUPPORT, ids=lambda v: repr(v)[:40])
def test_out_of_support_is_minus_inf(dist, values):
    lp = dist.log_prob(torch.tensor(values, dtype=torch.float64))
    assert torch.all(lp == -math.inf), lp


def test_degenerate_parameters_keep_certain_outcomes_finite():
    assert Bernoulli(1.0).log_prob(1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert Binomial(4, 0.0).log_prob(0.0).item() == pytest.approx(0.0, abs=1e-12)
    assert Poisson(0.0).log_prob(0.0).item() == 0.0


def test_support_bounds():
    lo, hi = Uniform(-1.0, 3.0).support_bounds
    assert (lo.item(), hi.item()) == (-1.0, 3.0)
    assert Categorical([0.1, 0.2, 0.7]).support_bounds[1].item() == 2.0
    assert Binomial(7, 0.3).support_bounds[1].item() == 7.0
    assert TruncatedNormal(0.0, 1.0, 0.0, float("inf")).support_kind == "positive"
    assert TruncatedNormal(0.0, 1.0, -1.0, 1.0).support_kind == "interval"
    assert Mixture([Exponential(1.0), Gamma(2.0, 1.0)], [0.5, 0.5]).support_kind == "positive"
    assert Mixture([Exponential(1.0), Uniform(-1.0, 1.0)], [0.5, 0.5]).support_kind == "interval"
    assert Mixture([Poisson(1.0), Bernoulli(0.5)], [0.5, 0.5]).support_kind == "discrete_nonnegative"


# --- validation -----------------------------------------------------------------------------------

INVALID = [
    (Normal, (0.0, 0.0), "stddev"),
    (Normal, (0.0, -1.0), "stddev"),
    (Normal, (float("nan"), 1.0), "mean"),
    (Normal, ([0.0, 1.0], [1.0, float("nan")]), "stddev"),
    (Uniform, (1.0, 1.0), "low"),
    (Uniform, (2.0, 1.0), "low"),
    (Uniform, (0.0, float("inf")), "high"),
    (Categorical, ([0.5, -0.1, 0.6],), "probs"),
    (Categorical, ([0.0, 0.0],), "probs"),
    (Categorical, ([0.5, float("nan")],), "probs"),
    (Categorical, (0.5,), "probs"),
    (Poisson, (-1.0,), "rate"),
    (Bernoulli, (1.5,), "probs"),
    (Bernoulli, (float("nan"),), "probs"),
    (Beta, (0.0, 1.0), "concentration1"),
    (Beta, (1.0, -2.0), "concentration0"),
    (Exponential, (0.0,), "rate"),
    (Gamma, (-1.0, 1.0), "concentration"),
    (Gamma, (1.0, 0.0), "rate"),
    (LogNormal, (0.0, 0.0), "scale"),
    (LogNormal, (float("inf"), 1.0), "loc"),
    (Binomial, (2.5, 0.5), "total_count"),
    (Binomial, (-1.0, 0.5), "total_count"),
    (Binomial, (3.0, 1.1), "probs"),
    (Weibull, (0.0, 1.0), "scale"),
    (Weibull, (1.0, -1.0), "concentration"),
    (TruncatedNormal, (0.0, -1.0, 0.0, 1.0), "stddev"),
    (TruncatedNormal, (0.0, 1.0, 1.0, 0.0), "low"),
    (TruncatedNormal, (0.0, 1.0, float("nan"), 1.0), "low"),
    (Normal, ([0.0, 1.0], [1.0, 1.0, 1.0]), "stddev"),
]


@pytest.mark.parametrize(("cls", "args", "param"), INVALID, ids=lambda v: repr(v)[:30])
def test_invalid_parameters_raise_naming_the_parameter(cls, args, param):
    with pytest.raises(ValueError, match=param) as info:
        cls(*args)
    assert cls.__name__ in str(info.value)


def test_validation_message_shows_bad_value_and_index():
    with pytest.raises(ValueError, match=r"stddev=-3\.0.*index \(1,\)"):
        Normal([0.0, 0.0], [1.0, -3.0])


def test_validate_false_skips_checks():
    d = Normal(0.0, -1.0, validate=False)
    assert d.params()[1].item() == -1.0


# --- TruncatedNormal ------------------------------------------------------------------------------

TRUNCATED = [
    (0.0, 1.0, -0.5, 2.0),
    (1.0, 2.0, 3.0, math.inf),
    (0.0, 1.0, -math.inf, -3.0),
    (0.0, 1.0, 8.0, 9.0),
    (0.0, 1.0, 40.0, 41.0),
    (2.0, 0.1, -math.inf, math.inf),
]


@pytest.mark.parametrize(("mu", "sigma", "low", "high"), TRUNCATED)
def test_truncated_normal(mu, sigma, low, high):
    d = TruncatedNormal(mu, sigma, low, high)
    x = d.sample((N_DRAWS,), generator=gen(3))
    assert torch.all((x >= low) & (x <= high))
    assert torch.all(torch.isfinite(d.log_prob(x)))
    se = (d.variance / N_DRAWS).sqrt()
    assert abs(x.mean() - d.mean) <= 4 * se

    # The density integrates to one, and its first two moments agree with the closed forms.
    lo = low if math.isfinite(low) else mu - 15 * sigma
    hi = high if math.isfinite(high) else max(lo, mu) + 15 * sigma
    grid = torch.linspace(lo, hi, 400_001, dtype=torch.float64)
    density = d.log_prob(grid).exp()
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-4)
    m1 = torch.trapezoid(grid * density, grid)
    m2 = torch.trapezoid((grid - m1) ** 2 * density, grid)
    assert m1.item() == pytest.approx(d.mean.item(), abs=1e-4 * sigma)
    assert m2.item() == pytest.approx(d.variance.item(), rel=1e-3)


def test_truncated_normal_matches_normal_inside_bounds():
    d, base = TruncatedNormal(0.5, 2.0, -1.0, 3.0), torch.distributions.Normal(0.5, 2.0)
    z = (base.cdf(torch.tensor(3.0)) - base.cdf(torch.tensor(-1.0))).double()
    x = torch.tensor([-1.0, 0.0, 2.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(d.log_prob(x), base.log_prob(x) - z.log(), rtol=1e-6, atol=1e-6)


# --- Mixture --------------------------------------------------------------------------------------


def test_mixture_log_prob_is_log_weighted_sum():
    comps = [Normal(-1.0, 0.5), Gamma(2.0, 1.0), Uniform(0.0, 4.0)]
    w = torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)
    mix = Mixture(comps, w)
    x = torch.tensor([-1.5, -0.2, 0.5, 2.0, 4.5], dtype=torch.float64)
    expected = sum((wk / w.sum()) * c.log_prob(x).exp() for wk, c in zip(w, comps, strict=True)).log()
    torch.testing.assert_close(mix.log_prob(x), expected)
    torch.testing.assert_close(mix.params()[0], w / w.sum())


def test_mixture_of_discrete_and_batched_weights():
    mix = Mixture([Poisson([1.0, 2.0]), Binomial(5, [0.5, 0.9])], [[0.3, 0.7], [1.0, 0.0]])
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    p0 = 0.3 * math.exp(-1) / 6 + 0.7 * math.comb(5, 3) * 0.5**5
    p1 = math.exp(-2) * 2**4 / 24
    torch.testing.assert_close(
        mix.log_prob(x), torch.tensor([[math.log(p0), math.log(p1)]], dtype=torch.float64)
    )
    s = mix.sample((N_DRAWS,), generator=gen(5))
    assert torch.all(torch.abs(s.mean(0) - mix.mean) <= 4 * (mix.variance / N_DRAWS).sqrt())


def test_mixture_rejects_bad_structure():
    with pytest.raises(ValueError, match="batch shape"):
        Mixture([Normal([0.0, 1.0], 1.0), Normal(0.0, 1.0)], [0.5, 0.5])
    with pytest.raises(ValueError, match="weights"):
        Mixture([Normal(0.0, 1.0), Normal(1.0, 1.0)], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="weights"):
        Mixture([Normal(0.0, 1.0), Normal(1.0, 1.0)], [1.0, -1.0])
    with pytest.raises(ValueError, match="continuous and discrete"):
        Mixture([Normal(0.0, 1.0), Poisson(1.0)], [0.5, 0.5])
    with pytest.raises(ValueError, match="at least one"):
        Mixture([], [])


# --- wire -----------------------------------------------------------------------------------------

WIRE_EXAMPLES = {
    1: (Normal(1.5, 2.0), [0.3, -2.0]),
    2: (Uniform([-1.0, 0.0], 3.0), [[0.5, 2.5]]),
    3: (Categorical([1.0, 2.0, 7.0]), [0.0, 2.0]),
    4: (Poisson(3.5), [0.0, 5.0]),
    5: (Bernoulli(0.3), [0.0, 1.0]),
    6: (Beta(2.5, 1.5), [0.2, 0.9]),
    7: (Exponential(2.5), [0.1, 3.0]),
    8: (Gamma(3.0, 2.0), [0.4, 2.0]),
    9: (LogNormal(0.3, 0.7), [0.5, 2.0]),
    10: (Binomial(7, 0.3), [0.0, 3.0]),
    11: (Weibull(2.0, 1.5), [0.5, 3.0]),
}


def test_wire_table_covers_all_eleven_types_in_order():
    assert sorted(WIRE_TYPES) == list(range(1, 12))
    for t, cls in WIRE_TYPES.items():
        assert cls.wire_type == t
        assert issubclass(cls, Distribution)
    assert [wire_type_name(t) for t in range(1, 12)] == [
        "Normal",
        "Uniform",
        "Categorical",
        "Poisson",
        "Bernoulli",
        "Beta",
        "Exponential",
        "Gamma",
        "LogNormal",
        "Binomial",
        "Weibull",
    ]
    assert "99" in wire_type_name(99)
    assert TruncatedNormal.wire_type == 0
    assert Mixture.wire_type == 0


@pytest.mark.parametrize("wire_type", sorted(WIRE_EXAMPLES))
def test_from_wire_round_trip(wire_type):
    dist, values = WIRE_EXAMPLES[wire_type]
    assert dist.wire_type == wire_type
    params = dist.params()
    assert len(params) == len(dist.param_names)
    rebuilt = from_wire(wire_type, [p.numpy() for p in params])
    assert type(rebuilt) is type(dist)
    v = torch.tensor(values, dtype=torch.float64)
    torch.testing.assert_close(rebuilt.log_prob(v), dist.log_prob(v), rtol=0, atol=0)
    assert repr(rebuilt) == repr(dist)
    assert type(dist).__name__ in repr(dist)
    assert dist.param_names[0] in repr(dist)


def test_from_wire_errors():
    with pytest.raises(ValueError, match="42"):
        from_wire(42, [1.0])
    with pytest.raises(ValueError, match="Normal"):
        from_wire(1, [0.0])
    with pytest.raises(ValueError, match="stddev"):
        from_wire(1, [0.0, -1.0])
    assert from_wire(1, [0.0, -1.0], validate=False).params()[1].item() == -1.0
