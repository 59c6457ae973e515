"""Traces: what one run of a model drew, observed and tagged.

The engine stores traces *columnar*: a `TraceBatch` holds one row per draw of many traces in a
handful of NumPy arrays (the same layout as the wire's `DrawBatch`), so a streamed batch of ten
thousand traces decodes with a few array copies and log-densities are computed with one torch call
per distribution type, not one per draw (building one torch distribution costs ~35 µs, as much as
a ZeroMQ round trip). `Trace` and `Variable` are the readable records a user looks at; they are
made from a batch on demand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probexec.distributions.fast_log_prob import log_prob_rows
from probexec.errors import ObservationError

SAMPLE, OBSERVE, TAG = 0, 1, 2
KIND_NAMES = ("sample", "observe", "tag")
FLAG_CONTROLLED, FLAG_REPLACE, FLAG_VALUE_OMITTED, FLAG_OBSERVED = 1, 2, 4, 8
# An observation with no data (neither the model's nor the user's): its value was simulated from
# its distribution, so it is not part of the likelihood. Conditioning on it clears the flag.
FLAG_SIMULATED = 16
NORMAL, CATEGORICAL = 1, 3  # wire distribution types the batch code treats specially


@dataclass(frozen=True, slots=True)
class AddressRecord:
    """What an address id stands for: learned once per id (the wire sends it the first time)."""

    id: int
    address: str
    name: str
    dist_type: int
    kind: int
    source: str = ""


class AddressTable:
    """Address ids seen so far. Ids are stable across processes of one binary, so one table serves
    every worker of a pool and every dataset made with the same simulator."""

    def __init__(self) -> None:
        self._by_id: dict[int, AddressRecord] = {}
        self._by_name: dict[str, list[int]] = {}

    def add(self, record: AddressRecord) -> None:
        old = self._by_id.get(record.id)
        if old is not None and (old.address or not record.address):
            return
        self._by_id[record.id] = record
        if record.name and old is None:
            self._by_name.setdefault(record.name, []).append(record.id)

    def add_wire(self, rows: Iterable[tuple[int, str, str, int, int, str]]) -> None:
        for r in rows:
            self.add(AddressRecord(*r))

    def merge(self, other: AddressTable) -> None:
        for rec in other._by_id.values():
            self.add(rec)

    def __getitem__(self, address_id: int) -> AddressRecord:
        return self._by_id[address_id]

    def get(self, address_id: int) -> AddressRecord | None:
        return self._by_id.get(address_id)

    def __contains__(self, address_id: int) -> bool:
        return address_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[AddressRecord]:
        return iter(self._by_id.values())

    def ids_named(self, name: str, kind: int | None = None) -> list[int]:
        ids = self._by_name.get(name, [])
        return [i for i in ids if kind is None or self._by_id[i].kind == kind]

    def names(self, kind: int | None = None) -> list[str]:
        return sorted({r.name for r in self._by_id.values() if r.name and (kind is None or r.kind == kind)})


def string_address_id(address: str, name: str, dist_type: int, kind: int) -> int:
    """Stable 64-bit id for an address that arrived as a string only (PPX v1 peers)."""
    key = f"{address}\x00{name}\x00{dist_type}\x00{kind}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


@dataclass(slots=True)
class Variable:
    """One draw of a trace, readable."""

    address: str
    address_id: int
    instance: int
    name: str
    kind: str  # "sample", "observe" or "tag"
    distribution: Any  # probexec.distributions.Distribution, None for tags
    value: torch.Tensor | None  # None when only the draw's count was recorded
    log_prob: float
    controlled: bool
    replace: bool
    count: int = 1  # draws this record stands for (uncontrolled draws kept as a count)

    @property
    def observed(self) -> bool:
        return self.kind == "observe"

    @property
    def tagged(self) -> bool:
        return self.kind == "tag"


@dataclass(slots=True)
class Trace:
    """One execution of a model."""

    variables: list[Variable]
    result: torch.Tensor | None
    log_prior: float
    log_likelihood: float
    wall_time: float
    error: str = ""

    @property
    def length(self) -> int:
        return len(self.variables)

    @property
    def length_controlled(self) -> int:
        return sum(v.controlled for v in self.variables)

    @property
    def trace_type(self) -> tuple[int, ...]:
        """The sequence of address ids: traces of one type share one structure (and one LSTM path)."""
        return tuple(v.address_id for v in self.variables)

    @property
    def log_joint(self) -> float:
        return self.log_prior + self.log_likelihood

    def named(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(f"trace has no variable named {name!r}")

    def __getitem__(self, name: str) -> torch.Tensor | None:
        return self.named(name).value


def _gather(data: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Rows of fixed `width` starting at `starts`: (len(starts), width)."""
    if width == 0:
        return np.empty((len(starts), 0), dtype=data.dtype)
    if width >= _WIDE:  # an index matrix as big as the data costs more than a copy per row
        return np.stack([data[s : s + width] for s in starts.tolist()])
    return data[starts[:, None] + np.arange(width)]


