"""Sequential Monte Carlo with likelihood tempering: a reference posterior where MCMC chains stick.

Why: on the tau decay the image likelihood is so sharp that each RMH chain stays in the decay
channel it first finds (split-R-hat of the channel is infinite over 4 chains), and importance
sampling from the prior keeps a handful of traces out of tens of thousands. Neither tells the
channel probabilities. A population that is moved from the prior to the posterior in small
steps can: every channel keeps the particles it deserves at each step, while single-site MH
moves (the RMH kernel, tempered) spread them within it.

The sampler (adaptive tempering, e.g. Jasra et al. 2011, "Inference for Lévy-driven stochastic
volatility models via adaptive sequential Monte Carlo"): particles start from the prior. At
inverse temperature beta each carries the weight L^(beta' - beta) to the next beta', chosen so
that the weights' ESS is `ess_fraction` of the particles; they are then resampled (systematic)
and each makes `moves` sweeps of single-site MH steps targeting prior x L^beta' (a sweep has as
many steps as the trace has controlled draws, so a 17-state HMM is moved as much as a GUM). At
beta = 1 the weighted particles are the posterior sample. The product of the mean incremental weights estimates the evidence p(y).

Each MH step is one simulator run, so a run costs about particles x stages x moves x draws
simulator runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from probexec.empirical import _log_sum_exp
from probexec.errors import ProbexecError
from probexec.inference.pool import ModelPool
from probexec.inference.result import Posterior, kish_ess, without_big_observations
from probexec.inference.rmh import _Chain, _State
from probexec.inference.strata import DEFAULT_KEEP_NATS, stratified, stratum_values  # noqa: F401 (its home was here)
from probexec.model import Model
from probexec.trace import SAMPLE, TraceBatch


def next_beta(log_lik: np.ndarray, beta: float, ess_fraction: float) -> float:
    """The largest beta' in (beta, 1] whose incremental weights L^(beta' - beta) keep an ESS of at
    least `ess_fraction` of the (equally weighted) particles; bisection, as that ESS falls as
    beta' grows."""
    target = ess_fraction * len(log_lik)
    if kish_ess((1.0 - beta) * log_lik) >= target:
        return 1.0
    lo, hi = 0.0, 1.0 - beta
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if kish_ess(mid * log_lik) >= target:
            lo = mid
        else:
            hi = mid
    # At least a sliver of progress: a bisection that found nothing must not loop for ever.
    return min(1.0, beta + max(lo, 1e-12))


