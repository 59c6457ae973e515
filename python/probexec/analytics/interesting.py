"""Which addresses carry information about the observation: ranked by how far inference moved them.

For each address with values (samples and tags) the prior sample is compared with a posterior's:
Jensen–Shannon divergence in bits of the values *and* of whether the address occurs at all (see
`divergence`), so both "the posterior pins this value" and "the posterior makes this branch
certain or impossible" rank high. An importance-sampling posterior's traces unweighted are draws
from its proposal: for inference compilation (engine "ic") that is the learned proposal, and its
divergence from the prior says how far the network moved away from the prior at that address.
Each row carries the address's C++ function and line.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from probexec.analytics.addresses import AddressStats, AddressSummary
from probexec.analytics.divergence import compare


def sample_of(
    stats: AddressStats, s: AddressSummary | None, weighted: bool = True
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """(values, log-weights, occurrence fraction) of an address in one source; empty when absent.
    weighted=False reads a weighted source as its proposal (weights dropped)."""
    if s is None or s.reservoir is None:
        return np.zeros(0), None, 0.0
    if weighted and stats.weighted:
        return s.reservoir.values, s.reservoir.log_weights, stats.presence_fraction(s)
    return s.reservoir.values, None, s.traces / max(stats.num_traces, 1)


def rank_addresses(
    prior: AddressStats, posterior: AddressStats, engine: str | None = None, bins: int = 40
) -> list[dict[str, Any]]:
    """One row per address with values in either run, most informative first."""
    ids = [s.id for s in prior.summaries() if s.reservoir is not None]
    ids += [s.id for s in posterior.summaries() if s.reservoir is not None and s.id not in prior.by_id]
    rows = []
    for aid in ids:
        sp, sq = prior.by_id.get(aid), posterior.by_id.get(aid)
        s = sp or sq
        assert s is not None
        a = sample_of(prior, sp)
        b = sample_of(posterior, sq)
        d = compare(a, b, s.discrete, bins)
        row: dict[str, Any] = {
            "label": s.label,
            "name": s.name,
            "id": f"{aid:016x}",
            "kind": s.node_kind,
            "function": s.location.function,
            "file_line": s.location.file_line,
            "prior_fraction": a[2],
            "posterior_fraction": b[2],
            "prior_mean": _mean(a),
            "posterior_mean": _mean(b),
            "js_bits": d["js_bits"],
            "js_values_bits": d["js_values_bits"],
            "kl_posterior_prior_nats": d["kl_nats"],
        }
        if engine == "ic" and posterior.weighted:
            p = compare(a, sample_of(posterior, sq, weighted=False), s.discrete, bins)
            row["proposal_js_bits"] = p["js_bits"]
        rows.append(row)
    rows.sort(key=lambda r: (-r["js_bits"] if math.isfinite(r["js_bits"]) else math.inf, r["label"]))
    for rank, r in enumerate(rows, start=1):
        r["rank"] = rank
    return rows


def _mean(sample: tuple[np.ndarray, np.ndarray | None, float]) -> float:
    v, lw, _ = sample
    if len(v) == 0:
        return math.nan
    if lw is None:
        return float(v.mean())
    w = np.exp(lw - lw.max())
    return float(np.sum(w * v) / w.sum())
