"""Figures of the report (matplotlib, Agg backend: no display needed). Each function writes one
PNG and returns its path; the data it draws is computed elsewhere."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probexec.analytics.divergence import histogram, shared_bins

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path


def value_histograms(
    title: str,
    series: Sequence[tuple[str, np.ndarray, np.ndarray | None]],
    path: Path,
    discrete: bool = False,
    truth: float | None = None,
    subtitle: str = "",
) -> Path:
    """Overlaid (weighted) histograms of one address's values in several runs, on shared bins,
    with the true value as a vertical line when known."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    samples = [v for _, v, _ in series if len(v)]
    edges = shared_bins(samples, discrete) if samples else np.array([0.0, 1.0])
    for k, (label, values, lw) in enumerate(series):
        if len(values) == 0:
            continue
        h = histogram(values, lw, edges)
        ax.stairs(
            h, edges, label=f"{label} (n={len(values)})", color=COLOURS[k % len(COLOURS)], linewidth=1.6
        )
    if truth is not None and math.isfinite(truth):
        ax.axvline(truth, color="black", linestyle="--", linewidth=1.2, label=f"truth {truth:.4g}")
    ax.set_title(title, fontsize=10)
    if subtitle:
        ax.set_xlabel(subtitle, fontsize=8)
    ax.set_ylabel("probability per bin")
    ax.legend(fontsize=7)
    return _save(fig, path)


def length_distribution(rows: Sequence[dict[str, Any]], title: str, path: Path) -> Path:
    """Trace lengths (rows per trace), all draws and controlled draws."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.2))
    k = np.array([r["length"] for r in rows])
    ax.bar(k - 0.2, [r["fraction"] for r in rows], width=0.4, label="all draws", color=COLOURS[0])
    ax.bar(k + 0.2, [r["controlled_fraction"] for r in rows], width=0.4, label="controlled", color=COLOURS[4])
    ax.set_xlabel("trace length (draws recorded per trace)")
    ax.set_ylabel("fraction of traces")
    ax.set_title(title, fontsize=10)
    if len(k) and k.max() > 50:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return _save(fig, path)


def log_weights(lw: np.ndarray, title: str, path: Path) -> Path:
    """Normalised log-weights (log10 of each trace's share of the mass)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.2))
    finite = lw[np.isfinite(lw)]
    if len(finite):
        m = finite.max()
        shares = (finite - m - math.log(np.sum(np.exp(finite - m)))) / math.log(10)
        ax.hist(shares, bins=60, color=COLOURS[0])
    ax.set_xlabel("log10 normalised weight")
    ax.set_ylabel("traces")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def autocorrelations(acfs: dict[str, np.ndarray], title: str, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.2))
    for k, (name, rho) in enumerate(acfs.items()):
        ax.plot(np.arange(len(rho)), rho, label=name, color=COLOURS[k % len(COLOURS)])
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("lag")
    ax.set_ylabel("autocorrelation")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def chain_traces(values: np.ndarray, chains: int, name: str, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 2.8))
    for c, row in enumerate(values.reshape(chains, -1)):
        ax.plot(row, linewidth=0.6, color=COLOURS[c % len(COLOURS)], label=f"chain {c}")
    ax.set_xlabel("sample")
    ax.set_ylabel(name)
    ax.set_title(f"RMH chains: {name}", fontsize=10)
    ax.legend(fontsize=7, ncol=4)
    return _save(fig, path)


def training_curves(log: dict[str, np.ndarray], path: Path) -> Path:
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    x = log["traces"] if "traces" in log and np.isfinite(log["traces"]).any() else log["step"]
    xlabel = "traces seen" if x is log.get("traces") else "step"
    ax.plot(x, log["loss"], label="training loss", color=COLOURS[0])
    if "valid_loss" in log:
        ok = np.isfinite(log["valid_loss"])
        ax.plot(x[ok], log["valid_loss"][ok], "o-", label="validation loss", color=COLOURS[1], markersize=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (−log q)")
    ax.legend(fontsize=8)
    ax.set_title("IC training", fontsize=10)
    if "lr" in log:
        ax2.plot(x, log["lr"], color=COLOURS[2], label="learning rate")
        ax2.set_ylabel("learning rate")
    if "traces_per_s" in log:
        twin = ax2.twinx()
        twin.plot(x, log["traces_per_s"], color=COLOURS[3], linewidth=0.8, label="traces/s")
        twin.set_ylabel("traces/s")
    ax2.set_xlabel(xlabel)
    ax2.set_title("learning rate and throughput", fontsize=10)
    return _save(fig, path)


def sbc_ranks(ranks: dict[str, np.ndarray], num_draws: int, bins: int, title: str, path: Path) -> Path:
    """Rank histograms, one panel per latent, with the band a uniform histogram stays in 99 % of
    the time (binomial, per bin)."""
    from probexec.analytics.sbc import rank_histogram

    plt = _pyplot()
    names = list(ranks)
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.2 * max(len(names), 1), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        r = ranks[name]
        counts = rank_histogram(r, num_draws, bins)
        ax.bar(np.arange(bins), counts, width=0.9, color=COLOURS[0])
        n = len(r)
        p = 1.0 / bins
        mean, sd = n * p, math.sqrt(n * p * (1 - p))
        ax.axhspan(mean - 2.576 * sd, mean + 2.576 * sd, color="grey", alpha=0.25)
        ax.axhline(mean, color="grey", linewidth=0.8)
        ax.set_title(f"{name} ({n} simulations)", fontsize=9)
        ax.set_xlabel(f"rank bin (L = {num_draws})")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
