"""Divergences between two (weighted) samples of one quantity, computed on a shared binning.

Both are estimated from histograms, so they are divergences between the *binned* distributions:
for continuous values they approach the true ones as bins narrow and samples grow, for discrete
values (one bin per value) they are exact up to sampling noise.

- `jensen_shannon`: JS(p, q) = ½ KL(p‖m) + ½ KL(q‖m), m = ½(p + q), in **bits** (log base 2), so
  it lies in [0, 1]: 0 for equal distributions, 1 for disjoint supports. Symmetric and always
  finite, which is why rankings use it.
- `kl_divergence`: KL(p‖q) = Σ p log(p/q) in **nats**. A bin that q's sample left empty would make
  it infinite, so q's histogram gets `pseudo_count` (default ½) added to every bin, in units of q's
  effective sample size, before normalising; the result is reported as such.

An address that occurs in only some traces is compared with an extra "absent" bin holding the mass
of the traces without it (`with_absence`), so a posterior that makes a branch certain counts as
informative even when the values inside the branch do not move.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_BINS = 40
MAX_CATEGORIES = 200


def normalised_weights(log_weights: np.ndarray | None, n: int) -> np.ndarray:
    if log_weights is None or len(log_weights) == 0:
        return np.full(n, 1.0 / max(n, 1))
    lw = np.where(np.isnan(log_weights), -np.inf, np.asarray(log_weights, dtype=np.float64))
    if not np.isfinite(lw).any():
        raise ValueError("every log-weight is -inf or NaN: nothing to normalise")
    w = np.exp(lw - lw.max())
    return w / w.sum()


def effective_size(weights: np.ndarray) -> float:
    """Kish's effective sample size of normalised weights."""
    s = float(np.sum(weights**2))
    return 1.0 / s if s > 0 else 0.0


def shared_bins(samples: list[np.ndarray], discrete: bool, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Bin edges every sample is histogrammed on: one bin per integer for discrete values (when
    there are at most MAX_CATEGORIES of them), else `bins` equal bins over the central 99.8 % of
    the pooled values (the tails go into the outer bins)."""
    pooled = np.concatenate([s[np.isfinite(s)] for s in samples]) if samples else np.zeros(0)
    if len(pooled) == 0:
        return np.array([0.0, 1.0])
    if discrete:
        u = np.unique(pooled)
        if len(u) <= MAX_CATEGORIES and np.all(u == np.round(u)):
            return np.concatenate([u - 0.5, [u[-1] + 0.5]])
    lo, hi = np.quantile(pooled, [0.001, 0.999])
    if hi <= lo:
        lo, hi = float(pooled.min()) - 0.5, float(pooled.max()) + 0.5
    return np.linspace(lo, hi, bins + 1)


def histogram(values: np.ndarray, log_weights: np.ndarray | None, edges: np.ndarray) -> np.ndarray:
    """Probability mass per bin (sums to 1); values outside the edges go into the outer bins,
    and for discrete edges (one per category) only exact categories count."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    w = normalised_weights(None if log_weights is None else np.asarray(log_weights)[ok], int(ok.sum()))
    clipped = np.clip(values[ok], edges[0], np.nextafter(edges[-1], -np.inf))
    h, _ = np.histogram(clipped, bins=edges, weights=w)
    total = h.sum()
    return h / total if total > 0 else h


def with_absence(p: np.ndarray, present_fraction: float) -> np.ndarray:
    """Mass `present_fraction` spread as `p`, the rest on one more bin: "the address did not occur"."""
    f = min(max(present_fraction, 0.0), 1.0)
    return np.concatenate([p * f, [1.0 - f]])


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon divergence in bits between two probability vectors on the same bins."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms on different bins: {p.shape} vs {q.shape}")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl_to_m(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return max(0.0, 0.5 * kl_to_m(p) + 0.5 * kl_to_m(q))


def kl_divergence(p: np.ndarray, q: np.ndarray, q_effective_size: float, pseudo_count: float = 0.5) -> float:
    """KL(p‖q) in nats, q smoothed by `pseudo_count` counts per bin (see the module docstring)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms on different bins: {p.shape} vs {q.shape}")
    p = p / p.sum()
    counts = q / q.sum() * q_effective_size + pseudo_count
    q = counts / counts.sum()
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def compare(
    a: tuple[np.ndarray, np.ndarray | None, float],
    b: tuple[np.ndarray, np.ndarray | None, float],
    discrete: bool,
    bins: int = DEFAULT_BINS,
) -> dict[str, float]:
    """Divergences of sample b from sample a, each given as (values, log-weights or None, fraction
    of traces the address occurs in): `js_bits` on values and absence together, `js_values_bits`
    on the values alone, `kl_nats` = KL(b‖a) on values and absence."""
    (va, wa, fa), (vb, wb, fb) = a, b
    if len(va) == 0 and len(vb) == 0:
        return {"js_bits": math.nan, "js_values_bits": math.nan, "kl_nats": math.nan}
    # A side without values (the address never occurs there) is all "absent".
    fa, fb = (fa if len(va) else 0.0), (fb if len(vb) else 0.0)
    edges = shared_bins([v for v in (va, vb) if len(v)], discrete, bins)
    ha, hb = histogram(va, wa, edges), histogram(vb, wb, edges)
    ess_a = effective_size(normalised_weights(wa, len(va))) if len(va) else 0.0
    both = len(va) > 0 and len(vb) > 0
    return {
        "js_bits": jensen_shannon(with_absence(ha, fa), with_absence(hb, fb)),
        "js_values_bits": jensen_shannon(ha, hb) if both else math.nan,
        "kl_nats": kl_divergence(with_absence(hb, fb), with_absence(ha, fa), ess_a),
    }
