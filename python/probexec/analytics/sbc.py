"""Simulation-based calibration (Talts et al. 2018), for any engine.

Draw a truth θ* and an observation x* from the prior, run inference on x*, and take the rank of
θ* among L posterior draws. If the engine is calibrated, averaging the posterior over the prior
gives back the prior, so the rank is uniform on 0..L. A ∪-shaped histogram means posteriors too
narrow (overconfident), ∩-shaped too wide, a slope a bias. Uniformity is tested with a χ² test on
grouped ranks (p-value from the regularised upper incomplete gamma function).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class SBCResult:
    engine: str
    num_draws: int  # L: posterior draws per simulation, so ranks lie in 0..L
    ranks: dict[str, np.ndarray]  # per latent, one rank per simulation where the latent occurred

    def uniformity(self, bins: int | None = None) -> dict[str, dict[str, float]]:
        """χ² statistic, degrees of freedom and p-value of "the ranks are uniform", per latent."""
        out = {}
        for name, r in self.ranks.items():
            n = len(r)
            k = bins or int(max(2, min(self.num_draws + 1, n // 5, 20)))
            counts = rank_histogram(r, self.num_draws, k)
            # Expected counts: bin j holds the rank values that map to it (bins may be unequal).
            per_value = np.bincount((np.arange(self.num_draws + 1) * k) // (self.num_draws + 1), minlength=k)
            expected = n * per_value / (self.num_draws + 1)
            chi2 = float(np.sum((counts - expected) ** 2 / expected))
            dof = k - 1
            out[name] = {"simulations": n, "bins": k, "chi2": chi2, "dof": dof, "p_value": chi2_sf(chi2, dof)}
        return out


def rank_histogram(ranks: np.ndarray, num_draws: int, bins: int) -> np.ndarray:
    """Counts of ranks (0..num_draws) grouped into `bins` bins of (nearly) equal width."""
    return np.bincount((np.asarray(ranks, dtype=np.int64) * bins) // (num_draws + 1), minlength=bins)


def chi2_sf(x: float, dof: int) -> float:
    """P(χ²_dof > x)."""
    import torch

    return float(
        torch.special.gammaincc(
            torch.tensor(dof / 2.0, dtype=torch.float64), torch.tensor(x / 2.0, dtype=torch.float64)
        )
    )


def rank_of(truth: float, draws: np.ndarray, rng: np.random.Generator) -> int:
    """Number of draws below the truth; ties (discrete latents) broken uniformly at random."""
    below = int(np.sum(draws < truth))
    ties = int(np.sum(draws == truth))
    return below + (int(rng.integers(0, ties + 1)) if ties else 0)


def posterior_draws(post: Any, name: str, num_draws: int, rng: np.random.Generator) -> np.ndarray | None:
    """L draws of a latent from a posterior: resampled by weight (importance sampling), or thinned
    evenly from the chains (MCMC, whose samples are already equally weighted)."""
    try:
        e = post[name]
    except (KeyError, ValueError):
        return None
    if e.num_samples == 0 or e.values.ndim != 1:
        return None
    if e.is_weighted:
        return e.resample(num_draws, rng).values
    idx = np.linspace(0, e.num_samples - 1, num_draws).round().astype(np.int64)
    return e.values[idx]


def simulation_based_calibration(
    target: Any,
    engine: str,
    num_simulations: int,
    num_traces: int,
    *,
    latents: Sequence[str],
    observed: Sequence[str] | None = None,
    num_draws: int = 99,
    seed: int = 0,
    progress: bool = False,
    **engine_options: Any,
) -> SBCResult:
    """`num_simulations` rounds of truth → observation → `engine` posterior with `num_traces`
    traces → rank of the truth among `num_draws` posterior draws. `target` is a model or a pool;
    `observed` defaults to every observation the model makes."""
    from tqdm import tqdm

    from probexec.inference import run_engine
    from probexec.inference.prior import sample_prior
    from probexec.trace import OBSERVE

    if num_simulations < 1 or num_draws < 1:
        raise ValueError("num_simulations and num_draws must be at least 1")
    rng = np.random.default_rng(seed)
    seeds = np.random.SeedSequence(seed).generate_state(2 * num_simulations, dtype=np.uint64)
    ranks: dict[str, list[int]] = {n: [] for n in latents}
    for i in tqdm(range(num_simulations), desc=f"SBC {engine}", unit="sim", disable=not progress):
        truth = sample_prior(target, 1, seed=int(seeds[2 * i]), progress=False)
        names = list(observed) if observed is not None else truth.addresses.names(kind=OBSERVE)
        obs = {}
        for n in names:
            v = truth.values_of(n)[0]
            obs[n] = v.tolist() if np.ndim(v) else float(v)
        post = run_engine(
            target,
            engine,
            num_traces,
            obs,
            seed=int(seeds[2 * i + 1]),
            progress=False,
            latents=list(latents),
            **engine_options,
        )
        for n in latents:
            try:
                t = float(truth.values_of(n)[0])
            except KeyError:
                continue
            if not math.isfinite(t):
                continue  # the latent did not occur in the truth's trace
            draws = posterior_draws(post, n, num_draws, rng)
            if draws is not None and len(draws) == num_draws:
                ranks[n].append(rank_of(t, draws, rng))
    return SBCResult(engine, num_draws, {n: np.array(r, dtype=np.int64) for n, r in ranks.items()})
