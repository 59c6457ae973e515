"""Random-walk Metropolis–Hastings over whole traces (single-site, "lightweight" MH).

One step: pick one controlled draw of the current trace uniformly, propose a new value for it
(a Gaussian random walk for continuous types, a fresh prior draw for discrete ones), and re-run
the simulator with every other controlled draw replayed from the current trace (matched by address
id and instance). Draws the new trace has and the old one had not ("fresh") come from the prior;
draws the old one had and the new one has not are "stale". The acceptance ratio that keeps the
posterior exact when the trace structure changes (the branching and Marsaglia models) is

    log a = log p(x') - log p(x) + log |C(x)| - log |C(x')| + log q(x_k | x') - log q(x'_k | x)
            + sum_stale log p(x_s) - sum_fresh log p(x'_f)

with C the controlled draws and p the joint (priors of the controlled draws and the likelihood).
Uncontrolled draws are made by the simulator from their prior on every run, so they cancel.
This is the gold standard that inference compilation is compared with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probexec.distributions import from_wire
from probexec.errors import NoFiniteTraceError, ProbexecError, SimulatorError
from probexec.handlers import Condition, Draw, Handler, PriorProposal
from probexec.inference.pool import ModelPool
from probexec.inference.result import Posterior, without_big_observations
from probexec.model import Model
from probexec.trace import (
    FLAG_CONTROLLED,
    FLAG_OBSERVED,
    FLAG_SIMULATED,
    OBSERVE,
    SAMPLE,
    TraceBatch,
    TraceBatchBuilder,
)

CONTINUOUS = {1, 2, 6, 7, 8, 9, 11}  # Normal Uniform Beta Exponential Gamma LogNormal Weibull
POSITIVE = {7, 8, 9, 11}

Key = tuple[int, int]  # (address id, instance)


class Replay(Handler):
    """Reuses the current trace's controlled values, except at the site being proposed."""

    def __init__(self, values: Mapping[Key, Any], site: Key | None = None, proposal: Any = None) -> None:
        self.values, self.site, self.proposal = values, site, proposal

    def on_sample(self, draw: Draw) -> None:
        if draw.value is not None or not draw.control:
            return
        key = (draw.address_id, draw.instance)
        if key == self.site:
            draw.value = self.proposal
        else:
            v = self.values.get(key)
            if v is not None:
                draw.value = v


@dataclass
class _State:
    trace: TraceBatch  # one trace
    values: dict[Key, Any]  # controlled sample values
    site_logp: dict[Key, float]  # their prior log-densities
    site_info: dict[Key, tuple[int, np.ndarray]]  # dist type, flat params
    log_joint: float
    log_lik: float  # the observations' part of log_joint (SMC tempers it)

    @property
    def log_prior(self) -> float:
        return self.log_joint - self.log_lik


def _state_of(batch: TraceBatch) -> _State:
    lp = batch.log_prob()
    values: dict[Key, Any] = {}
    site_logp: dict[Key, float] = {}
    info: dict[Key, tuple[int, np.ndarray]] = {}
    log_joint = log_lik = 0.0
    for r in range(batch.num_rows):
        kind = batch.kind[r]
        if kind == SAMPLE and batch.flags[r] & FLAG_CONTROLLED and not batch.flags[r] & FLAG_OBSERVED:
            key = (int(batch.address_id[r]), int(batch.instance[r]))
            v = batch.values[batch.value_offsets[r] : batch.value_offsets[r + 1]]
            shape = tuple(batch.shapes[batch.shape_offsets[r] : batch.shape_offsets[r + 1]])
            values[key] = float(v[0]) if not shape else v.reshape(shape).copy()
            site_logp[key] = float(lp[r])
            info[key] = (
                int(batch.dist_type[r]),
                batch.params[batch.param_offsets[r] : batch.param_offsets[r + 1]],
            )
            log_joint += float(lp[r])
        elif (kind == OBSERVE and not batch.flags[r] & FLAG_SIMULATED) or batch.flags[r] & FLAG_OBSERVED:
            log_joint += float(lp[r])
            log_lik += float(lp[r])
    return _State(batch, values, site_logp, info, log_joint, log_lik)