# Rows at least this wide (a calorimeter image: 24 500 values) are moved and scored row by row
# with slices and in-place arithmetic instead of index arrays and temporaries of their full size.
_WIDE = 1024


def _normal_log_prob_rows(vals: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Σ log N(vals | loc, scale) per row, in place on one temporary: for wide rows, the
    several full-size temporaries of the generic path cost more than the arithmetic."""
    z = np.subtract(vals, loc)
    z /= scale
    np.square(z, out=z)
    log_scale = np.log(scale)
    return -0.5 * z.sum(1) - log_scale.sum(1) - 0.5 * vals.shape[1] * np.log(2 * np.pi)


def score_rows(dist_type: int, vals: np.ndarray, prm: np.ndarray) -> np.ndarray:
    """Σ log-density per row of `vals` [k, vn] under `dist_type` with flat parameters `prm`
    [k, pn] (the DrawBatch layout)."""
    from probexec.distributions import from_wire

    k, vn = vals.shape
    pn = prm.shape[1]
    if dist_type == NORMAL and vn >= _WIDE and pn == 2 * vn:
        return _normal_log_prob_rows(vals, prm[:, :vn], prm[:, vn:])
    fast = log_prob_rows(dist_type, vals, prm)
    if fast is not None:
        return fast
    if dist_type == CATEGORICAL:
        params = [torch.from_numpy(prm.reshape(k, vn, pn // vn))]
    else:
        params = [torch.from_numpy(prm[:, j * vn : (j + 1) * vn]) for j in range(pn // max(vn, 1))]
    dist = from_wire(dist_type, params, validate=False)
    return dist.log_prob(torch.from_numpy(vals)).reshape(k, -1).sum(-1).numpy()


def score_draw(dist_type: int, params: Any, value: Any) -> float:
    """The log-density of one draw as it arrives from the simulator (parameters in wire form):
    what a wide observation (a calorimeter image) is reduced to when its row is not kept."""
    v = np.asarray(value, dtype=np.float64).reshape(1, -1)
    if dist_type == NORMAL and v.shape[1] >= _WIDE and isinstance(params, tuple) and len(params) == 2:
        # Scored from the parameters as they came, not from a flat copy of both (two image-sized
        # concatenations per tau trace in IC).
        # Broadcast in the value's own shape (a per-layer scale [20, 1, 1] against an image).
        shape = np.shape(value)
        loc, scale = (np.broadcast_to(np.asarray(q, dtype=np.float64), shape).reshape(1, -1) for q in params)
        return float(_normal_log_prob_rows(v, loc, scale)[0])
    p = flatten_params(dist_type, params, v[0])
    return float(score_rows(dist_type, v, p.reshape(1, -1))[0])


@dataclass
class TraceBatch:
    """Many traces, one row per draw (see the module docstring and `DrawBatch` in ppx.fbs)."""

    address_id: np.ndarray
    instance: np.ndarray
    kind: np.ndarray
    flags: np.ndarray
    dist_type: np.ndarray
    param_offsets: np.ndarray
    params: np.ndarray
    value_offsets: np.ndarray
    values: np.ndarray
    shape_offsets: np.ndarray
    shapes: np.ndarray
    trace_offsets: np.ndarray
    results: list[np.ndarray | None]
    wall_time: np.ndarray
    errors: list[str]
    addresses: AddressTable
    # Log-densities known in advance (Python models); NaN means "compute from the row's parameters".
    given_log_prob: np.ndarray | None = None
    # How many draws each row stands for (uncontrolled draws recorded as a count); None: all 1.
    count: np.ndarray | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def empty(cls, addresses: AddressTable | None = None) -> TraceBatch:
        z = np.zeros(0)
        o = np.zeros(1, dtype=np.int64)
        return cls(
            np.zeros(0, np.uint64),
            np.zeros(0, np.uint32),
            np.zeros(0, np.uint8),
            np.zeros(0, np.uint8),
            np.zeros(0, np.uint8),
            o,
            z,
            o.copy(),
            z.copy(),
            o.copy(),
            np.zeros(0, np.int32),
            o.copy(),
            [],
            z.copy(),
            [],
            addresses or AddressTable(),
        )

    @classmethod
    def from_wire(
        cls, draws: Mapping[str, Any], errors: Sequence[str], addresses: AddressTable
    ) -> TraceBatch:
        """From a decoded `DrawBatch` of a streamed `TraceBatch` message."""
        addresses.add_wire(draws["addresses"])
        n_traces = len(draws["results"])
        trace_offsets = draws["trace_offsets"]
        if trace_offsets is None or len(trace_offsets) != n_traces + 1 or len(errors) != n_traces:
            from probexec.errors import ProtocolError

            raise ProtocolError(
                f"malformed TraceBatch: {n_traces} results, "
                f"{None if trace_offsets is None else len(trace_offsets) - 1} trace offsets, {len(errors)} errors"
            )
        return cls(
            draws["address_id"],
            draws["instance"],
            draws["kind"],
            draws["flags"],
            draws["dist_type"],
            draws["param_offsets"].astype(np.int64),
            draws["params"],
            draws["value_offsets"].astype(np.int64),
            draws["values"],
            draws["shape_offsets"].astype(np.int64),
            draws["shapes"],
            trace_offsets.astype(np.int64),
            list(draws["results"]),
            draws["wall_time"],
            list(errors),
            addresses,
            count=draws.get("count"),
        )

    @staticmethod
    def concat(batches: Sequence[TraceBatch]) -> TraceBatch:
        batches = [b for b in batches if b.num_traces or b.num_rows]
        if not batches:
            return TraceBatch.empty()
        if len(batches) == 1:
            return batches[0]
        addresses = batches[0].addresses
        for b in batches[1:]:
            if b.addresses is not addresses:
                addresses.merge(b.addresses)

        def offsets(name: str) -> np.ndarray:
            parts, base = [np.zeros(1, np.int64)], 0
            for b in batches:
                o = getattr(b, name)
                parts.append(o[1:] + base)
                base += int(o[-1])
            return np.concatenate(parts)

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(b, name) for b in batches])

        given = None
        if any(b.given_log_prob is not None for b in batches):
            given = np.concatenate(
                [
                    b.given_log_prob if b.given_log_prob is not None else np.full(b.num_rows, np.nan)
                    for b in batches
                ]
            )
        return TraceBatch(
            cat("address_id"),
            cat("instance"),
            cat("kind"),
            cat("flags"),
            cat("dist_type"),
            offsets("param_offsets"),
            cat("params"),
            offsets("value_offsets"),
            cat("values"),
            offsets("shape_offsets"),
            cat("shapes"),
            offsets("trace_offsets"),
            [r for b in batches for r in b.results],
            cat("wall_time"),
            [e for b in batches for e in b.errors],
            addresses,
            given,
            count=np.concatenate(
                [b.count if b.count is not None else np.ones(b.num_rows, np.uint32) for b in batches]
            )
            if any(b.count is not None for b in batches)
            else None,
        )

    def select(self, traces: np.ndarray) -> TraceBatch:
        """The traces at `traces` (indices or a boolean mask), as a new batch."""
        idx = np.arange(self.num_traces)[traces]
        starts, stops = self.trace_offsets[idx], self.trace_offsets[idx + 1]
        lengths = stops - starts
        rows = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(
            lengths.sum()
        )
        rows = rows.astype(np.int64)

        def ragged(offsets: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            a, b = offsets[rows], offsets[rows + 1]
            n = b - a
            new_offsets = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)
            total = int(new_offsets[-1])
            if len(rows) and total >= _WIDE * len(rows) // 8:
                # Long segments (images): copy slices; an index array would be as big as the data.
                return new_offsets, np.concatenate(
                    [data[x:y] for x, y in zip(a.tolist(), b.tolist(), strict=True)] or [data[:0]]
                )
            take = np.repeat(a - new_offsets[:-1], n) + np.arange(total)
            return new_offsets, data[take.astype(np.int64)]

        po, p = ragged(self.param_offsets, self.params)
        vo, v = ragged(self.value_offsets, self.values)
        so, sh = ragged(self.shape_offsets, self.shapes)
        return TraceBatch(
            self.address_id[rows],
            self.instance[rows],
            self.kind[rows],
            self.flags[rows],
            self.dist_type[rows],
            po,
            p,
            vo,
            v,
            so,
            sh,
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            [self.results[i] for i in idx],
            self.wall_time[idx] if len(self.wall_time) == self.num_traces else self.wall_time,
            [self.errors[i] for i in idx] if self.errors else [],
            self.addresses,
            self.given_log_prob[rows] if self.given_log_prob is not None else None,
            count=self.count[rows] if self.count is not None else None,
        )

    def without_values(self, rows: np.ndarray, keep_log_prob: bool = False) -> TraceBatch:
        """The batch with the values and parameters of `rows` (a boolean row mask) left out and
        those rows marked value-omitted: how calorimeter images (0.6 MB a trace) are kept out of
        files that store them elsewhere or not at all. `keep_log_prob`: score those rows first
        and keep their log-densities (`given_log_prob`), so the likelihood survives in memory."""
        if not rows.any():
            return self
        given = self.given_log_prob
        if keep_log_prob:
            given = np.where(rows, self.log_prob(), np.nan if given is None else given)
        vsz, psz = np.diff(self.value_offsets), np.diff(self.param_offsets)
        return TraceBatch(
            self.address_id,
            self.instance,
            self.kind,
            np.where(rows, self.flags | FLAG_VALUE_OMITTED, self.flags).astype(np.uint8),
            self.dist_type,
            np.concatenate([[0], np.cumsum(np.where(rows, 0, psz))]).astype(np.int64),
            self.params[np.repeat(~rows, psz)],
            np.concatenate([[0], np.cumsum(np.where(rows, 0, vsz))]).astype(np.int64),
            self.values[np.repeat(~rows, vsz)],
            self.shape_offsets,
            self.shapes,
            self.trace_offsets,
            self.results,
            self.wall_time,
            self.errors,
            self.addresses,
            given_log_prob=given,
            count=self.count,
        )

    # --- files -------------------------------------------------------------------------------
    _ARRAYS = (
        "address_id",
        "instance",
        "kind",
        "flags",
        "dist_type",
        "param_offsets",
        "params",
        "value_offsets",
        "values",
        "shape_offsets",
        "shapes",
        "trace_offsets",
        "wall_time",
    )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The batch as named NumPy arrays (no objects): the DrawBatch columns, results as ragged
        arrays, the address table and errors as JSON strings, format version 1."""
        import json

        res = [np.zeros(0) if r is None else np.asarray(r, dtype=np.float64) for r in self.results]
        arrays = {k: getattr(self, k) for k in self._ARRAYS}
        arrays["result_offsets"] = np.concatenate([[0], np.cumsum([r.size for r in res])]).astype(np.int64)
        arrays["result_values"] = np.concatenate([r.ravel() for r in res]) if res else np.zeros(0)
        arrays["result_ndim"] = np.array([r.ndim for r in res], dtype=np.int8)
        table = [[r.id, r.address, r.name, r.dist_type, r.kind, r.source] for r in self.addresses]
        arrays["addresses_json"] = np.array(json.dumps(table))
        arrays["errors_json"] = np.array(json.dumps(self.errors))
        arrays["count"] = self.count if self.count is not None else np.ones(self.num_rows, np.uint32)
        if self.given_log_prob is not None:  # rows scored without their values (wide observations)
            arrays["given_log_prob"] = self.given_log_prob
        arrays["format_version"] = np.array(1)
        return arrays

    @classmethod
    def from_arrays(cls, f: Mapping[str, np.ndarray], addresses: AddressTable | None = None) -> TraceBatch:
        """Inverse of `to_arrays`; raises KeyError or ValueError on damaged input."""
        import json

        if int(f["format_version"]) != 1:
            raise ValueError(f"format version {int(f['format_version'])}, this probexec reads 1")
        cols = {k: f[k] for k in cls._ARRAYS}
        ro, rv, rn = f["result_offsets"], f["result_values"], f["result_ndim"]
        table = json.loads(str(f["addresses_json"]))
        errors = json.loads(str(f["errors_json"]))
        count = f.get("count")
        given = f.get("given_log_prob")
        addresses = addresses if addresses is not None else AddressTable()
        addresses.add_wire(tuple(r) for r in table)
        results: list[np.ndarray | None] = [
            rv[ro[i] : ro[i + 1]].reshape(())
            if rn[i] == 0 and ro[i + 1] - ro[i] == 1
            else rv[ro[i] : ro[i + 1]]
            for i in range(len(rn))
        ]
        batch = cls(
            **cols, results=results, errors=errors, addresses=addresses, count=count, given_log_prob=given
        )
        if batch.trace_offsets[-1] != batch.num_rows or len(results) != batch.num_traces:
            raise ValueError("inconsistent trace arrays (offsets do not match the rows)")
        if given is not None and len(given) != batch.num_rows:
            raise ValueError("inconsistent trace arrays (given_log_prob does not match the rows)")
        return batch

    def save(self, path: str | Path) -> None:
        """One `.npz` of `to_arrays()` (NumPy arrays only, no pickle), written to a temporary name
        and renamed, so a crash never leaves a half-written file under the real name."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **self.to_arrays())
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path, addresses: AddressTable | None = None) -> TraceBatch:
        import zipfile

        try:
            # Our own file handle: np.load leaves its own open when the zip directory is damaged.
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
                return cls.from_arrays({k: f[k] for k in f.files}, addresses)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: not a readable probexec trace file ({e})") from None

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def num_traces(self) -> int:
        return len(self.trace_offsets) - 1

    @property
    def num_rows(self) -> int:
        return len(self.address_id)

    def __len__(self) -> int:
        return self.num_traces

    @cached_property
    def row_trace(self) -> np.ndarray:
        """Index of the trace each row belongs to."""
        return np.repeat(np.arange(self.num_traces), np.diff(self.trace_offsets))

    @property
    def failed(self) -> np.ndarray:
        return np.array([bool(e) for e in self.errors], dtype=bool)

    # --- densities -----------------------------------------------------------------------------
    def log_prob(self) -> np.ndarray:
        """Log-density of every row's value under its distribution (0 for tags, NaN where the
        value was not recorded). One torch call per (type, value size, parameter size) group."""
        if "log_prob" in self._cache:
            return self._cache["log_prob"]
        out = np.zeros(self.num_rows)
        v_num = np.diff(self.value_offsets)
        p_num = np.diff(self.param_offsets)
        omitted = (self.flags & FLAG_VALUE_OMITTED) != 0
        out[omitted] = np.nan
        todo = (self.kind != TAG) & ~omitted & (self.dist_type > 0)
        if self.given_log_prob is not None:
            known = ~np.isnan(self.given_log_prob)
            out[known] = self.given_log_prob[known]
            todo &= ~known
        keys = self.dist_type.astype(np.int64) << 42 | v_num.astype(np.int64) << 21 | p_num.astype(np.int64)
        for key in np.unique(keys[todo]):
            idx = np.nonzero(todo & (keys == key))[0]
            dt, vn, pn = int(key >> 42), int((key >> 21) & 0x1FFFFF), int(key & 0x1FFFFF)
            vals_np = _gather(self.values, self.value_offsets[idx], vn)
            prm = _gather(self.params, self.param_offsets[idx], pn)
            out[idx] = score_rows(dt, vals_np, prm)
        self._cache["log_prob"] = out
        return out

    def _per_trace_sum(self, mask: np.ndarray) -> np.ndarray:
        lp = np.where(mask, self.log_prob(), 0.0)
        lp = np.nan_to_num(lp, nan=0.0, posinf=np.inf, neginf=-np.inf)
        sums = np.zeros(self.num_traces)
        np.add.at(sums, self.row_trace, lp)
        return sums

    def log_prior(self) -> np.ndarray:
        """Per trace: sum of the log-densities of its sampled values (those recorded), not counting
        samples the user observed."""
        return self._per_trace_sum((self.kind == SAMPLE) & ((self.flags & FLAG_OBSERVED) == 0))

    def log_likelihood(self) -> np.ndarray:
        """Per trace: sum of the log-densities of its observations, named samples observed included.
        Observations nobody gave a value for were simulated (FLAG_SIMULATED) and are left out: they
        are marginalised, not data."""
        data = (self.kind == OBSERVE) & ((self.flags & FLAG_SIMULATED) == 0)
        return self._per_trace_sum(data | ((self.flags & FLAG_OBSERVED) != 0))

    # --- conditioning --------------------------------------------------------------------------
    def condition(self, observations: Mapping[str, Any]) -> None:
        """Replaces the values of named observations by the user's (in place), so log_likelihood
        is the likelihood of the user's data."""
        for name, obs in observations.items():
            value = np.asarray(obs, dtype=np.float64).ravel()
            ids = self.addresses.ids_named(name, OBSERVE)
            rows = np.nonzero(
                np.isin(self.address_id, np.array(ids, dtype=np.uint64)) & (self.kind == OBSERVE)
            )[0]
            if len(rows) == 0:
                continue
            sizes = np.diff(self.value_offsets)[rows]
            bad = sizes != value.size
            if bad.any():
                raise ObservationError(
                    f"observation {name!r} has {value.size} value(s) but the model observes {int(sizes[bad][0])} there"
                )
            self.values = self.values.copy()
            self.values[self.value_offsets[rows][:, None] + np.arange(value.size)] = value
            self.flags = self.flags.copy()
            self.flags[rows] &= np.uint8(0xFF ^ FLAG_SIMULATED)  # data now
            self._cache.clear()

    # --- reading -------------------------------------------------------------------------------
    def _row_value(self, r: int) -> np.ndarray | None:
        if self.flags[r] & FLAG_VALUE_OMITTED:
            return None
        v = self.values[self.value_offsets[r] : self.value_offsets[r + 1]]
        shape = tuple(int(s) for s in self.shapes[self.shape_offsets[r] : self.shape_offsets[r + 1]])
        return v.reshape(shape) if int(np.prod(shape)) == v.size else v

    def values_of(self, name: str, instance: int = 1) -> np.ndarray:
        """Value of the named variable in each trace (NaN where a trace does not have it).
        Scalars give shape (traces,), vectors (traces, size)."""
        ids = np.array(self.addresses.ids_named(name), dtype=np.uint64)
        if len(ids) == 0:
            raise KeyError(
                f"no variable named {name!r} in these traces (names: {', '.join(self.addresses.names())})"
            )
        rows = np.nonzero(np.isin(self.address_id, ids) & (self.instance == instance))[0]
        sizes = np.diff(self.value_offsets)[rows]
        # Width 1 also when only counts were recorded (value-omitted rows): NaN per trace.
        width = max(int(sizes.max()), 1) if len(rows) else 1
        out = np.full((self.num_traces, width), np.nan)
        traces = self.row_trace[rows]
        ok = sizes == width
        out[traces[ok]] = _gather(self.values, self.value_offsets[rows[ok]], width)
        return out[:, 0] if width == 1 else out

    def means_of(self, name: str) -> np.ndarray:
        """The first parameter (the mean, for a Normal) of the named draw's distribution in each
        trace: for an observed image, the noiseless deposit. NaN where a trace lacks it."""
        ids = np.array(self.addresses.ids_named(name), dtype=np.uint64)
        rows = np.nonzero(np.isin(self.address_id, ids) & (self.instance == 1))[0]
        sizes = np.diff(self.value_offsets)[rows]
        width = max(int(sizes.max()), 1) if len(rows) else 1
        out = np.full((self.num_traces, width), np.nan)
        ok = (sizes == width) & (np.diff(self.param_offsets)[rows] >= width)
        out[self.row_trace[rows[ok]]] = _gather(self.params, self.param_offsets[rows[ok]], width)
        return out[:, 0] if width == 1 else out

    def trace_types(self) -> list[tuple[int, ...]]:
        ids = self.address_id
        return [
            tuple(ids[a:b].tolist())
            for a, b in zip(self.trace_offsets[:-1], self.trace_offsets[1:], strict=True)
        ]

    def trace(self, i: int) -> Trace:
        from probexec.distributions import from_wire

        if not -self.num_traces <= i < self.num_traces:
            raise IndexError(f"trace {i} of {self.num_traces}")
        i %= self.num_traces
        lp = self.log_prob()
        variables = []
        for r in range(int(self.trace_offsets[i]), int(self.trace_offsets[i + 1])):
            rec = self.addresses.get(int(self.address_id[r]))
            dt = int(self.dist_type[r])
            kind = int(self.kind[r])
            dist = None
            value = self._row_value(r)
            p = self.params[self.param_offsets[r] : self.param_offsets[r + 1]]
            if dt and kind != TAG and len(p):  # (a scored wide observation keeps no parameters)
                vn = max(1, int(self.value_offsets[r + 1] - self.value_offsets[r]))
                if dt == CATEGORICAL:
                    params = [torch.from_numpy(p.reshape(vn, -1) if vn > 1 else p.copy())]
                else:
                    k = len(p) // vn if vn else 0
                    params = [torch.from_numpy(p[j * vn : (j + 1) * vn].copy()).squeeze(0) for j in range(k)]
                dist = from_wire(dt, params, validate=False)
            variables.append(
                Variable(
                    address=rec.address if rec else "",
                    address_id=int(self.address_id[r]),
                    instance=int(self.instance[r]),
                    name=rec.name if rec else "",
                    kind=KIND_NAMES[kind],
                    distribution=dist,
                    value=None if value is None else torch.from_numpy(np.array(value)),
                    log_prob=float(lp[r]),
                    controlled=bool(self.flags[r] & FLAG_CONTROLLED),
                    replace=bool(self.flags[r] & FLAG_REPLACE),
                    count=int(self.count[r]) if self.count is not None else 1,
                )
            )
        res = self.results[i]
        return Trace(
            variables=variables,
            result=None if res is None else torch.from_numpy(np.array(res)),
            log_prior=float(self.log_prior()[i]),
            log_likelihood=float(self.log_likelihood()[i]),
            wall_time=float(self.wall_time[i]) if len(self.wall_time) > i else float("nan"),
            error=self.errors[i] if i < len(self.errors) else "",
        )

    def __iter__(self) -> Iterator[Trace]:
        for i in range(self.num_traces):
            yield self.trace(i)


