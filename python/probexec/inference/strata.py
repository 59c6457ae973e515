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

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from probexec.empirical import _log_sum_exp
from probexec.errors import NoFiniteTraceError, ProbexecError
from probexec.inference.result import Posterior
from probexec.trace import SAMPLE, TraceBatch

# `run(observe, seed, num_traces)`: one engine's posterior given those observations.
# Engines whose two runs of a value can be pooled into one (`pooled`), so a pilot can precede them.
POOLED_ENGINES = ("is", "ic", "smc")
# How far below the best pilot evidence a value still shares the even half of the traces (nats).
DEFAULT_KEEP_NATS = 10.0
Runner = Callable[[Mapping[str, Any], int, int], Posterior]


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


def allocate(budget: int, probabilities: Sequence[float]) -> list[int]:
    """`budget` traces shared out in proportion to `probabilities`, whole numbers that add up to
    it: each share rounded down, the traces left over given to the largest remainders."""
    p = np.asarray(probabilities, dtype=float)
    if budget < 0 or not len(p) or np.any(~np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"cannot share {budget} traces out by {list(p)}")
    exact = budget * p / p.sum()
    shares = np.floor(exact).astype(int)
    left = budget - int(shares.sum())
    shares[np.argsort(-(exact - shares), kind="stable")[:left]] += 1
    return [int(x) for x in shares]


def pilot_shares(log_evidence: np.ndarray, keep_nats: float) -> np.ndarray:
    """Each value's share of the traces after the pilot: half in proportion to the pilot's
    probabilities, half evenly over the values whose pilot evidence is within `keep_nats` of
    the best.

    In proportion alone would be the share that minimises the variance of the total evidence,
    were the pilot's estimates good. They are not where it matters: a pilot of 40 tau traces a
    channel has an ESS of 1 or 2, and one lucky trace can put 0.99 on its channel. In proportion
    that channel then takes nearly every trace (IS on a tau event: 3 599 of 3 600, on a channel
    that SMC puts 4 nats below the best). The even half keeps every value still in the running
    sampled; a value `keep_nats` out would need e^10 times its pilot's luck to matter."""
    log_z = np.asarray(log_evidence, dtype=float)
    prob = _probabilities(log_z)
    kept = np.isfinite(log_z) & (log_z >= np.max(log_z) - keep_nats)
    return 0.5 * prob + 0.5 * kept / kept.sum()


def _probabilities(log_z: np.ndarray) -> np.ndarray:
    """Each value's probability from its log-evidence; -inf gives 0."""
    finite = np.isfinite(log_z)
    if not finite.any():
        raise ValueError("no value has a finite pilot evidence")
    prob = np.where(finite, np.exp(log_z - np.max(log_z[finite])), 0.0)
    return prob / prob.sum()


def pooled(first: Posterior, second: Posterior) -> Posterior:
    """Two independent runs for one value as one.

    Importance sampling (no evidence of its own in `stats`): both runs' unnormalised weights
    estimate the same p(y), so the traces are simply put together, and the evidence is the mean
    weight over both runs, dropped traces counting as 0.

    SMC: each run's evidence Z_r is unbiased and its particles, weighted among themselves,
    estimate the posterior. The runs are combined as if each particle carried its run's mean
    weight Z_r: the evidence is (N_1 Z_1 + N_2 Z_2) / (N_1 + N_2), still unbiased, and each run
    holds the share N_r Z_r of the posterior's mass. A run's normalised weights alone would give
    a pilot of 20 particles the same mass as a run of 2 000, however far apart their evidence."""
    if "log_evidence" not in first.stats and "log_evidence" not in second.stats:
        return Posterior(
            engine=first.engine,
            traces=TraceBatch.concat([first.traces, second.traces]),
            log_weights=np.concatenate([first.log_weights, second.log_weights]),
            latents=first.latents,
            seconds=first.seconds + second.seconds,
            dropped=first.dropped + second.dropped,
        )
    runs = (first, second)
    mass = [math.log(r.num_traces) + _evidence(r, r.engine) if r.num_traces else -math.inf for r in runs]
    total = _log_sum_exp(np.array(mass))
    if total == -math.inf:
        raise NoFiniteTraceError(f"{first.engine}: neither run of this value has a trace of finite weight")
    log_w = [
        r.log_weights - _log_sum_exp(r.log_weights) + m - total
        if m > -math.inf
        else np.full(r.num_traces, -math.inf)
        for r, m in zip(runs, mass, strict=True)
    ]
    stats = dict(second.stats)
    stats["log_evidence"] = total - math.log(first.num_traces + second.num_traces)
    stats["runs"] = [
        {"traces": r.num_traces, "log_evidence": _evidence(r, r.engine)}
        | ({"stages": r.stats["stages"]} if "stages" in r.stats else {})
        for r in runs
    ]
    for key in ("simulator_runs", "unique_particles"):
        if key in first.stats and key in second.stats:
            stats[key] = first.stats[key] + second.stats[key]
    return Posterior(
        engine=first.engine,
        traces=TraceBatch.concat([first.traces, second.traces]),
        log_weights=np.concatenate(log_w),
        latents=first.latents,
        seconds=first.seconds + second.seconds,
        dropped=first.dropped + second.dropped,
        stats=stats,
    )