def _params_of(dist_type: int, flat: np.ndarray, size: int) -> list[np.ndarray]:
    if dist_type == 3:
        return [flat.reshape(size, -1) if size > 1 else flat]
    k = len(flat) // size
    return [
        flat[j * size : (j + 1) * size].reshape(()) if size == 1 else flat[j * size : (j + 1) * size]
        for j in range(k)
    ]


def _in_support(dist_type: int, params: list[np.ndarray], value: Any) -> bool:
    v = np.asarray(value)
    if dist_type == 2:
        return bool(np.all((v >= params[0]) & (v < params[1])))
    if dist_type == 6:
        return bool(np.all((v > 0) & (v < 1)))
    if dist_type in POSITIVE:
        return bool(np.all(v > 0))
    return bool(np.all(np.isfinite(v)))


class _Chain:
    def __init__(
        self, model: Model, observe: Mapping[str, Any], rng: np.random.Generator, step_scale: float
    ) -> None:
        self.model, self.rng, self.step_scale = model, rng, step_scale
        self.condition = Condition(observe)
        self.accepted = 0
        self.proposed = 0
        self.failed = 0
        self.init_attempts = 0
        # One exchange per run where the model can replay a trace; draw by draw where it cannot, or
        # once the simulator leaves an observed sample unfixed (its value too big to send, or of
        # the wrong size: the per-draw path then says what is wrong).
        self.one_message = model.supports_replay
        self._observed_samples: tuple[int, np.ndarray] = (-1, np.zeros(0, np.uint64))

    def _run(self, replay: Replay) -> TraceBatch:
        seed = int(self.rng.integers(2**63))
        if self.one_message:
            values = dict(replay.values)
            if replay.site is not None:
                values[replay.site] = replay.proposal
            obs = self.condition.observations
            batch = self.model.replay(values, seed=seed, observed=obs)
            fixed = np.isin(batch.address_id, self._sample_ids_observed())
            if (batch.flags[fixed] & FLAG_OBSERVED).all():  # every observed sample was fixed
                if obs:
                    batch.condition(obs)
                return batch
            self.one_message = False
        builder = TraceBatchBuilder(self.model.addresses)
        self.model.run_trace([self.condition, replay, PriorProposal(self.rng)], builder, seed=seed)
        return builder.build()

    def _sample_ids_observed(self) -> np.ndarray:
        """Ids of samples whose name the user observes (looked up again when new addresses arrive)."""
        size, ids = self._observed_samples
        table = self.model.addresses
        if size != len(table):
            names = self.condition.observations
            ids = np.array([i for n in names for i in table.ids_named(n, SAMPLE)], dtype=np.uint64)
            self._observed_samples = (len(table), ids)
        return ids

    def init(self, values: Mapping[Key, Any] | None = None) -> _State:
        """A first trace with a finite joint (from the prior, or replaying saved values)."""
        for _ in range(1000):
            self.init_attempts += 1
            state = _state_of(self._run(Replay(values or {})))
            if np.isfinite(state.log_joint):
                return state
            values = None
        raise NoFiniteTraceError(
            f"RMH on {self.model.name!r}: no trace with a finite joint density in 1000 prior draws"
        )

    def step(self, cur: _State, beta: float = 1.0) -> _State:
        """One MH step targeting prior x likelihood^beta (beta < 1: a tempered posterior, for SMC)."""
        keys = list(cur.values)
        if not keys:
            return cur
        self.proposed += 1
        k = keys[int(self.rng.integers(len(keys)))]
        dt, flat = cur.site_info[k]
        x = cur.values[k]
        size = int(np.size(x))
        params = _params_of(dt, flat, size)
        if dt in CONTINUOUS:
            dist = from_wire(dt, params, validate=False)
            scale = self.step_scale * np.asarray(dist.stddev.detach().numpy(), dtype=np.float64)
            proposal = x + scale * self.rng.standard_normal(np.shape(x))
            proposal = float(proposal) if np.ndim(proposal) == 0 else proposal
            log_q_ratio = 0.0  # symmetric
            if not _in_support(dt, params, proposal):
                return cur  # density 0: rejected without running the simulator
        else:
            from probexec.distributions.fast_sampling import sample_wire

            wire_params = [float(p) if np.ndim(p) == 0 else p for p in params]
            proposal = sample_wire(dt, wire_params, self.rng)
            log_q_ratio = None  # filled in below: q is the site's prior
        try:
            new = _state_of(self._run(Replay(cur.values, k, proposal)))
        except SimulatorError:
            self.failed += 1
            return cur
        if not np.isfinite(new.log_joint) or k not in new.values:
            return cur
        if log_q_ratio is None:
            log_q_ratio = cur.site_logp[k] - new.site_logp[k]
        fresh = [f for f in new.values if f not in cur.values]
        stale = [s for s in cur.values if s not in new.values]
        log_a = (
            new.log_prior
            - cur.log_prior
            + beta * (new.log_lik - cur.log_lik)
            + math.log(len(cur.values))
            - math.log(len(new.values))
            + log_q_ratio
            + sum(cur.site_logp[s] for s in stale)
            - sum(new.site_logp[f] for f in fresh)
        )
        if math.log(self.rng.random()) < log_a:
            self.accepted += 1
            return new
        return cur