def flatten_params(dist_type: int, p: Any, value: np.ndarray) -> np.ndarray:
    """A draw's parameters in the DrawBatch layout: every parameter broadcast to the value's size,
    in wire order (Categorical probs as they are)."""
    if not isinstance(p, tuple):
        return np.asarray(p, dtype=np.float64)
    if not p:
        return np.zeros(0)
    if value.size == 1 and all(type(q) is float for q in p):  # scalar priors, most draws
        return np.array(p, dtype=np.float64)
    if dist_type == CATEGORICAL or all(np.size(q) == value.size for q in p):
        return np.concatenate([np.ravel(q) for q in p]).astype(np.float64)
    shape = value.shape if value.size else np.broadcast_shapes(*(np.shape(q) for q in p))
    return np.concatenate([np.broadcast_to(q, shape).ravel() for q in p]).astype(np.float64)


class TraceBatchBuilder:
    """Accumulates rows draw by draw (the per-draw path) into a TraceBatch.

    One tuple per row on the hot path (a single list append); the columns are made once, in
    `build`."""

    def __init__(self, addresses: AddressTable) -> None:
        self.addresses = addresses
        # (address_id, instance, kind, flags, dist_type, params, value, log_prob, count)
        self._rows: list[tuple[Any, ...]] = []
        self._trace_offsets = [0]
        self._results: list[np.ndarray | None] = []
        self._wall: list[float] = []
        self._errors: list[str] = []

    def add(
        self,
        address_id: int,
        instance: int,
        kind: int,
        flags: int,
        dist_type: int,
        params: np.ndarray | tuple[Any, ...],
        value: np.ndarray | float | None,
        log_prob: float = float("nan"),
    ) -> None:
        self._rows.append((address_id, instance, kind, flags, dist_type, params, value, log_prob, 1))

    def add_wire(self, draws: Mapping[str, Any]) -> None:
        """Rows the simulator drew locally and reported in a DrawBatch."""
        self.addresses.add_wire(draws["addresses"])
        ids = draws["address_id"]
        po, vo, so = draws["param_offsets"], draws["value_offsets"], draws["shape_offsets"]
        params, values, shapes, flags = draws["params"], draws["values"], draws["shapes"], draws["flags"]
        counts = draws.get("count")
        for r in range(len(ids)):
            omitted = bool(flags[r] & FLAG_VALUE_OMITTED)
            v = None if omitted else values[vo[r] : vo[r + 1]].reshape(tuple(shapes[so[r] : so[r + 1]]))
            self._rows.append(
                (
                    int(ids[r]),
                    int(draws["instance"][r]),
                    int(draws["kind"][r]),
                    int(flags[r]),
                    int(draws["dist_type"][r]),
                    params[po[r] : po[r + 1]],
                    v,
                    float("nan"),
                    int(counts[r]) if counts is not None else 1,
                )
            )

    def end_trace(self, result: np.ndarray | None, wall_time: float, error: str = "") -> None:
        self._trace_offsets.append(len(self._rows))
        self._results.append(result)
        self._wall.append(wall_time)
        self._errors.append(error)

    def abandon_trace(self) -> None:
        """Forgets the rows of an unfinished trace."""
        del self._rows[self._trace_offsets[-1] :]

    @property
    def num_traces(self) -> int:
        return len(self._results)

    def build(self) -> TraceBatch:
        rows = self._rows
        n = len(rows)
        flags = np.fromiter((r[3] | (FLAG_VALUE_OMITTED if r[6] is None else 0) for r in rows), np.uint8, n)
        values = [np.zeros(0) if r[6] is None else np.asarray(r[6], dtype=np.float64) for r in rows]
        shapes = [
            np.asarray(v.shape if r[6] is not None else (), dtype=np.int32)
            for r, v in zip(rows, values, strict=True)
        ]
        params = [flatten_params(r[4], r[5], v) for r, v in zip(rows, values, strict=True)]

        def offsets(parts: list[np.ndarray]) -> np.ndarray:
            o = np.zeros(len(parts) + 1, dtype=np.int64)
            np.cumsum([p.size for p in parts], out=o[1:])
            return o

        def flat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate([p.ravel() for p in parts]).astype(dtype) if parts else np.zeros(0, dtype)

        log_prob = np.fromiter((r[7] for r in rows), np.float64, n)
        count = np.fromiter((r[8] for r in rows), np.uint32, n)
        return TraceBatch(
            np.fromiter((r[0] for r in rows), np.uint64, n),
            np.fromiter((r[1] for r in rows), np.uint32, n),
            np.fromiter((r[2] for r in rows), np.uint8, n),
            flags,
            np.fromiter((r[4] for r in rows), np.uint8, n),
            offsets(params),
            flat(params, np.float64),
            offsets(values),
            flat(values, np.float64),
            offsets(shapes),
            flat(shapes, np.int32),
            np.array(self._trace_offsets, dtype=np.int64),
            list(self._results),
            np.array(self._wall),
            list(self._errors),
            self.addresses,
            log_prob if not np.isnan(log_prob).all() else None,
            count=count if (count != 1).any() else None,
        )
