"""Empirical distributions: what an inference run says about one quantity.

Importance sampling gives weighted samples, MCMC gives unweighted ones; both end up as an
`Empirical` so that the statistics (mean, quantiles, credible intervals, ESS) are computed one way,
in one place, with the same conventions.

Conventions, chosen so that a posterior read from a set of traces is right without bookkeeping:

* A row whose value contains NaN is *absent*: the variable did not occur in that trace (a branch
  not taken). Absent rows take no part in any statistic, the weights of the present rows are
  renormalised, and `present_fraction` says how much posterior mass the variable occurs with.
* A log weight that is NaN or -inf is weight zero (a trace the target gives no mass to, or whose
  density could not be evaluated). +inf has no meaning as a weight and is an error; so is a
  set of weights that are all zero, since nothing can then be normalised.
* Weights are normalised in float64 after subtracting the largest log weight, so log weights of
  -1e5 (common for likelihoods of large data sets) do not underflow to zero all at once.
* Variance is the weighted *population* variance (no Bessel correction): for weighted samples
  there is no unique unbiased correction, and for large N the difference is negligible.

Files are NumPy `.npz` archives with plain arrays and a JSON string, loaded with
`allow_pickle=False`, so that opening a posterior someone sent you cannot run code.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["FORMAT_VERSION", "Empirical"]

#: Version written into the `meta` JSON of saved files; `load` refuses other versions.
FORMAT_VERSION = 1

_FILE_KEYS = ("values", "log_weights", "meta")

Float = NDArray[np.float64]
SeedLike = int | np.random.Generator | None


def _log_sum_exp(x: Float) -> float:
    """log(sum(exp(x))) without overflow; -inf for an empty array or all -inf."""
    if x.size == 0:
        return -math.inf
    m = float(np.max(x))
    if m == -math.inf:
        return -math.inf
    return m + math.log(float(np.sum(np.exp(x - m))))


def _as_rng(rng: SeedLike) -> np.random.Generator:
    """Accept a Generator (to share a stream) or a seed (for reproducible one-off calls)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