def split_r_hat(chains: np.ndarray) -> float:
    """Split-R̂ (Gelman et al.) of one scalar over chains (rows); NaN when undefined."""
    n = chains.shape[1] // 2
    if chains.shape[0] < 1 or n < 2 or np.isnan(chains).any():
        return float("nan")
    halves = np.concatenate([chains[:, :n], chains[:, n : 2 * n]])
    w = halves.var(axis=1, ddof=1).mean()
    b = n * halves.mean(axis=1).var(ddof=1)
    if w == 0:
        return float("nan") if b == 0 else float("inf")
    return float(math.sqrt(((n - 1) / n * w + b / n) / w))


def mcmc_ess(chains: np.ndarray) -> float:
    """Effective sample size of one scalar over chains (rows), from the autocorrelation summed over
    Geyer's initial positive sequence; NaN when undefined. A chain that never moved is worth one
    draw (so chains stuck where they started report ESS = number of chains, not the sample count)."""
    m, n = chains.shape
    if n < 4 or np.isnan(chains).any():
        return float("nan")
    x = chains - chains.mean(axis=1, keepdims=True)
    var = x.var(axis=1)
    stuck = ~(var > 0)
    if stuck.all():
        return float(m)
    if stuck.any():
        return mcmc_ess(chains[~stuck]) + float(stuck.sum())
    f = np.fft.rfft(x, n=2 * n, axis=1)
    acov = np.fft.irfft(f * np.conj(f), axis=1)[:, :n] / n
    rho = (acov / var[:, None]).mean(axis=0)
    tau = -1.0
    for t in range(0, n - 1, 2):
        pair = rho[t] + rho[t + 1]
        if pair < 0:
            break
        tau += 2 * pair
    return float(m * n / max(tau, 1.0 / (m * n)))


