"""Inference diagnostics: is a posterior trustworthy?

- MCMC (RMH): split-R̂ across chains and the autocorrelation ESS (both from `inference.rmh`, the
  functions the engine itself reports), plus the autocorrelation function for plotting.
- Importance sampling (prior or learned proposal): the log-weight distribution, Kish's ESS and the
  largest normalised weight (one trace holding most of the mass means the estimate is that trace).
- Inference compilation: the training log (loss and validation loss against traces seen).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from probexec.analytics.sources import Chunk
from probexec.inference.rmh import mcmc_ess, split_r_hat


class LatentValues:
    """The values of some named scalar latents, in trace order (for posteriors, which are small
    enough to hold: chain diagnostics need the whole chain)."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self._parts: dict[str, list[np.ndarray]] = {n: [] for n in self.names}

    def update(self, chunk: Chunk) -> None:
        for name in self.names:
            try:
                v = chunk.batch.values_of(name)
            except KeyError:
                v = np.full(chunk.batch.num_traces, np.nan)
            if v.ndim == 1:
                self._parts[name].append(v)

    def values(self) -> dict[str, np.ndarray]:
        return {n: np.concatenate(p) for n, p in self._parts.items() if p}


def autocorrelation(chains: np.ndarray, max_lag: int = 100) -> np.ndarray:
    """Autocorrelation of one scalar at lags 0..max_lag, averaged over chains (rows), by FFT."""
    chains = np.atleast_2d(np.asarray(chains, dtype=np.float64))
    _m, n = chains.shape
    x = chains - chains.mean(axis=1, keepdims=True)
    var = x.var(axis=1)
    ok = var > 0
    if n < 2 or not ok.any():
        return np.full(min(max_lag, max(n - 1, 0)) + 1, np.nan)
    f = np.fft.rfft(x[ok], n=2 * n, axis=1)
    acov = np.fft.irfft(f * np.conj(f), axis=1)[:, :n] / n
    rho = (acov / var[ok][:, None]).mean(axis=0)
    return rho[: min(max_lag, n - 1) + 1]


def split_chains(values: np.ndarray, chains: int) -> np.ndarray:
    """A posterior's samples (chain after chain, as `rmh` writes them) as (chains, samples)."""
    if chains < 1 or len(values) % chains:
        raise ValueError(f"{len(values)} samples do not split into {chains} chains of equal length")
    return values.reshape(chains, -1)


def mcmc_diagnostics(values: dict[str, np.ndarray], chains: int, max_lag: int = 100) -> list[dict[str, Any]]:
    rows = []
    for name, v in values.items():
        c = split_chains(v, chains)
        acf = autocorrelation(c, max_lag)
        ess = mcmc_ess(c)
        rows.append(
            {
                "latent": name,
                "chains": chains,
                "samples": int(c.size),
                "r_hat": split_r_hat(c),
                "ess": ess,
                "ess_per_sample": ess / c.size if math.isfinite(ess) else math.nan,
                "acf_lag1": float(acf[1]) if len(acf) > 1 else math.nan,
                "acf_lag10": float(acf[10]) if len(acf) > 10 else math.nan,
            }
        )
    return rows


def importance_diagnostics(log_weights: np.ndarray) -> dict[str, float]:
    lw = np.asarray(log_weights, dtype=np.float64)
    finite = lw[np.isfinite(lw)]
    n = len(lw)
    if len(finite) == 0:
        return {"traces": n, "finite": 0, "ess": 0.0, "ess_fraction": 0.0, "max_weight": math.nan}
    w = np.exp(finite - finite.max())
    w /= w.sum()
    ess = float(1.0 / np.sum(w * w))
    q = np.quantile(finite, [0.0, 0.5, 0.99, 1.0])
    return {
        "traces": n,
        "finite": len(finite),
        "ess": ess,
        "ess_fraction": ess / n,
        "max_weight": float(w.max()),
        "log_weight_min": float(q[0]),
        "log_weight_median": float(q[1]),
        "log_weight_q99": float(q[2]),
        "log_weight_max": float(q[3]),
    }


TRAINING_COLUMNS = ("step", "epoch", "traces", "loss", "valid_loss", "lr", "traces_per_s")


def read_training_log(path: str | Path) -> dict[str, np.ndarray]:
    """The IC training log (CSV with a header; `step` and `loss` required, empty cells NaN)."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a readable training log ({e})") from None
    missing = [c for c in ("step", "loss") if c not in header]
    if missing:
        raise ValueError(
            f"{path}: training log lacks column(s) {', '.join(missing)} (has {', '.join(header)})"
        )
    if not rows:
        raise ValueError(f"{path}: training log has no rows")
    out: dict[str, np.ndarray] = {}
    for col in header:
        vals = []
        for i, r in enumerate(rows, start=2):
            cell = (r.get(col) or "").strip()
            try:
                vals.append(float(cell) if cell else math.nan)
            except ValueError:
                if col in TRAINING_COLUMNS:
                    raise ValueError(f"{path}:{i}: column {col!r} holds {cell!r}, not a number") from None
                vals = []
                break
        if vals:
            out[col] = np.array(vals)
    return out


def training_summary(log: dict[str, np.ndarray]) -> dict[str, float]:
    loss = log["loss"]
    out = {
        "steps": float(np.nanmax(log["step"])),
        "first_loss": float(loss[np.isfinite(loss)][0]) if np.isfinite(loss).any() else math.nan,
        "last_loss": float(loss[np.isfinite(loss)][-1]) if np.isfinite(loss).any() else math.nan,
    }
    if "valid_loss" in log and np.isfinite(log["valid_loss"]).any():
        v = log["valid_loss"]
        out["best_valid_loss"] = float(np.nanmin(v))
        out["last_valid_loss"] = float(v[np.isfinite(v)][-1])
    if "traces" in log and np.isfinite(log["traces"]).any():
        out["traces"] = float(np.nanmax(log["traces"]))
    if "traces_per_s" in log and np.isfinite(log["traces_per_s"]).any():
        out["median_traces_per_s"] = float(np.nanmedian(log["traces_per_s"]))
    return out
