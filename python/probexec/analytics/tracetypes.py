"""Trace types: the distinct execution paths of a simulator, and trace-length distributions.

A trace's type is its sequence of address ids (`Trace.trace_type`). Comparing sequences trace by
trace in Python would cost a tuple per trace; instead each row gets a 64-bit hash of (address id,
position in its trace), and a trace's hash is the wrapping sum of its rows' hashes and its length:
two cumulative sums per chunk, no per-trace Python. Distinct types are then counted with one
`np.unique` per chunk. (Two different sequences share a hash with probability ~2^-64 per pair.)

The state grows with the number of distinct types, not with the number of traces; a simulator with
unboundedly many types (a rejection loop with no cap has one per loop length) is still bounded by
`max_types`, after which traces of new types are counted together as "not kept".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from probexec.analytics.sources import Chunk
from probexec.trace import FLAG_CONTROLLED

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise (wrapping uint64 arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def trace_hashes(address_id: np.ndarray, trace_offsets: np.ndarray) -> np.ndarray:
    """One uint64 per trace, equal for traces with the same address sequence."""
    n_rows = len(address_id)
    starts = trace_offsets[:-1]
    lengths = np.diff(trace_offsets)
    pos = (np.arange(n_rows, dtype=np.int64) - np.repeat(starts, lengths)).astype(np.uint64)
    h = _mix(address_id.astype(np.uint64) + pos * _GOLDEN)
    cs = np.zeros(n_rows + 1, np.uint64)
    np.cumsum(h, out=cs[1:])
    return (cs[trace_offsets[1:]] - cs[starts]) + _mix(lengths.astype(np.uint64) ^ _GOLDEN)


@dataclass
class TraceType:
    hash: int
    count: int
    weight_lse: float  # log of the summed weights of its traces
    length: int
    controlled_length: int
    draws: int  # draws of one trace of this type (counted rows stand for several draws)
    example: int  # index of its first trace in the source
    sequence: np.ndarray  # its address ids


class TraceTypeStats:
    """Counts of trace types and histograms of trace lengths over a stream of chunks."""

    def __init__(self, max_types: int = 100_000) -> None:
        self.max_types = max_types
        self.types: dict[int, TraceType] = {}
        self.num_traces = 0
        self.not_kept = 0  # traces of types seen after max_types were stored
        self.total_lse = -math.inf
        self.weighted = False
        self.length_counts = np.zeros(0, np.int64)
        self.controlled_counts = np.zeros(0, np.int64)

    @staticmethod
    def _add_counts(acc: np.ndarray, values: np.ndarray) -> np.ndarray:
        c = np.bincount(values)
        if len(c) > len(acc):
            acc = np.concatenate([acc, np.zeros(len(c) - len(acc), np.int64)])
        acc[: len(c)] += c
        return acc

    def update(self, chunk: Chunk) -> None:
        b = chunk.batch
        n = b.num_traces
        if n == 0:
            return
        self.num_traces += n
        lengths = np.diff(b.trace_offsets)
        controlled = np.bincount(b.row_trace, weights=(b.flags & FLAG_CONTROLLED) != 0, minlength=n).astype(
            np.int64
        )
        count = b.count.astype(np.int64) if b.count is not None else None
        draws = (
            np.bincount(b.row_trace, weights=count, minlength=n).astype(np.int64)
            if count is not None
            else lengths
        )
        self.length_counts = self._add_counts(self.length_counts, lengths)
        self.controlled_counts = self._add_counts(self.controlled_counts, controlled)
        lw = chunk.log_weights
        if lw is not None:
            self.weighted = True
            lw = np.where(np.isnan(lw), -np.inf, lw)
        else:
            lw = np.zeros(n)
        shift = float(lw.max()) if np.isfinite(lw).any() else 0.0
        w = np.exp(lw - shift)
        self.total_lse = float(np.logaddexp(self.total_lse, math.log(w.sum() or 1e-300) + shift))
        h = trace_hashes(b.address_id, b.trace_offsets)
        uniq, first, inv, counts = np.unique(h, return_index=True, return_inverse=True, return_counts=True)
        wsum = np.bincount(inv.ravel(), weights=w, minlength=len(uniq))
        for k in range(len(uniq)):
            key = int(uniq[k])
            t = self.types.get(key)
            lse = math.log(wsum[k]) + shift if wsum[k] > 0 else -math.inf
            if t is not None:
                t.count += int(counts[k])
                t.weight_lse = float(np.logaddexp(t.weight_lse, lse))
                continue
            if len(self.types) >= self.max_types:
                self.not_kept += int(counts[k])
                continue
            i = int(first[k])
            a, z = int(b.trace_offsets[i]), int(b.trace_offsets[i + 1])
            self.types[key] = TraceType(
                key,
                int(counts[k]),
                lse,
                int(lengths[i]),
                int(controlled[i]),
                int(draws[i]),
                chunk.first_trace + i,
                b.address_id[a:z].copy(),
            )

    # --- reading ------------------------------------------------------------------------------
    def ranked(self) -> list[TraceType]:
        """Most frequent first (posterior mass first, for weighted sources)."""
        key = (lambda t: -t.weight_lse) if self.weighted else (lambda t: -t.count)
        return sorted(self.types.values(), key=lambda t: (key(t), t.example))

    def mass(self, t: TraceType) -> float:
        return math.exp(t.weight_lse - self.total_lse) if t.weight_lse > -math.inf else 0.0

    def table(
        self, label: Callable[[int], str], top: int = 25
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The `top` most frequent types (one row each) and a summary of the rest (the long tail)."""
        ranked = self.ranked()
        n = max(self.num_traces, 1)
        rows = []
        for rank, t in enumerate(ranked[:top], start=1):
            row: dict[str, Any] = {
                "rank": rank,
                "type": f"{t.hash:016x}",
                "count": t.count,
                "frequency": t.count / n,
            }
            if self.weighted:
                row["posterior_mass"] = self.mass(t)
            row.update(
                {
                    "length": t.length,
                    "controlled_length": t.controlled_length,
                    "draws": t.draws,
                    "example_trace": t.example,
                    "sequence": compress([label(int(a)) for a in t.sequence]),
                }
            )
            rows.append(row)
        rest = ranked[top:]
        tail = {
            "types": len(self.types),
            "shown": min(top, len(ranked)),
            "other_types": len(rest),
            "other_traces": sum(t.count for t in rest) + self.not_kept,
            "other_frequency": (sum(t.count for t in rest) + self.not_kept) / n,
            "not_kept": self.not_kept,
            "types_with_one_trace": sum(t.count == 1 for t in ranked),
        }
        return rows, tail

    def length_table(self) -> list[dict[str, Any]]:
        """Trace-length distribution (rows per trace), all and controlled."""
        size = max(len(self.length_counts), len(self.controlled_counts))
        n = max(self.num_traces, 1)
        out = []
        for k in range(size):
            a = int(self.length_counts[k]) if k < len(self.length_counts) else 0
            c = int(self.controlled_counts[k]) if k < len(self.controlled_counts) else 0
            if a or c:
                out.append(
                    {
                        "length": k,
                        "traces": a,
                        "fraction": a / n,
                        "controlled_traces": c,
                        "controlled_fraction": c / n,
                    }
                )
        return out

    def length_moments(self) -> dict[str, float]:
        def moments(counts: np.ndarray) -> tuple[float, float, int, int]:
            k = np.arange(len(counts))
            total = counts.sum()
            if total == 0:
                return math.nan, math.nan, 0, 0
            mean = float((k * counts).sum() / total)
            std = float(math.sqrt(max((k * k * counts).sum() / total - mean * mean, 0.0)))
            nz = np.nonzero(counts)[0]
            return mean, std, int(nz[0]), int(nz[-1])

        m, s, lo, hi = moments(self.length_counts)
        cm, cs, clo, chi = moments(self.controlled_counts)
        return {
            "mean_length": m,
            "std_length": s,
            "min_length": lo,
            "max_length": hi,
            "mean_controlled_length": cm,
            "std_controlled_length": cs,
            "min_controlled_length": clo,
            "max_controlled_length": chi,
        }


def compress(labels: Sequence[str], max_block: int = 4) -> str:
    """`a b c b c b c d` -> `a → (b → c)×3 → d`: repeated blocks (loops) written once."""
    parts: list[str] = []
    i, n = 0, len(labels)
    while i < n:
        best = (1, 1)  # (block length, repeats)
        for size in range(1, max_block + 1):
            block = labels[i : i + size]
            if len(block) < size:
                break
            reps = 1
            while list(labels[i + reps * size : i + (reps + 1) * size]) == list(block):
                reps += 1
            if reps > 1 and reps * size > best[0] * best[1]:
                best = (size, reps)
        size, reps = best
        block_text = " → ".join(labels[i : i + size])
        if reps > 1:
            parts.append(f"({block_text})×{reps}" if size > 1 else f"{block_text}×{reps}")
        else:
            parts.append(block_text)
        i += size * reps
    return " → ".join(parts)