def rmh(
    target: Model | ModelPool,
    num_samples: int,
    observe: Mapping[str, Any],
    *,
    chains: int = 4,
    burn_in: int = 0,
    thinning: int = 1,
    latents: Sequence[str] | None = None,
    seed: int | None = None,
    step_scale: float = 0.5,
    resume: str | Path | None = None,
    progress: bool | None = None,
    keep_observations: bool = False,
) -> Posterior:
    """`num_samples` kept samples in total, split over `chains` independent chains (run in parallel on
    a pool), each after `burn_in` steps and keeping every `thinning`-th step.

    `keep_observations`: keep every sample's wide observations (a calorimeter image and its
    per-voxel mean and stddev, 0.6 MB a sample). By default they are kept as their log-density
    alone: 16 000 samples of the tau decay with images took more than 24 GB."""
    if num_samples < 1:
        raise ValueError(f"the number of samples must be at least 1, got {num_samples}")
    if chains < 1 or thinning < 1 or burn_in < 0:
        raise ValueError("chains and thinning must be >= 1, burn_in >= 0")
    per_chain = -(-num_samples // chains)
    seeds = np.random.SeedSequence(seed).generate_state(chains, dtype=np.uint64)
    starts = load_chain_states(resume) if resume else [None] * chains
    if len(starts) != chains:
        raise ValueError(f"{resume} holds {len(starts)} chain states, {chains} chains were asked for")
    t0 = time.perf_counter()
    from tqdm import tqdm

    total_steps = chains * (burn_in + per_chain * thinning)
    bar = tqdm(
        total=total_steps,
        desc=f"RMH {target.name}",
        unit="step",
        disable=not (progress if progress is not None else total_steps >= 5000),
    )

    def run_chain(
        model: Model, c: int, _: Any
    ) -> tuple[list[TraceBatch], dict[Key, Any], tuple[int, int, int]]:
        chain = _Chain(model, observe, np.random.default_rng(int(seeds[c])), step_scale)
        state = chain.init(starts[c])
        kept: list[TraceBatch] = []
        last: tuple[TraceBatch, TraceBatch] | None = None  # (state's trace, as kept)
        for i in range(burn_in + per_chain * thinning):
            state = chain.step(state)
            if i >= burn_in and (i - burn_in) % thinning == thinning - 1:
                if last is None or last[0] is not state.trace:  # a rejected step keeps the same trace
                    t = state.trace
                    last = (t, t if keep_observations else without_big_observations(t))
                kept.append(last[1])
            if i % 100 == 99:
                bar.update(100)
        return kept, state.values, (chain.accepted, chain.proposed, chain.failed)

    try:
        if isinstance(target, ModelPool):
            results = target.map(list(range(chains)), run_chain)
        else:
            results = [run_chain(target, c, None) for c in range(chains)]
    finally:
        bar.close()
    batches = [b for r in results for b in r[0]]
    batch = TraceBatch.concat(batches)
    accepted = sum(r[2][0] for r in results)
    proposed = sum(r[2][1] for r in results)
    names = list(latents) if latents is not None else batch.addresses.names(kind=SAMPLE)
    r_hat, ess = {}, {}
    for name in names:
        try:
            v = batch.values_of(name)
        except KeyError:
            continue
        if v.ndim == 1:
            r_hat[name] = split_r_hat(v.reshape(chains, per_chain))
            ess[name] = mcmc_ess(v.reshape(chains, per_chain))
    return Posterior(
        engine="rmh",
        traces=batch,
        log_weights=np.zeros(batch.num_traces),
        latents=names,
        seconds=time.perf_counter() - t0,
        dropped=sum(r[2][2] for r in results),
        stats={
            "acceptance_rate": accepted / proposed if proposed else float("nan"),
            "acceptance_rate_per_chain": [r[2][0] / r[2][1] if r[2][1] else float("nan") for r in results],
            "chains": chains,
            "burn_in": burn_in,
            "thinning": thinning,
            "r_hat": r_hat,
            "ess_per_latent": ess,
        },
        chain_states=[r[1] for r in results],
    )


def save_chain_states(states: Sequence[Mapping[Key, Any]], path: str | Path) -> None:
    """Last controlled values of each chain (`.npz`, no pickle), to resume with `rmh(resume=path)`."""
    arrays: dict[str, np.ndarray] = {}
    for c, values in enumerate(states):
        keys = list(values)
        arrays[f"chain{c}/address_id"] = np.array([k[0] for k in keys], dtype=np.uint64)
        arrays[f"chain{c}/instance"] = np.array([k[1] for k in keys], dtype=np.uint32)
        flat = [np.ravel(np.asarray(values[k], dtype=np.float64)) for k in keys]
        arrays[f"chain{c}/offsets"] = np.concatenate([[0], np.cumsum([f.size for f in flat])]).astype(
            np.int64
        )
        arrays[f"chain{c}/values"] = np.concatenate(flat) if flat else np.zeros(0)
        arrays[f"chain{c}/scalar"] = np.array([np.ndim(values[k]) == 0 for k in keys])
    np.savez(path, num_chains=np.array(len(states)), **arrays)


def load_chain_states(path: str | Path) -> list[dict[Key, Any]]:
    p = Path(path)
    if p.is_dir():
        p = p / "rmh_state.npz"
    import zipfile

    try:
        with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            out = []
            for c in range(int(f["num_chains"])):
                ids, inst, off = f[f"chain{c}/address_id"], f[f"chain{c}/instance"], f[f"chain{c}/offsets"]
                vals, scalar = f[f"chain{c}/values"], f[f"chain{c}/scalar"]
                out.append(
                    {
                        (int(ids[i]), int(inst[i])): float(vals[off[i]])
                        if scalar[i]
                        else vals[off[i] : off[i + 1]].copy()
                        for i in range(len(ids))
                    }
                )
            return out
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ProbexecError(f"cannot resume RMH from {p}: {e}") from None
