"""A bounded uniform sample of a stream of (value, log-weight) pairs.

Comparing an address's values between a prior of millions of traces and a posterior needs the
values, not only their moments, yet a stream cannot keep them all. Bottom-k sampling keeps a
uniform sample without replacement of fixed size: every value gets a uniform random key and the
`capacity` smallest keys are kept. It is vectorised (one `argpartition` per chunk, no per-value
Python) and the result does not depend on how the stream was cut into chunks. A value keeps its
trace's log-weight, so weighted statistics of the sample are unbiased for those of the stream.
"""

from __future__ import annotations

import numpy as np

DEFAULT_CAPACITY = 20_000


class Reservoir:
    def __init__(self, capacity: int = DEFAULT_CAPACITY, seed: int | list[int] = 0) -> None:
        if capacity < 1:
            raise ValueError(f"reservoir capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.seen = 0
        self._rng = np.random.default_rng(seed)
        self._keys = np.zeros(0)
        self._values = np.zeros(0)
        self._log_weights = np.zeros(0)

    def add(self, values: np.ndarray, log_weights: np.ndarray | None = None) -> None:
        n = len(values)
        if n == 0:
            return
        self.seen += n
        keys = self._rng.random(n)
        lw = np.zeros(n) if log_weights is None else np.asarray(log_weights, dtype=np.float64)
        if len(self._keys) + n <= self.capacity:
            self._keys = np.concatenate([self._keys, keys])
            self._values = np.concatenate([self._values, np.asarray(values, dtype=np.float64)])
            self._log_weights = np.concatenate([self._log_weights, lw])
            return
        if len(self._keys) == self.capacity:
            # Only new values with a key below the current largest kept key can enter.
            keep_new = keys < self._keys.max()
            keys, values, lw = keys[keep_new], np.asarray(values)[keep_new], lw[keep_new]
        k = np.concatenate([self._keys, keys])
        v = np.concatenate([self._values, np.asarray(values, dtype=np.float64)])
        w = np.concatenate([self._log_weights, lw])
        if len(k) > self.capacity:
            idx = np.argpartition(k, self.capacity - 1)[: self.capacity]
            k, v, w = k[idx], v[idx], w[idx]
        self._keys, self._values, self._log_weights = k, v, w

    @property
    def values(self) -> np.ndarray:
        return self._values

    @property
    def log_weights(self) -> np.ndarray:
        return self._log_weights

    def __len__(self) -> int:
        return len(self._values)

    @property
    def nbytes(self) -> int:
        return self._keys.nbytes + self._values.nbytes + self._log_weights.nbytes