def systematic_resample(log_w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of `len(log_w)` particles drawn in proportion to their weights, with one uniform
    draw (the lowest-variance of the usual schemes)."""
    n = len(log_w)
    w = np.exp(log_w - np.max(log_w))
    c = np.cumsum(w / w.sum())
    c[-1] = 1.0
    return np.searchsorted(c, (rng.random() + np.arange(n)) / n, side="right").clip(0, n - 1)


def smc(
    target: Model | ModelPool,
    num_particles: int,
    observe: Mapping[str, Any],
    *,
    moves: int = 5,
    ess_fraction: float = 0.5,
    max_stages: int = 1000,
    latents: Sequence[str] | None = None,
    seed: int | None = None,
    step_scale: float = 0.5,
    progress: bool | None = None,
) -> Posterior:
    """`num_particles` weighted traces from the posterior, by tempering the likelihood from 0 to 1
    (see the module's text). `moves` sweeps of MH steps per particle and stage; a stage's
    temperature is chosen so that the weights keep `ess_fraction` of the particles.

    The random walk's scale (`step_scale` times a site's prior stddev) adapts between stages: it
    halves while fewer than 15 % of the moves are accepted and doubles (up to `step_scale`) while
    more than 50 % are; each stage's rate is in `stats["acceptance_rates"]`.

    `stats["log_evidence"]` estimates log p(y); `stats["betas"]` are the stages' temperatures.
    The first generation draws prior traces until each has a finite joint density; the
    evidence counts the share that had."""
    if num_particles < 2:
        raise ValueError(f"SMC needs at least 2 particles, got {num_particles}")
    if moves < 1 or not 0.0 < ess_fraction < 1.0:
        raise ValueError("moves must be >= 1 and ess_fraction in (0, 1)")
    t0 = time.perf_counter()
    root = np.random.SeedSequence(seed)
    rng = np.random.default_rng(root.spawn(1)[0])
    from tqdm import tqdm

    bar = tqdm(
        desc=f"SMC {target.name}",
        unit="run",
        disable=not (progress if progress is not None else num_particles * moves >= 2000),
    )
    counts = {"accepted": 0, "proposed": 0, "failed": 0}

    def each(run: Any) -> list[Any]:
        """`run(chain, index, state)` for every particle, on the pool's simulators."""
        seeds = root.spawn(1)[0].generate_state(num_particles, dtype=np.uint64)  # one stream a stage

        def job(model: Model, i: int, state: _State | None) -> Any:
            chain = _Chain(model, observe, np.random.default_rng(int(seeds[i])), scale)
            out = run(chain, state)
            with lock:
                for k in counts:
                    counts[k] += getattr(chain, k)
                bar.update(chain.proposed + chain.init_attempts)
            return out

        jobs: list[_State | None] = list(particles) if particles else [None] * num_particles
        if isinstance(target, ModelPool):
            return target.map(jobs, job)
        return [job(target, i, s) for i, s in enumerate(jobs)]

    lock = threading.Lock()
    scale = step_scale
    particles: list[_State] = []

    def first(chain: _Chain, _: Any) -> tuple[_State, int]:
        s = chain.init()
        return _slim(s), chain.init_attempts

    try:
        got = each(first)
        particles = [s for s, _ in got]
        attempts = sum(a for _, a in got)
        log_z = math.log(num_particles / attempts)
        beta, betas, rates = 0.0, [0.0], []
        log_w = np.zeros(num_particles)
        while beta < 1.0:
            if len(betas) > max_stages:
                raise ProbexecError(
                    f"SMC on {target.name!r}: beta reached only {beta:.3g} after {max_stages} stages; "
                    "use a smaller ess_fraction (bigger steps) or a larger max_stages"
                )
            log_lik = np.array([p.log_lik for p in particles])
            new = next_beta(log_lik, beta, ess_fraction)
            inc = (new - beta) * log_lik
            log_z += _log_sum_exp(inc) - math.log(num_particles)  # log of the mean weight
            beta = new
            betas.append(beta)
            log_w = inc
            if beta >= 1.0:
                break  # the weighted particles are the posterior sample
            idx = systematic_resample(log_w, rng)
            particles = [particles[int(i)] for i in idx]
            before = dict(counts)

            def move(chain: _Chain, state: _State, b: float = beta) -> _State:
                for _ in range(moves):  # sweeps: as many single-site steps as the trace has sites
                    for _ in range(max(1, len(state.values))):
                        state = chain.step(state, b)
                return _slim(state)

            particles = each(move)
            proposed = counts["proposed"] - before["proposed"]
            rate = (counts["accepted"] - before["accepted"]) / proposed if proposed else float("nan")
            rates.append(rate)
            if rate < 0.15:
                scale = max(scale * 0.5, 1e-6 * step_scale)
            elif rate > 0.5:
                scale = min(scale * 2.0, step_scale)
    finally:
        bar.close()
    batch = TraceBatch.concat([p.trace for p in particles])
    names = list(latents) if latents is not None else batch.addresses.names(kind=SAMPLE)
    return Posterior(
        engine="smc",
        traces=batch,
        log_weights=log_w - np.max(log_w),
        latents=names,
        seconds=time.perf_counter() - t0,
        dropped=counts["failed"],
        stats={
            "log_evidence": log_z,
            "betas": betas,
            "stages": len(betas) - 1,
            "acceptance_rates": rates,
            "acceptance_rate": counts["accepted"] / counts["proposed"]
            if counts["proposed"]
            else float("nan"),
            "moves": moves,
            "ess_fraction": ess_fraction,
            "simulator_runs": counts["proposed"] + attempts,
            "unique_particles": len({id(p) for p in particles}),
            "final_step_scale": scale,
        },
    )


def _slim(state: _State) -> _State:
    """The state with its trace's wide observations kept as their log-density: hundreds of
    particles with a 0.6 MB calorimeter image each would fill the memory."""
    state.trace = without_big_observations(state.trace)
    return state


def stratified_smc(
    target: Model | ModelPool,
    num_particles: int,
    observe: Mapping[str, Any],
    stratum: str,
    *,
    values: Sequence[float] | None = None,
    latents: Sequence[str] | None = None,
    seed: int | None = None,
    pilot: int = 0,
    keep_nats: float = DEFAULT_KEEP_NATS,
    **options: Any,
) -> Posterior:
    """SMC once for each value of the discrete latent `stratum`, `num_particles` each, combined by
    their evidence (`strata.py` says why: on one tau event two unstratified runs put 0.9 on
    different channels). `stats["strata"]` has each value's log-evidence, probability, ESS and
    stages; a value no trace can have gets probability 0. `pilot`: a run of that many particles
    per value first, then a second run per value in the running with the rest (`strata.pooled`
    combines the two by their evidence)."""
    ran: list[dict[str, Any]] = []

    def describe(post: Posterior) -> dict[str, Any]:
        ran.append(post.stats)
        keep = ("stages", "unique_particles", "acceptance_rate", "simulator_runs")
        return {k: post.stats[k] for k in keep}

    post = stratified(
        lambda obs, s, n: smc(target, n, obs, latents=latents, seed=s, **options),
        observe,
        stratum,
        values,
        num_traces=num_particles,
        engine="smc",
        pilot=pilot,
        keep_nats=keep_nats,
        target=target,
        seed=seed,
        latents=latents,
        describe=describe,
    )
    post.stats.update(
        simulator_runs=sum(st["simulator_runs"] for st in ran),
        moves=ran[0]["moves"],
        ess_fraction=ran[0]["ess_fraction"],
    )
    return post
