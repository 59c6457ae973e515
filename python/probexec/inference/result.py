"""What every engine returns: weighted traces and, per named latent, an `Empirical` posterior."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probexec.empirical import Empirical
from probexec.trace import OBSERVE, TraceBatch

BIG_OBSERVATION = 1024


def without_big_observations(batch: TraceBatch) -> TraceBatch:
    """The batch with its wide observations (calorimeter images) kept as their log-density alone."""
    return batch.without_values(
        (batch.kind == OBSERVE) & (np.diff(batch.value_offsets) >= BIG_OBSERVATION), keep_log_prob=True
    )


def kish_ess(log_w: np.ndarray) -> float:
    """Kish's effective sample size (sum w)² / sum w² of finite log-weights; 0 for none."""
    if len(log_w) == 0:
        return 0.0
    w = np.exp(log_w - np.max(log_w))
    return float(w.sum() ** 2 / np.sum(w**2))


@dataclass
class Posterior:
    """Traces with log-weights (importance sampling) or equal weights (MCMC samples)."""

    engine: str
    traces: TraceBatch
    log_weights: np.ndarray
    latents: list[str]
    seconds: float
    dropped: int = 0  # traces whose weight was NaN or -inf, or that failed
    stats: dict[str, Any] = field(default_factory=dict)
    # MCMC: each chain's last controlled values, to resume from (see rmh.save_chain_states).
    chain_states: list[dict[tuple[int, int], Any]] | None = None

    @property
    def num_traces(self) -> int:
        return self.traces.num_traces

    def __getitem__(self, name: str) -> Empirical:
        return Empirical(self.traces.values_of(name), self.log_weights, name=name)

    @property
    def ess(self) -> float:
        """Importance sampling: Kish's ESS of the weights. MCMC: the smallest autocorrelation ESS
        over the scalar latents (the sample count overstates what correlated draws are worth)."""
        per_latent = [e for e in self.stats.get("ess_per_latent", {}).values() if np.isfinite(e)]
        if per_latent:
            return float(min(per_latent))
        return kish_ess(self.log_weights[np.isfinite(self.log_weights)])

    @property
    def log_evidence(self) -> float | None:
        """An estimate of log p(y): SMC's own; for importance sampling (from the prior or a
        network's proposal) the log of the mean weight, dropped traces counting as weight 0;
        None for MCMC, which has no weights to estimate it from. Where the proposal misses part
        of the posterior the estimate is low, so of two engines' estimates for one event the
        one several nats lower has missed what the other found: a check that ESS cannot give,
        since a sampler that never reached the posterior's bulk can still show an ESS of a few."""
        if "log_evidence" in self.stats:
            return float(self.stats["log_evidence"])
        if self.engine not in ("is", "ic") or self.stats.get("likelihood_importance", 1.0) != 1.0:
            return None
        finite = self.log_weights[np.isfinite(self.log_weights)]
        n = self.num_traces + self.dropped
        if not len(finite):
            return -math.inf
        return float(np.logaddexp.reduce(finite) - math.log(n))

    def summary(self) -> dict[str, Any]:
        """The CLI's JSON: engine, num_traces, ess, seconds, latents {name: {mean, std}}, and more."""
        latents = {}
        for name in self.latents:
            e = self[name]
            if e.ess == 0.0:  # no kept trace has it (a branch the chains left): no moments, no crash
                latents[name] = {"mean": None, "std": None, "present_fraction": 0.0}
                continue
            mean, std = e.mean, e.stddev
            latents[name] = {
                "mean": mean.tolist() if isinstance(mean, np.ndarray) else float(mean),
                "std": std.tolist() if isinstance(std, np.ndarray) else float(std),
            }
        return {
            "engine": self.engine,
            "num_traces": self.num_traces,
            "ess": self.ess,
            "seconds": self.seconds,
            "dropped": self.dropped,
            "log_evidence": self.log_evidence,
            "latents": latents,
            **self.stats,
        }

    def save(self, directory: str | Path) -> Path:
        """`posterior.npz` (per latent its values, plus log_weights; no pickle), `summary.json`, and
        `traces.npz`, the traces (`TraceBatch.save`) that `probexec analytics` reads. Observations
        of `BIG_OBSERVATION` elements or more (calorimeter images, 0.6 MB a trace) are saved without
        their values and parameters (value-omitted rows), but with their log-densities: the
        observed data is the same in every trace, and thousands of copies of it would dwarf
        everything else."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        without_big_observations(self.traces).save(d / "traces.npz")
        arrays = {f"latent/{n}": self.traces.values_of(n) for n in self.latents}
        tmp = d / "posterior.tmp.npz"
        np.savez(tmp, log_weights=self.log_weights, **arrays)
        tmp.replace(d / "posterior.npz")
        (d / "summary.json").write_text(json.dumps(self.summary(), indent=2))
        return d