def stratified(
    run: Runner,
    observe: Mapping[str, Any],
    stratum: str,
    values: Sequence[float] | None,
    *,
    num_traces: int,
    engine: str,
    pilot: int = 0,
    keep_nats: float = DEFAULT_KEEP_NATS,
    target: Any = None,
    seed: int | None = None,
    latents: Sequence[str] | None = None,
    describe: Callable[[Posterior], dict[str, Any]] | None = None,
) -> Posterior:
    """`run` once per value of `stratum`, that value observed, combined by each run's evidence.
    `values` None: every value the prior allows (`stratum_values` on `target`).

    `num_traces` per value; with a `pilot` (`POOLED_ENGINES`) each value gets `pilot` of them
    first, and the rest of the `num_traces` × values are then shared out by
    `pilot_shares` (the values within `keep_nats` of the best pilot), added to its pilot's
    traces. On a tau event half the channels lie 40 nats or more below the best: without a pilot
    they take half the traces and add nothing.

    A value no trace can have (no trace of finite weight) gets probability 0. `stats["strata"]`
    has, per value, its log-evidence, probability, ESS and traces (with a pilot also the pilot's
    probability and log-evidence), and what `describe` adds."""
    if stratum in observe:
        raise ValueError(f"{stratum!r} is observed; it cannot also be stratified over")
    if pilot and engine not in POOLED_ENGINES:
        raise ValueError(
            f"a pilot adds a second run to each value's first, which only {', '.join(POOLED_ENGINES)} can pool, not {engine}"
        )
    if not keep_nats >= 0:
        raise ValueError(
            f"keep_nats is how far below the best pilot a value stays in the running, >= 0; got {keep_nats}"
        )
    if pilot < 0 or (pilot and pilot >= num_traces):
        raise ValueError(
            f"the pilot ({pilot} traces a value) must be fewer than the {num_traces} traces a value"
        )
    vals = list(values) if values is not None else stratum_values(target, stratum)
    if not vals:
        raise ValueError(f"no values to stratify {stratum!r} over")
    t0 = time.perf_counter()
    # The first len(vals) states are the runs' seeds without a pilot; the pilot's second runs
    # take the next ones.
    seeds = [int(s) >> 1 for s in np.random.SeedSequence(seed).generate_state(2 * len(vals), dtype=np.uint64)]
    posts: list[Posterior | None] = []
    strata: dict[str, dict[str, Any]] = {}
    for v, s in zip(vals, seeds, strict=False):
        try:
            posts.append(run({**observe, stratum: [v]}, s, pilot or num_traces))
        except NoFiniteTraceError as e:
            strata[f"{v:g}"] = {"error": str(e)}
            posts.append(None)
    if pilot:
        log_z = np.array([_evidence(p, engine) for p in posts])
        if np.all(log_z == -math.inf):
            raise ProbexecError(
                f"{engine}: no value of {stratum!r} has a trace of finite weight in the pilot"
            )
        prob = _probabilities(log_z)
        shares = allocate((num_traces - pilot) * len(vals), pilot_shares(log_z, keep_nats))
        for i, (v, more) in enumerate(zip(vals, shares, strict=True)):
            strata.setdefault(f"{v:g}", {}).update(
                pilot_probability=float(prob[i]), pilot_log_evidence=float(log_z[i])
            )
            if more:
                assert posts[i] is not None  # a value that failed has probability 0
                try:
                    posts[i] = pooled(posts[i], run({**observe, stratum: [v]}, seeds[len(vals) + i], more))
                except NoFiniteTraceError:  # its traces all weigh 0: they still count in the mean
                    posts[i] = _with_empty_run(posts[i], more)
    parts: list[tuple[float, Posterior, float]] = []
    for v, post in zip(vals, posts, strict=True):
        entry = strata.setdefault(f"{v:g}", {})
        if post is None:
            entry.update(log_evidence=-math.inf, probability=0.0)
            continue
        lz = _evidence(post, engine)
        entry.update(log_evidence=lz, ess=post.ess, traces=post.num_traces)
        if describe is not None:
            entry.update(describe(post))
        if not math.isfinite(lz) or post.num_traces == 0:
            entry.update(probability=0.0, error="no trace of finite weight")
            continue
        parts.append((v, post, lz))
    if not parts:
        raise ProbexecError(f"{engine}: no value of {stratum!r} has a trace of finite weight")
    total = _log_sum_exp(np.array([lz for _, _, lz in parts]))
    log_w = []
    for v, post, lz in parts:
        log_w.append(post.log_weights - _log_sum_exp(post.log_weights) + (lz - total))
        strata[f"{v:g}"]["probability"] = float(np.exp(lz - total))
    names = list(latents) if latents is not None else [stratum, *parts[0][1].latents]
    stats: dict[str, Any] = {"log_evidence": total, "stratum": stratum, "strata": strata}
    if pilot:
        stats["pilot"] = pilot
    return Posterior(
        engine=engine,
        traces=TraceBatch.concat([p.traces for _, p, _ in parts]),
        log_weights=np.concatenate(log_w),
        latents=list(dict.fromkeys(names)),
        seconds=time.perf_counter() - t0,
        dropped=sum(p.dropped for _, p, _ in parts),
        stats=stats,
    )


def _with_empty_run(post: Posterior, traces: int) -> Posterior:
    """`post` pooled with a run of `traces` that all weigh 0 (none had a finite weight)."""
    if "log_evidence" not in post.stats:  # importance sampling: the dropped traces count as 0
        return dataclasses.replace(post, dropped=post.dropped + traces)
    n = post.num_traces
    stats = {**post.stats, "log_evidence": float(post.stats["log_evidence"]) + math.log(n / (n + traces))}
    return dataclasses.replace(post, dropped=post.dropped + traces, stats=stats)


def _evidence(post: Posterior | None, engine: str) -> float:
    """A run's log-evidence; -inf for a run that had no trace of finite weight."""
    if post is None:
        return -math.inf
    log_z = post.log_evidence
    if log_z is None:
        raise ValueError(f"engine {engine!r} gives no evidence estimate: its runs cannot be combined")
    return log_z if post.num_traces else -math.inf
