"""One inference per value of a discrete latent, the runs combined by their evidence.

A discrete choice that shapes the rest of a trace (the tau's decay channel) traps SMC particles
and MCMC chains: once they have settled in one channel, moving to another re-draws the whole
decay, which is never accepted. An importance sampler's proposal (the prior's branching ratios,
or a network's channel head) can also give a channel too few traces to find its posterior mass.
Fixing the value (it is observed, so its prior probability joins the likelihood) leaves each run
one value to explore, and each run's evidence estimate is then p(y, value). Every value's traces
carry the weight p(y, value) / p(y), shared out by their own normalised weights.

Any engine that estimates the evidence can run a stratum: SMC (`stratified_smc`), importance
sampling from the prior, and IC (`ic.stratified_ic`), whose network steps through the given
value as through a draw of its own, so that what it proposes after it is conditioned on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from probexec.empirical import _log_sum_exp
from probexec.errors import NoFiniteTraceError, ProbexecError
from probexec.inference.result import Posterior
from probexec.trace import SAMPLE, TraceBatch

# `run(observe, seed)`: one engine's posterior given those observations.
Runner = Callable[[Mapping[str, Any], int], Posterior]


def stratum_values(target: Any, name: str) -> list[float]:
    """Every value a discrete latent can take, from its prior in one prior trace of `target` (a
    model or a pool of them): a Categorical's classes, a Bernoulli's 0 and 1, a Binomial's 0..n.
    Other types need their values given."""
    from probexec.inference.prior import sample_prior

    batch = sample_prior(target, 1, seed=0, progress=False)
    ids = np.array(batch.addresses.ids_named(name, SAMPLE), dtype=np.uint64)
    rows = np.nonzero(np.isin(batch.address_id, ids))[0]
    if len(rows) == 0:
        raise ValueError(
            f"no sample named {name!r} in a prior trace of {target.name!r} "
            f"(samples: {', '.join(batch.addresses.names(kind=SAMPLE))})"
        )
    r = int(rows[0])
    dist_type = int(batch.dist_type[r])
    params = batch.params[batch.param_offsets[r] : batch.param_offsets[r + 1]]
    if dist_type == 3:  # Categorical: its probabilities
        return [float(k) for k in range(len(params))]
    if dist_type == 5:  # Bernoulli
        return [0.0, 1.0]
    if dist_type == 10:  # Binomial (n, p)
        return [float(k) for k in range(int(params[0]) + 1)]
    raise ValueError(
        f"{name!r} is not a Categorical, Bernoulli or Binomial draw (wire type {dist_type}): "
        "give the values to stratify over"
    )


def stratified(
    run: Runner,
    observe: Mapping[str, Any],
    stratum: str,
    values: Sequence[float] | None,
    *,
    engine: str,
    target: Any = None,
    seed: int | None = None,
    latents: Sequence[str] | None = None,
    describe: Callable[[Posterior], dict[str, Any]] | None = None,
) -> Posterior:
    """`run` once per value of `stratum`, that value observed, combined by each run's evidence.
    `values` None: every value the prior allows (`stratum_values` on `target`).

    A value no trace can have (no trace of finite weight) gets probability 0. `stats["strata"]`
    has, per value, its log-evidence, probability, ESS and traces, and what `describe` adds."""
    if stratum in observe:
        raise ValueError(f"{stratum!r} is observed; it cannot also be stratified over")
    vals = list(values) if values is not None else stratum_values(target, stratum)
    if not vals:
        raise ValueError(f"no values to stratify {stratum!r} over")
    t0 = time.perf_counter()
    seeds = np.random.SeedSequence(seed).generate_state(len(vals), dtype=np.uint64)
    parts: list[tuple[float, Posterior, float]] = []
    strata: dict[str, dict[str, Any]] = {}
    for v, s in zip(vals, seeds, strict=True):
        key = f"{v:g}"
        try:
            post = run({**observe, stratum: [v]}, int(s) >> 1)
        except NoFiniteTraceError as e:
            strata[key] = {"log_evidence": -math.inf, "probability": 0.0, "error": str(e)}
            continue
        log_z = post.log_evidence
        if log_z is None:
            raise ValueError(f"engine {engine!r} gives no evidence estimate: its runs cannot be combined")
        strata[key] = {"log_evidence": log_z, "ess": post.ess, "traces": post.num_traces}
        if describe is not None:
            strata[key].update(describe(post))
        if not math.isfinite(log_z) or post.num_traces == 0:
            strata[key].update(probability=0.0, error="no trace of finite weight")
            continue
        parts.append((v, post, log_z))
    if not parts:
        raise ProbexecError(f"{engine}: no value of {stratum!r} has a trace of finite weight")
    total = _log_sum_exp(np.array([lz for _, _, lz in parts]))
    log_w = []
    for v, post, lz in parts:
        log_w.append(post.log_weights - _log_sum_exp(post.log_weights) + (lz - total))
        strata[f"{v:g}"]["probability"] = float(np.exp(lz - total))
    names = list(latents) if latents is not None else [stratum, *parts[0][1].latents]
    return Posterior(
        engine=engine,
        traces=TraceBatch.concat([p.traces for _, p, _ in parts]),
        log_weights=np.concatenate(log_w),
        latents=list(dict.fromkeys(names)),
        seconds=time.perf_counter() - t0,
        dropped=sum(p.dropped for _, p, _ in parts),
        stats={"log_evidence": total, "stratum": stratum, "strata": strata},
    )
