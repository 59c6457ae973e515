"""Rows that are mostly one value, stored as that fill value plus the exceptions.

A calorimeter image is 24 500 voxels of which a tau decay lights up ~260: its mean is 0 and its
noise stddev the noise floor almost everywhere. Storing the exceptions (int32 index + float32
value) takes ~2 kB per image instead of 98 kB dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SparseRows:
    """`n` rows of `size` float32 values: `fill` everywhere except at `index[ptr[i]:ptr[i+1]]`."""

    size: int
    fill: float
    ptr: np.ndarray  # int64 [n + 1]
    index: np.ndarray  # int32
    value: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.ptr) - 1

    @classmethod
    def encode(cls, dense: np.ndarray) -> SparseRows:
        dense = np.asarray(dense, dtype=np.float32)
        n, size = dense.shape
        if n == 0:
            return cls(size, 0.0, np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
        # The fill is the most common value of the first row (0 for a deposit, the noise floor
        # for a stddev); any choice is exact, a good one is small.
        vals, counts = np.unique(dense[0], return_counts=True)
        fill = float(vals[np.argmax(counts)])
        rows, cols = np.nonzero(dense != fill)
        ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)
        return cls(size, fill, ptr, cols.astype(np.int32), dense[rows, cols])

    def dense(self) -> np.ndarray:
        n = len(self)
        out = np.full((n, self.size), self.fill, dtype=np.float32)
        rows, cols = self.coo()
        out[rows, cols] = self.value
        return out

    def rows(self, a: int, b: int) -> SparseRows:
        lo, hi = int(self.ptr[a]), int(self.ptr[b])
        return SparseRows(
            self.size, self.fill, self.ptr[a : b + 1] - lo, self.index[lo:hi], self.value[lo:hi]
        )

    def take(self, idx: np.ndarray) -> SparseRows:
        """Rows `idx` in that order (a shuffle of a minibatch buffer), without a Python loop."""
        idx = np.asarray(idx, dtype=np.int64)
        lens = np.diff(self.ptr)[idx]
        ptr = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(lens, out=ptr[1:])
        # Position j of output row r reads input entry ptr_in[idx[r]] + j.
        src = np.repeat(self.ptr[idx] - ptr[:-1], lens) + np.arange(ptr[-1])
        return SparseRows(self.size, self.fill, ptr, self.index[src], self.value[src])

    def coo(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of every stored exception: what a device needs to fill a dense image."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.ptr)), self.index

    @staticmethod
    def concat(parts: list[SparseRows]) -> SparseRows:
        if len(parts) == 1:
            return parts[0]
        if len({p.fill for p in parts}) > 1 or len({p.size for p in parts}) > 1:
            # Different fills: re-encode densely (rare: parts of different shards).
            return SparseRows.encode(np.concatenate([p.dense() for p in parts]))
        ptrs, base = [np.zeros(1, np.int64)], 0
        for p in parts:
            ptrs.append(p.ptr[1:] + base)
            base += int(p.ptr[-1])
        return SparseRows(
            parts[0].size,
            parts[0].fill,
            np.concatenate(ptrs),
            np.concatenate([p.index for p in parts]),
            np.concatenate([p.value for p in parts]),
        )

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}/size": np.array(self.size, np.int64),
            f"{prefix}/fill": np.array(self.fill, np.float32),
            f"{prefix}/ptr": self.ptr,
            f"{prefix}/index": self.index,
            f"{prefix}/value": self.value,
        }

    @classmethod
    def from_arrays(cls, f: dict[str, np.ndarray], prefix: str) -> SparseRows:
        s = cls(
            int(f[f"{prefix}/size"]),
            float(f[f"{prefix}/fill"]),
            f[f"{prefix}/ptr"].astype(np.int64),
            f[f"{prefix}/index"].astype(np.int32),
            f[f"{prefix}/value"].astype(np.float32),
        )
        if len(s.ptr) == 0 or s.ptr[-1] != len(s.index) or len(s.index) != len(s.value):
            raise ValueError(f"{prefix}: inconsistent sparse rows")
        if len(s.index) and (s.index.min() < 0 or s.index.max() >= s.size):
            raise ValueError(f"{prefix}: sparse index out of range")
        return s
