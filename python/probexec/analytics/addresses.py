"""The address table: every address a simulator used, how often, with what values, and where.

`AddressStats` folds chunks of traces into per-address counters whose size depends on the number
of addresses, never on the number of traces: draws (a counted row stands for `count` draws),
rows, traces the address occurs in, the flags seen, a value summary (min, mean, std, max over all
value elements; category frequencies for discrete types) and a bounded sample of scalar values
(`Reservoir`) for comparing distributions between runs. All per-chunk work is a handful of NumPy
calls over the rows; Python loops run over the addresses of a chunk only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probexec.analytics.location import Location, locate
from probexec.analytics.reservoir import DEFAULT_CAPACITY, Reservoir
from probexec.analytics.sources import Chunk
from probexec.distributions import wire_type_name
from probexec.trace import (
    FLAG_CONTROLLED,
    FLAG_OBSERVED,
    FLAG_REPLACE,
    FLAG_VALUE_OMITTED,
    KIND_NAMES,
    OBSERVE,
    TAG,
    AddressRecord,
    AddressTable,
)

#: Wire types whose values are integers: summarised by category frequencies.
DISCRETE_TYPES = frozenset({3, 4, 5, 10})  # Categorical, Poisson, Bernoulli, Binomial
#: Distinct values kept per discrete address (more are counted as "other").
MAX_CATEGORIES = 64
#: Up to this many distinct values, the table lists each value's frequency.
SHOWN_CATEGORIES = 12


@dataclass
class AddressSummary:
    """Everything known about one address after the stream."""

    id: int
    record: AddressRecord | None
    location: Location
    kind: int
    dist_type: int
    flags: int = 0  # OR of the row flags seen
    rows: int = 0
    draws: int = 0
    traces: int = 0
    presence_lse: float = -math.inf  # log of the summed weights of the traces it occurs in
    first_seen: tuple[int, int] = (2**62, 0)  # (trace, position in trace) of its first occurrence
    value_elements: int = 0
    value_size: int = 0  # largest number of elements of one value
    v_min: float = math.inf
    v_max: float = -math.inf
    v_sum: float = 0.0
    v_sumsq: float = 0.0
    categories: dict[float, int] = field(default_factory=dict)
    other_categories: int = 0
    reservoir: Reservoir | None = None
    suffix: str = ""  # set when another address has the same label (see AddressStats.summaries)

    @property
    def name(self) -> str:
        return self.record.name if self.record else ""

    @property
    def label(self) -> str:
        """A short readable handle: the name, else the innermost function and line; with the
        call site that tells it apart when several addresses share one."""
        return self.base_label + self.suffix

    @property
    def base_label(self) -> str:
        if self.name:
            return self.name
        if self.location.function:
            fn = self.location.function.split("(")[0].split("::")[-1]
            return f"{fn}@{self.location.short}" if self.location.short else fn
        return f"{self.id:016x}"

    @property
    def controlled(self) -> bool:
        return bool(self.flags & FLAG_CONTROLLED)

    @property
    def observed(self) -> bool:
        return self.kind == OBSERVE or bool(self.flags & FLAG_OBSERVED)

    @property
    def tagged(self) -> bool:
        return self.kind == TAG

    @property
    def replace(self) -> bool:
        return bool(self.flags & FLAG_REPLACE)

    @property
    def node_kind(self) -> str:
        """For colouring: observed, tagged, replaced (a rejection loop), controlled or uncontrolled."""
        if self.observed:
            return "observed"
        if self.tagged:
            return "tagged"
        if self.replace:
            return "replaced"
        return "controlled" if self.controlled else "uncontrolled"

    @property
    def discrete(self) -> bool:
        return self.dist_type in DISCRETE_TYPES

    @property
    def mean(self) -> float:
        return self.v_sum / self.value_elements if self.value_elements else math.nan

    @property
    def std(self) -> float:
        if not self.value_elements:
            return math.nan
        m = self.mean
        return math.sqrt(max(self.v_sumsq / self.value_elements - m * m, 0.0))


class AddressStats:
    """Per-address counters over a stream of chunks (see the module docstring)."""

    def __init__(self, reservoir_capacity: int = DEFAULT_CAPACITY, seed: int = 0) -> None:
        self.reservoir_capacity = reservoir_capacity
        self.seed = seed
        self.by_id: dict[int, AddressSummary] = {}
        self.num_traces = 0
        self.total_lse = -math.inf  # log of the summed weights of all traces
        self.weighted = False
        self.addresses = AddressTable()
        self.sources: dict[int, str] = {}  # file:line resolved afterwards (location.resolve_missing)

    # --- folding ------------------------------------------------------------------------------
    def _summary(self, address_id: int, row: int, chunk: Chunk) -> AddressSummary:
        s = self.by_id.get(address_id)
        if s is None:
            b = chunk.batch
            rec = b.addresses.get(address_id)
            if rec is not None:
                self.addresses.add(rec)
            s = AddressSummary(
                address_id,
                rec,
                locate(rec) if rec else locate(AddressRecord(address_id, "", "", 0, 0)),
                int(b.kind[row]),
                int(b.dist_type[row]),
            )
            if s.kind != OBSERVE:
                s.reservoir = Reservoir(self.reservoir_capacity, seed=[self.seed, address_id % 2**32])
            self.by_id[address_id] = s
        return s

    def update(self, chunk: Chunk) -> None:
        b = chunk.batch
        n = b.num_traces
        self.num_traces += n
        lw = chunk.log_weights
        if lw is not None:
            self.weighted = True
        lw_traces = np.zeros(n) if lw is None else np.where(np.isnan(lw), -np.inf, lw)
        shift = float(lw_traces.max()) if n and np.isfinite(lw_traces).any() else 0.0
        w_traces = np.exp(lw_traces - shift)
        if n:
            self.total_lse = float(np.logaddexp(self.total_lse, math.log(w_traces.sum() or 1e-300) + shift))
        if b.num_rows == 0:
            return
        uniq, inv = np.unique(b.address_id, return_inverse=True)
        inv = inv.ravel()
        a = len(uniq)
        row_trace = b.row_trace
        count = b.count.astype(np.int64) if b.count is not None else np.ones(b.num_rows, np.int64)
        rows = np.bincount(inv, minlength=a)
        draws = np.bincount(inv, weights=count, minlength=a)
        flags = np.zeros(a, np.int64)
        for bit in (FLAG_CONTROLLED, FLAG_REPLACE, FLAG_VALUE_OMITTED, FLAG_OBSERVED):
            flags |= np.where(np.bincount(inv, weights=(b.flags & bit) != 0, minlength=a) > 0, bit, 0)
        # Traces an address occurs in: distinct (trace, address) pairs.
        pairs = np.unique(row_trace.astype(np.int64) * a + inv)
        pair_addr, pair_trace = pairs % a, pairs // a
        traces = np.bincount(pair_addr, minlength=a)
        presence = np.bincount(pair_addr, weights=w_traces[pair_trace], minlength=a)
        # First occurrence: the first row of each address in this chunk.
        first_row = np.full(a, b.num_rows, np.int64)
        np.minimum.at(first_row, inv, np.arange(b.num_rows))
        # Value elements per row (values recorded, not omitted).
        size = np.diff(b.value_offsets)
        has = (size > 0) & ((b.flags & FLAG_VALUE_OMITTED) == 0)
        vrows = np.nonzero(size > 0)[0]
        starts = b.value_offsets[vrows]
        values = b.values[: int(b.value_offsets[-1])]
        if len(vrows) and np.all(size[vrows] == 1):
            r_sum = values[starts]
            r_min = r_max = r_sum
            r_sq = r_sum * r_sum
        elif len(vrows):
            r_sum = np.add.reduceat(values, starts)
            r_min = np.minimum.reduceat(values, starts)
            r_max = np.maximum.reduceat(values, starts)
            r_sq = np.add.reduceat(values * values, starts)
        else:
            r_sum = r_min = r_max = r_sq = np.zeros(0)
        keep = has[vrows]
        vrows, r_sum, r_min, r_max, r_sq = vrows[keep], r_sum[keep], r_min[keep], r_max[keep], r_sq[keep]
        v_inv = inv[vrows]
        elements = np.bincount(v_inv, weights=size[vrows], minlength=a)
        v_sum = np.bincount(v_inv, weights=r_sum, minlength=a)
        v_sq = np.bincount(v_inv, weights=r_sq, minlength=a)
        v_min = np.full(a, np.inf)
        v_max = np.full(a, -np.inf)
        np.minimum.at(v_min, v_inv, r_min)
        np.maximum.at(v_max, v_inv, r_max)
        v_size = np.zeros(a, np.int64)
        np.maximum.at(v_size, v_inv, size[vrows])
        # Scalar values, grouped by address, for categories and reservoirs.
        scalar = size[vrows] == 1
        s_rows = vrows[scalar]
        s_vals = r_sum[scalar]
        s_inv = v_inv[scalar]
        order = np.argsort(s_inv, kind="stable")
        bounds = np.searchsorted(s_inv[order], np.arange(a + 1))
        s_lw = lw_traces[row_trace[s_rows]] if lw is not None else None
        offsets = b.trace_offsets
        for i in range(a):
            s = self._summary(int(uniq[i]), int(first_row[i]), chunk)
            s.flags |= int(flags[i])
            s.rows += int(rows[i])
            s.draws += int(draws[i])
            s.traces += int(traces[i])
            if presence[i] > 0:
                s.presence_lse = float(np.logaddexp(s.presence_lse, math.log(presence[i]) + shift))
            r = int(first_row[i])
            t = int(row_trace[r])
            first = (chunk.first_trace + t, r - int(offsets[t]))
            if first < s.first_seen:
                s.first_seen = first
            if elements[i]:
                s.value_elements += int(elements[i])
                s.v_sum += float(v_sum[i])
                s.v_sumsq += float(v_sq[i])
                s.v_min = min(s.v_min, float(v_min[i]))
                s.v_max = max(s.v_max, float(v_max[i]))
                s.value_size = max(s.value_size, int(v_size[i]))
            lo, hi = bounds[i], bounds[i + 1]
            if hi > lo:
                sel = order[lo:hi]
                vals = s_vals[sel]
                if s.discrete:
                    self._categories(s, vals)
                if s.reservoir is not None:
                    s.reservoir.add(vals, None if s_lw is None else s_lw[sel])

    @staticmethod
    def _categories(s: AddressSummary, vals: np.ndarray) -> None:
        u, c = np.unique(vals, return_counts=True)
        for v, k in zip(u.tolist(), c.tolist(), strict=True):
            if v in s.categories or len(s.categories) < MAX_CATEGORIES:
                s.categories[v] = s.categories.get(v, 0) + k
            else:
                s.other_categories += k

    # --- reading ------------------------------------------------------------------------------
    def resolve_sources(self, binary: str) -> int:
        """file:line for addresses that arrived without one, from the simulator binary's debug info."""
        from probexec.analytics.location import resolve_missing

        found = resolve_missing([s.record for s in self.by_id.values() if s.record], binary)
        for address_id, source in found.items():
            s = self.by_id[address_id]
            s.location = locate(s.record, source)  # type: ignore[arg-type]
        return len(found)

    def summaries(self) -> list[AddressSummary]:
        """In order of first occurrence (roughly the order of the code)."""
        self._disambiguate()
        return sorted(self.by_id.values(), key=lambda s: s.first_seen)

    def _disambiguate(self) -> None:
        """Addresses with one label (the same name reached through different call paths) get the
        first caller line where their stacks differ: `decay1/phi@decay.cpp:219`."""
        groups: dict[str, list[AddressSummary]] = {}
        for s in self.by_id.values():
            groups.setdefault(s.base_label, []).append(s)
        for group in groups.values():
            if len(group) == 1:
                group[0].suffix = ""
                continue
            depth = max(len(s.location.sources) for s in group)
            for s in group:
                s.suffix = f"#{s.id:016x}"[:9]
                for j in range(depth):
                    here = s.location.sources[j] if j < len(s.location.sources) else ""
                    others = [
                        o.location.sources[j] if j < len(o.location.sources) else ""
                        for o in group
                        if o is not s
                    ]
                    if here and here not in others:
                        s.suffix = "@" + here.rsplit("/", 1)[-1]
                        break

    def presence_fraction(self, s: AddressSummary) -> float:
        """Fraction of traces (of posterior mass, for weighted sources) the address occurs in."""
        if self.weighted:
            return math.exp(s.presence_lse - self.total_lse) if s.presence_lse > -math.inf else 0.0
        return s.traces / self.num_traces if self.num_traces else math.nan

    def table(self) -> list[dict[str, Any]]:
        """One row per address (the CSV and HTML table)."""
        out = []
        n = max(self.num_traces, 1)
        for s in self.summaries():
            cats = ""
            if len(s.categories) > SHOWN_CATEGORIES or s.other_categories:
                more = "+" if s.other_categories else ""
                cats = f"{len(s.categories)}{more} distinct values"  # a count: min/mean/max say more
            elif s.categories:
                total = sum(s.categories.values())
                cats = ", ".join(f"{_fmt_value(v)}: {k / total:.3g}" for v, k in sorted(s.categories.items()))
            row: dict[str, Any] = {
                "id": f"{s.id:016x}",
                "name": s.name,
                "label": s.label,
                "kind": KIND_NAMES[s.kind] if 0 <= s.kind < 3 else str(s.kind),
                "controlled": s.controlled,
                "observed": s.observed,
                "tagged": s.tagged,
                "replace": s.replace,
                "distribution": wire_type_name(s.dist_type) if s.dist_type else "",
                "function": s.location.function,
                "file_line": s.location.file_line,
                "stack": " | ".join(s.location.frames),
                "count": s.draws,
                "rows": s.rows,
                "per_trace": s.draws / n,
                "trace_fraction": s.traces / n,
            }
            if self.weighted:
                row["posterior_fraction"] = self.presence_fraction(s)
            row.update(
                {
                    "value_size": s.value_size,
                    "value_min": s.v_min if s.value_elements else math.nan,
                    "value_mean": s.mean,
                    "value_max": s.v_max if s.value_elements else math.nan,
                    "value_std": s.std,
                    "categories": cats,
                }
            )
            out.append(row)
        return out

    def nbytes(self) -> int:
        """Rough size of the state (for the memory figures): reservoirs dominate."""
        return sum(
            400 + (s.reservoir.nbytes if s.reservoir else 0) + 80 * len(s.categories)
            for s in self.by_id.values()
        )


def _fmt_value(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


__all__ = ["DISCRETE_TYPES", "AddressStats", "AddressSummary"]