class Empirical:
    """A (possibly weighted) sample of one quantity: scalar (values of shape (N,)) or vector
    (values of shape (N, d)).

    `log_weights=None` means equal weights (MCMC, or already resampled); otherwise they are the raw,
    unnormalised importance log weights, one per row. See the module docstring for how absent
    values (NaN rows) and zero weights (NaN or -inf log weights) are treated.
    """

    __slots__ = (
        "_all_values",
        "_ess",
        "_log_weights",
        "_name",
        "_present",
        "_present_fraction",
        "_values",
        "_weighted",
        "_weights",
    )

    def __init__(self, values: ArrayLike, log_weights: ArrayLike | None = None, name: str = "") -> None:
        if not isinstance(name, str):
            raise TypeError(f"Empirical name must be a str, got {type(name).__name__}")
        self._name = name
        raw = np.asarray(values)
        if np.iscomplexobj(raw):
            raise ValueError(f"Empirical {name!r}: complex values are not supported")
        try:
            vals = np.array(raw, dtype=np.float64, copy=True)
        except (TypeError, ValueError) as e:
            raise ValueError(f"Empirical {name!r}: values must be numeric ({e})") from e
        if vals.ndim not in (1, 2):
            raise ValueError(
                f"Empirical {name!r}: values must have shape (N,) or (N, d), got shape {vals.shape}"
            )
        n = vals.shape[0]
        if n == 0:
            raise ValueError(f"Empirical {name!r}: needs at least one sample, got 0 rows")
        if vals.ndim == 2 and vals.shape[1] == 0:
            raise ValueError(
                f"Empirical {name!r}: vector values need at least one component, got shape {vals.shape}"
            )

        if log_weights is None:
            lw = np.zeros(n, dtype=np.float64)
            self._weighted = False
        else:
            try:
                lw = np.array(log_weights, dtype=np.float64, copy=True)
            except (TypeError, ValueError) as e:
                raise ValueError(f"Empirical {name!r}: log_weights must be numeric ({e})") from e
            if lw.ndim != 1:
                raise ValueError(
                    f"Empirical {name!r}: log_weights must have shape (N,), got shape {lw.shape}"
                )
            if lw.shape[0] != n:
                raise ValueError(
                    f"Empirical {name!r}: log_weights has length {lw.shape[0]} but values has {n} rows"
                )
            if np.any(lw == math.inf):
                raise ValueError(
                    f"Empirical {name!r}: log_weights contains +inf (at rows {np.flatnonzero(lw == math.inf)[:5].tolist()}); "
                    "a weight must be finite"
                )
            self._weighted = True

        # Zero weight for NaN/-inf log weights; kept apart from the raw array the user gave.
        clean = np.where(np.isnan(lw), -math.inf, lw)
        total_lse = _log_sum_exp(clean)
        if total_lse == -math.inf:
            raise ValueError(
                f"Empirical {name!r}: every log weight is -inf or NaN, so no sample has positive weight "
                "(did the likelihood reject every trace?)"
            )

        present = ~np.isnan(vals) if vals.ndim == 1 else ~np.any(np.isnan(vals), axis=1)
        present_lw = clean[present]
        present_lse = _log_sum_exp(present_lw)
        self._present_fraction = math.exp(present_lse - total_lse) if present_lse > -math.inf else 0.0

        if present_lse > -math.inf:
            # Scale by the largest present log weight so the largest weight is exactly 1.0: equal
            # weights stay exactly equal (quantiles then match numpy's inverted_cdf bit for bit).
            u = np.exp(present_lw - np.max(present_lw))
            w = u / np.sum(u)
            self._weights: Float | None = w
            self._ess = float(1.0 / np.sum(w * w))
        else:
            self._weights = None
            self._ess = 0.0

        for a in (vals, lw, present):
            a.setflags(write=False)
        self._all_values: Float = vals
        self._log_weights: Float = lw
        self._present: NDArray[np.bool_] = present
        pv = vals[present]
        pv.setflags(write=False)
        self._values: Float = pv
        if self._weights is not None:
            self._weights.setflags(write=False)

    # ------------------------------------------------------------------ basic properties

    @property
    def name(self) -> str:
        """The quantity's name (the address or variable name), used in messages and exports."""
        return self._name

    @property
    def values(self) -> Float:
        """Values of the present rows, shape (num_samples,) or (num_samples, d); aligned with
        `weights`. Read-only."""
        return self._values

    @property
    def raw_values(self) -> Float:
        """All N rows as given, absent rows (NaN) included; aligned with `log_weights`. Read-only."""
        return self._all_values

    @property
    def present(self) -> NDArray[np.bool_]:
        """Boolean mask of shape (N,): which rows hold a value (no NaN)."""
        return self._present

    @property
    def log_weights(self) -> Float:
        """Raw (unnormalised) log weights of all N rows, exactly as given; zeros when unweighted."""
        return self._log_weights

    @property
    def weights(self) -> Float:
        """Normalised weights of the present rows (sum to 1), aligned with `values`.

        Raises ValueError when no present row has positive weight, since they cannot be normalised.
        """
        return self._require_weights()

    @property
    def is_weighted(self) -> bool:
        """True when log weights were given (importance sampling); False for equal weights."""
        return self._weighted

    @property
    def event_shape(self) -> tuple[int, ...]:
        """() for a scalar quantity, (d,) for a vector one."""
        return tuple(self._all_values.shape[1:])

    @property
    def num_samples(self) -> int:
        """Number of present rows (rows with zero weight included)."""
        return int(self._values.shape[0])

    @property
    def present_fraction(self) -> float:
        """Fraction of the total weight (normalised over all rows) that lies on present rows: the
        posterior probability that the quantity occurs at all."""
        return self._present_fraction

    @property
    def ess(self) -> float:
        """Kish's effective sample size 1 / sum(w²) over present rows: N for equal weights, about 1
        when one weight dominates. 0.0 when no present row has positive weight."""
        return self._ess

    @property
    def is_discrete(self) -> bool:
        """True when every present value is an integer (then `map` and `probabilities` apply)."""
        v = self._values
        return bool(v.size > 0 and np.all(np.isfinite(v)) and np.all(v == np.floor(v)))

    def __len__(self) -> int:
        """Number of rows, absent ones included (the N given to the constructor)."""
        return int(self._all_values.shape[0])

    def __repr__(self) -> str:
        head = f"Empirical(name={self._name!r}, N={len(self)}, ESS={self._ess:.1f}"
        if self._weights is None:
            return head + ", mean=nan, std=nan)"
        return f"{head}, mean={self._fmt(self.mean)}, std={self._fmt(self.stddev)})"

    @staticmethod
    def _fmt(x: float | Float) -> str:
        if isinstance(x, np.ndarray):
            return np.array2string(x, precision=4, separator=", ")
        return f"{x:.4g}"

    # ------------------------------------------------------------------ moments

    def _require_weights(self) -> Float:
        if self._weights is None:
            raise ValueError(
                f"Empirical {self._name!r}: no present sample with positive weight "
                f"({self.num_samples} present rows of {len(self)}), so no statistic is defined"
            )
        return self._weights

    def _scalar_or_array(self, x: Float) -> float | Float:
        """Scalars come back as Python floats (pleasant to print and compare); vectors as arrays."""
        return float(x) if self._all_values.ndim == 1 else x

    def _positive(self) -> tuple[Float, Float]:
        """(weights, values) of the rows with positive weight: a zero-weight row holding ±inf
        would otherwise turn a moment into NaN through 0 * inf."""
        w = self._require_weights()
        keep = w > 0.0
        if bool(np.all(keep)):
            return w, self._values
        return w[keep], self._values[keep]

    @property
    def mean(self) -> float | Float:
        """Weighted mean; an array of shape (d,) for vector quantities."""
        w, v = self._positive()
        return self._scalar_or_array(np.tensordot(w, v, axes=(0, 0)))

    @property
    def variance(self) -> float | Float:
        """Weighted population variance (per component for vectors)."""
        w, v = self._positive()
        m = np.tensordot(w, v, axes=(0, 0))
        d = v - m
        var = np.maximum(np.tensordot(w, d * d, axes=(0, 0)), 0.0)
        return self._scalar_or_array(var)

    @property
    def stddev(self) -> float | Float:
        """Square root of `variance`."""
        return self._scalar_or_array(np.sqrt(np.asarray(self.variance, dtype=np.float64)))

    # ------------------------------------------------------------------ quantiles

    def quantile(self, q: ArrayLike) -> float | Float:
        """Weighted quantile(s): the smallest value whose cumulative weight is >= q (the inverse of
        the weighted empirical CDF, numpy's method="inverted_cdf" when unweighted).

        The inverse CDF is used rather than an interpolating rule because it is defined the same
        way for weighted and unweighted samples and always returns a value that was drawn (an
        integer stays an integer). Zero-weight rows are never returned.

        Shapes: scalar quantity -> float for scalar q, (k,) for q of shape (k,); vector quantity
        -> (d,) for scalar q, (k, d) for q of shape (k,).
        """
        w, vals = self._positive()
        qa = np.asarray(q, dtype=np.float64)
        if qa.ndim > 1:
            raise ValueError(f"quantile: q must be a scalar or 1-d, got shape {qa.shape}")
        if np.any(np.isnan(qa)) or np.any(qa < 0.0) or np.any(qa > 1.0):
            raise ValueError(f"quantile: q must lie in [0, 1], got {q!r}")
        u = w / np.max(w)  # largest weight exactly 1: see __init__
        cols = vals[:, None] if vals.ndim == 1 else vals
        qf = np.atleast_1d(qa)
        out = np.empty((qf.shape[0], cols.shape[1]), dtype=np.float64)
        for j in range(cols.shape[1]):
            order = np.argsort(cols[:, j], kind="stable")
            cw = np.cumsum(u[order])
            idx = np.searchsorted(cw, qf * cw[-1], side="left")
            idx = np.minimum(idx, cw.shape[0] - 1)
            out[:, j] = cols[order[idx], j]
        if self._all_values.ndim == 1:
            res: Float = out[:, 0]
            return float(res[0]) if qa.ndim == 0 else res
        return out[0] if qa.ndim == 0 else out

    @property
    def median(self) -> float | Float:
        """`quantile(0.5)`."""
        return self.quantile(0.5)

    def credible_interval(self, mass: float = 0.9) -> tuple[float | Float, float | Float]:
        """Equal-tailed interval (lo, hi) holding `mass` of the weight: quantiles (1-mass)/2 and
        (1+mass)/2. Equal-tailed rather than highest-density because it is invariant under
        monotone reparametrisation and well defined for multimodal posteriors."""
        if not 0.0 < mass <= 1.0:
            raise ValueError(f"credible_interval: mass must lie in (0, 1], got {mass}")
        return self.quantile((1.0 - mass) / 2.0), self.quantile((1.0 + mass) / 2.0)

    # ------------------------------------------------------------------ histograms, discrete values

    def _require_scalar(self, what: str) -> None:
        if self._all_values.ndim != 1:
            raise ValueError(
                f"{what} needs a scalar quantity; {self._name!r} has event shape {self.event_shape} "
                "(take one component with Empirical(e.raw_values[:, i], e.log_weights))"
            )

    def histogram(
        self, bins: int | ArrayLike = 50, range: tuple[float, float] | None = None, density: bool = True
    ) -> tuple[Float, Float]:
        """Weighted histogram (heights, edges) as `np.histogram` with the normalised weights.

        With density=False the heights are probability masses per bin (they sum to the weight in
        `range`, at most 1), not counts: counts mean nothing for weighted samples.
        """
        self._require_scalar("histogram")
        w = self._require_weights()
        heights, edges = np.histogram(self._values, bins=bins, range=range, weights=w, density=density)
        return heights.astype(np.float64), edges.astype(np.float64)

    def _require_discrete(self, what: str) -> None:
        if not self.is_discrete:
            raise ValueError(
                f"{what}: {self._name!r} has non-integer values, so it is treated as continuous; "
                "use histogram() and take the mode of the tallest bin instead"
            )

    def probabilities(self) -> dict[int, float]:
        """For an integer-valued scalar quantity: {value: total normalised weight}, sorted by
        value; values whose total weight is zero are left out."""
        self._require_scalar("probabilities")
        w = self._require_weights()
        self._require_discrete("probabilities")
        uniq, inv = np.unique(self._values, return_inverse=True)
        totals = np.bincount(inv.ravel(), weights=w, minlength=uniq.shape[0])
        return {int(v): float(t) for v, t in zip(uniq, totals, strict=True) if t > 0.0}

    @property
    def map(self) -> int | Float:
        """Maximum a posteriori value of an integer-valued quantity: the value with the largest
        total weight (ties go to the smallest value, or lexicographically smallest row for
        vectors). Returns an int for scalars, an array of shape (d,) for vectors.

        Raises ValueError for continuous values, where the weight of any single value says nothing
        about density; use the tallest bin of `histogram()` there."""
        w = self._require_weights()
        self._require_discrete("map")
        if self._values.ndim == 1:
            uniq, inv = np.unique(self._values, return_inverse=True)
        else:
            uniq, inv = np.unique(self._values, axis=0, return_inverse=True)
        totals = np.bincount(inv.ravel(), weights=w, minlength=uniq.shape[0])
        best = uniq[int(np.argmax(totals))]
        if self._values.ndim == 1:
            return int(best)
        return np.asarray(best, dtype=np.float64)

    # ------------------------------------------------------------------ resampling

    def resample(self, n: int | None = None, rng: SeedLike = None) -> Empirical:
        """A new unweighted Empirical of `n` draws (default: `num_samples`) by *multinomial*
        resampling of the present rows with probabilities `weights`.

        Multinomial (not systematic) resampling is used so that the draws are i.i.d. from the
        weighted empirical distribution, which is what downstream tools that treat draws as
        independent (or as one MCMC chain) assume. `rng` is a Generator or a seed.
        """
        w = self._require_weights()
        if n is None:
            n = self.num_samples
        if int(n) != n or n < 1:
            raise ValueError(f"resample: n must be a positive integer, got {n!r}")
        idx = _as_rng(rng).choice(w.shape[0], size=int(n), replace=True, p=w)
        return Empirical(self._values[idx], None, name=self._name)

    def sample(self, n: int, rng: SeedLike = None) -> Float:
        """`n` values drawn from the distribution: `resample(n, rng).values`."""
        return self.resample(n, rng).values

    # ------------------------------------------------------------------ combining runs

    @classmethod
    def combine(cls, runs: Sequence[Empirical], name: str | None = None) -> Empirical:
        """Pool several runs of the same quantity into one.

        Unweighted runs (MCMC chains) are concatenated. Weighted runs are concatenated *with their
        raw log weights*: each run's samples then count in proportion to that run's own estimate of
        the normalising constant, which is the correct pooling of self-normalised importance
        sampling runs. That is only valid when every run's raw log weights are on the same scale,
        i.e. all are log p(x, y) - log q(x) for the same model and data (the proposal q may differ
        between runs); weights that were shifted or normalised per run must not be combined this way.
        Mixing weighted and unweighted runs is refused, since their weights are not comparable.
        """
        runs = list(runs)
        if not runs:
            raise ValueError("Empirical.combine needs at least one run")
        for r in runs:
            if not isinstance(r, Empirical):
                raise TypeError(f"Empirical.combine: expected Empirical, got {type(r).__name__}")
        shapes = {r.event_shape for r in runs}
        if len(shapes) > 1:
            raise ValueError(f"Empirical.combine: runs have different event shapes {sorted(shapes)}")
        kinds = {r.is_weighted for r in runs}
        if len(kinds) > 1:
            raise ValueError(
                "Empirical.combine: cannot mix weighted (importance sampling) and unweighted runs; "
                "resample() the weighted ones first"
            )
        values = np.concatenate([r.raw_values for r in runs], axis=0)
        log_w = np.concatenate([r.log_weights for r in runs]) if runs[0].is_weighted else None
        return cls(values, log_w, name=runs[0].name if name is None else name)

    # ------------------------------------------------------------------ saving and loading

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a NumPy .npz archive at exactly `path` (no suffix is added) and return it.

        Format (version 1): arrays `values` (float64, (N,) or (N, d), NaN = absent), `log_weights`
        (float64, (N,); zeros when unweighted) and `meta`, a 0-d unicode array holding the JSON
        object {"format_version": 1, "name": str, "weighted": bool}. Nothing is pickled. The file
        is written beside the target and renamed over it, so a crash never leaves half a file.
        """
        path = Path(path)
        meta = json.dumps({"format_version": FORMAT_VERSION, "name": self._name, "weighted": self._weighted})
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    values=np.asarray(self._all_values, dtype=np.float64),
                    log_weights=np.asarray(self._log_weights, dtype=np.float64),
                    meta=np.array(meta),
                )
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Empirical:
        """Read a file written by `save`, with `allow_pickle=False`.

        Raises FileNotFoundError for a missing file and ValueError, naming the file and the
        problem, for anything else: not an .npz, truncated, missing keys, wrong dtypes or shapes,
        bad meta JSON or an unsupported format version.
        """
        path = Path(path)

        def bad(msg: str) -> ValueError:
            return ValueError(f"{path}: not a valid Empirical file: {msg}")

        with open(path, "rb") as f:
            try:
                npz: Any = np.load(f, allow_pickle=False)
                if not isinstance(npz, np.lib.npyio.NpzFile):
                    raise bad("it is a single .npy array, not an .npz archive")
                with npz:
                    missing = [k for k in _FILE_KEYS if k not in npz.files]
                    if missing:
                        raise bad(f"missing array(s) {missing} (has {sorted(npz.files)})")
                    arrays = {k: npz[k] for k in _FILE_KEYS}
            except ValueError as e:
                if str(e).startswith(f"{path}: "):
                    raise
                raise bad(str(e)) from e
            except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
                raise bad(f"unreadable or truncated ({type(e).__name__}: {e})") from e

        values, log_w, meta_arr = arrays["values"], arrays["log_weights"], arrays["meta"]
        if values.dtype != np.float64:
            raise bad(f"'values' has dtype {values.dtype}, expected float64")
        if log_w.dtype != np.float64:
            raise bad(f"'log_weights' has dtype {log_w.dtype}, expected float64")
        if values.ndim not in (1, 2):
            raise bad(f"'values' has shape {values.shape}, expected (N,) or (N, d)")
        if log_w.ndim != 1 or log_w.shape[0] != values.shape[0]:
            raise bad(f"'log_weights' has shape {log_w.shape}, expected ({values.shape[0]},)")
        if meta_arr.dtype.kind != "U" or meta_arr.ndim != 0:
            raise bad(
                f"'meta' must be a 0-d unicode array, got dtype {meta_arr.dtype} shape {meta_arr.shape}"
            )
        try:
            meta = json.loads(str(meta_arr[()]))
        except json.JSONDecodeError as e:
            raise bad(f"'meta' is not valid JSON ({e})") from e
        if not isinstance(meta, dict):
            raise bad("'meta' must be a JSON object")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise bad(f"format_version {version!r} is not supported (this probexec reads {FORMAT_VERSION})")
        name = meta.get("name")
        if not isinstance(name, str):
            raise bad(f"'meta' name must be a string, got {name!r}")
        weighted = meta.get("weighted", True)
        if not isinstance(weighted, bool):
            raise bad(f"'meta' weighted must be true or false, got {weighted!r}")
        try:
            return cls(values, log_w if weighted else None, name=name)
        except ValueError as e:
            raise bad(str(e)) from e

    # ------------------------------------------------------------------ export

    def summary(self) -> dict[str, float | list[float]]:
        """{"mean", "std", "ess", "num_samples"} as plain floats (lists for vectors): ready for
        JSON or a table. num_samples is given as a float too, so every value has one type."""

        def plain(x: float | Float) -> float | list[float]:
            return [float(v) for v in x] if isinstance(x, np.ndarray) else float(x)

        return {
            "mean": plain(self.mean),
            "std": plain(self.stddev),
            "ess": float(self._ess),
            "num_samples": float(self.num_samples),
        }

    def to_arviz(self, rng: SeedLike = None) -> Any:
        """An ArviZ object with a `posterior` group holding one chain of one variable, named
        `name` (or "x" when the name is empty), of shape (1, draws) or (1, draws, d).

        Weighted samples are first resampled (multinomially, `num_samples` draws, with `rng`)
        because ArviZ has no notion of weights; note that ArviZ's own ESS of those draws then
        overstates the information, use `ess` instead. Returns `arviz.InferenceData` with
        arviz < 1 and an `xarray.DataTree` (which replaced InferenceData) with arviz >= 1.
        Raises ImportError when arviz is not installed.
        """
        try:
            import arviz as az
        except ImportError as e:
            raise ImportError(
                "Empirical.to_arviz() needs ArviZ, which is not installed; install arviz (pip install arviz)"
            ) from e
        draws = self.resample(rng=rng).values if self._weighted else self.values
        if draws.shape[0] == 0:
            raise ValueError(f"Empirical {self._name!r}: no present samples to export")
        posterior = {self._name or "x": np.asarray(draws)[None, ...]}
        major = int(str(getattr(az, "__version__", "0")).split(".")[0] or 0)
        if major >= 1:
            return az.from_dict({"posterior": posterior})
        return az.from_dict(posterior=posterior)
