"""From traces to training tensors: which draws a proposal network learns, grouped by trace type.

A network proposes values for *controlled* samples only (uncontrolled draws stay with the
simulator, observed samples are fixed). A rejection loop marks its draws `replace`: only the
iteration that left the loop matters for the posterior, so only the last draw of each replaced
address in a trace is kept, and it takes instance 1 — every iteration shares one proposal.
What is left, the sequence of (address id, instance) with each value's size, is the trace's
*type*: traces of one type have identical structure, so a minibatch of one type is a dense
`[batch, values]` tensor and the LSTM runs over it with no padding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from probexec.data.sparse import SparseRows
from probexec.trace import (
    FLAG_CONTROLLED,
    FLAG_OBSERVED,
    FLAG_REPLACE,
    FLAG_VALUE_OMITTED,
    OBSERVE,
    SAMPLE,
    AddressTable,
    TraceBatch,
)

# Observations bigger than this, drawn from a Normal (a calorimeter image with per-voxel noise),
# are stored as their mean and stddev (mostly one fill value: sparse) and drawn afresh on load.
RESAMPLE_MIN_SIZE = 1024
NORMAL = 1


@dataclass(frozen=True)
class Site:
    """One controlled draw of a trace type, as the network sees it."""

    address_id: int
    instance: int
    dist_type: int
    value_size: int
    param_size: int
    replace: bool
    name: str = ""

    @property
    def key(self) -> str:
        """Names the network's per-site layers: hex id and instance."""
        return f"{self.address_id:016x}_{self.instance}"


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class TypeLayout:
    """The controlled draws of one trace type, in order, with where each sits in the dense rows."""

    sites: tuple[Site, ...]

    # Cached: minibatching and every training step ask for these, and the key costs a JSON
    # encoding and a hash (7.5 us per trace of batch-making on the tau decay).
    @cached_property
    def key(self) -> str:
        blob = json.dumps(
            [(s.address_id, s.instance, s.dist_type, s.value_size, s.param_size) for s in self.sites]
        )
        return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()

    @cached_property
    def value_offsets(self) -> np.ndarray:
        return _read_only(
            np.concatenate([[0], np.cumsum([s.value_size for s in self.sites])]).astype(np.int64)
        )

    @cached_property
    def param_offsets(self) -> np.ndarray:
        return _read_only(
            np.concatenate([[0], np.cumsum([s.param_size for s in self.sites])]).astype(np.int64)
        )

    def __len__(self) -> int:
        return len(self.sites)

    def to_json(self) -> list[list[Any]]:
        return [
            [str(s.address_id), s.instance, s.dist_type, s.value_size, s.param_size, s.replace, s.name]
            for s in self.sites
        ]

    @classmethod
    def from_json(cls, rows: list[list[Any]]) -> TypeLayout:
        return cls(
            tuple(
                Site(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), bool(r[5]), str(r[6]))
                for r in rows
            )
        )


@dataclass
class ObservationBlock:
    """One named observation for a group of traces: dense values, or (for big Normal observations)
    the mean and stddev from which values are drawn on load."""

    name: str
    shape: tuple[int, ...]
    values: np.ndarray | None = None  # [n, size] float32
    loc: SparseRows | None = None
    scale: SparseRows | None = None

    def __len__(self) -> int:
        if self.values is not None:
            return len(self.values)
        assert self.loc is not None
        return len(self.loc)

    def rows(self, a: int, b: int) -> ObservationBlock:
        if self.values is not None:
            return ObservationBlock(self.name, self.shape, values=self.values[a:b])
        assert self.loc is not None and self.scale is not None
        return ObservationBlock(self.name, self.shape, loc=self.loc.rows(a, b), scale=self.scale.rows(a, b))

    def take(self, idx: np.ndarray) -> ObservationBlock:
        """Rows `idx` in that order (a mixed minibatch drawn from a pool of traces)."""
        if self.values is not None:
            return ObservationBlock(self.name, self.shape, values=self.values[idx])
        assert self.loc is not None and self.scale is not None
        return ObservationBlock(self.name, self.shape, loc=self.loc.take(idx), scale=self.scale.take(idx))

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """The values, `[n, *shape]` float32 (drawn from Normal(loc, scale) when stored that way)."""
        if self.values is not None:
            out = self.values
        else:
            assert self.loc is not None and self.scale is not None
            loc, scale = self.loc.dense(), self.scale.dense()
            out = loc + scale * rng.standard_normal(loc.shape, dtype=np.float32)
        return out.reshape((len(out), *self.shape))

    @staticmethod
    def concat(blocks: list[ObservationBlock]) -> ObservationBlock:
        b0 = blocks[0]
        if b0.values is not None:
            return ObservationBlock(b0.name, b0.shape, values=np.concatenate([b.values for b in blocks]))  # type: ignore[misc]
        return ObservationBlock(
            b0.name,
            b0.shape,
            loc=SparseRows.concat([b.loc for b in blocks]),  # type: ignore[misc]
            scale=SparseRows.concat([b.scale for b in blocks]),  # type: ignore[misc]
        )


@dataclass
class TypeGroup:
    """Traces of one type: controlled values and prior parameters as dense float32 rows, plus the
    observations. The unit a shard stores and a minibatch is cut from."""

    layout: TypeLayout
    values: np.ndarray  # [n, sum value sizes]
    params: np.ndarray  # [n, sum param sizes]
    observations: dict[str, ObservationBlock] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)

    def rows(self, a: int, b: int) -> TypeGroup:
        return TypeGroup(
            self.layout,
            self.values[a:b],
            self.params[a:b],
            {k: o.rows(a, b) for k, o in self.observations.items()},
        )

    @staticmethod
    def concat(groups: list[TypeGroup]) -> TypeGroup:
        if len(groups) == 1:
            return groups[0]
        return TypeGroup(
            groups[0].layout,
            np.concatenate([g.values for g in groups]),
            np.concatenate([g.params for g in groups]),
            {k: ObservationBlock.concat([g.observations[k] for g in groups]) for k in groups[0].observations},
        )


def observation_name(addresses: AddressTable, address_id: int) -> str:
    rec = addresses.get(address_id)
    return rec.name if rec is not None and rec.name else f"address_{address_id:016x}"


def kept_controlled_rows(batch: TraceBatch) -> np.ndarray:
    """Row indices (in trace order) of the draws a proposal network controls, loop iterations
    other than the last dropped."""
    f = batch.flags
    mask = (
        (batch.kind == SAMPLE)
        & ((f & FLAG_CONTROLLED) != 0)
        & ((f & (FLAG_OBSERVED | FLAG_VALUE_OMITTED)) == 0)
    )
    rep = np.nonzero(mask & ((f & FLAG_REPLACE) != 0))[0]
    if len(rep):
        t, a = batch.row_trace[rep], batch.address_id[rep]
        order = np.lexsort((rep, a, t))
        t, a, r = t[order], a[order], rep[order]
        last = np.ones(len(r), dtype=bool)
        last[:-1] = (t[1:] != t[:-1]) | (a[1:] != a[:-1])
        mask[r[~last]] = False
    return np.nonzero(mask)[0]


def split_by_type(batch: TraceBatch) -> tuple[list[TypeGroup], np.ndarray, np.ndarray]:
    """Groups the traces of `batch` by type. Returns the groups, the trace order that puts the
    batch's traces group after group, and each group's first position in that order (+ the end).
    Failed traces (the model threw) are left out."""
    rows = kept_controlled_rows(batch)
    rtrace = batch.row_trace[rows]
    n = batch.num_traces
    bounds = np.searchsorted(rtrace, np.arange(n + 1))
    vsz = np.diff(batch.value_offsets)[rows]
    psz = np.diff(batch.param_offsets)[rows]
    replace = (batch.flags[rows] & FLAG_REPLACE) != 0
    inst = np.where(replace, 1, batch.instance[rows]).astype(np.int64)
    aid = batch.address_id[rows]
    signature = np.stack([aid.astype(np.int64), inst, batch.dist_type[rows].astype(np.int64), vsz, psz], 1)
    failed = batch.failed if batch.errors else np.zeros(n, dtype=bool)
    by_key: dict[bytes, list[int]] = {}
    for i in range(n):
        if failed[i]:
            continue
        by_key.setdefault(signature[bounds[i] : bounds[i + 1]].tobytes(), []).append(i)

    obs_rows = np.nonzero((batch.kind == OBSERVE) & (batch.instance == 1))[0]
    obs_by_name: dict[str, np.ndarray] = {}
    for aid_o in np.unique(batch.address_id[obs_rows]):
        r = obs_rows[batch.address_id[obs_rows] == aid_o]
        obs_by_name.setdefault(observation_name(batch.addresses, int(aid_o)), r)

    groups: list[TypeGroup] = []
    order: list[np.ndarray] = []
    starts = [0]
    for traces_list in by_key.values():
        traces = np.asarray(traces_list)
        i0 = traces[0]
        sel = rows[bounds[i0] : bounds[i0 + 1]]
        sites = tuple(
            Site(
                int(batch.address_id[r]),
                int(inst[bounds[i0] + j]),
                int(batch.dist_type[r]),
                int(vsz[bounds[i0] + j]),
                int(psz[bounds[i0] + j]),
                bool(replace[bounds[i0] + j]),
                observation_name(batch.addresses, int(batch.address_id[r])),
            )
            for j, r in enumerate(sel)
        )
        layout = TypeLayout(sites)
        krows = (
            np.concatenate([rows[bounds[i] : bounds[i + 1]] for i in traces])
            if len(sites)
            else np.zeros(0, np.int64)
        )
        values = _dense(batch.values, batch.value_offsets, krows, len(traces), int(layout.value_offsets[-1]))
        params = _dense(batch.params, batch.param_offsets, krows, len(traces), int(layout.param_offsets[-1]))
        obs = {name: _observation_block(batch, name, r, traces) for name, r in obs_by_name.items()}
        groups.append(TypeGroup(layout, values, params, {k: v for k, v in obs.items() if v is not None}))
        order.append(traces)
        starts.append(starts[-1] + len(traces))
    perm = np.concatenate(order) if order else np.zeros(0, np.int64)
    return groups, perm, np.asarray(starts, dtype=np.int64)


def _dense(data: np.ndarray, offsets: np.ndarray, rows: np.ndarray, n: int, width: int) -> np.ndarray:
    """The ragged slices of `rows` (n traces with identical layouts) as one [n, width] array."""
    if width == 0 or n == 0:
        return np.zeros((n, width), np.float32)
    sizes = np.diff(offsets)[rows]
    take = np.repeat(offsets[rows] - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes) + np.arange(
        sizes.sum()
    )
    return data[take].astype(np.float32).reshape(n, width)


def _observation_block(
    batch: TraceBatch, name: str, rows: np.ndarray, traces: np.ndarray
) -> ObservationBlock | None:
    """The observation `name` of `traces` (each must have it, with one shape), or None."""
    by_trace = np.full(batch.num_traces, -1, np.int64)
    by_trace[batch.row_trace[rows]] = rows
    r = by_trace[traces]
    if (r < 0).any():
        return None
    size = int(batch.value_offsets[r[0] + 1] - batch.value_offsets[r[0]])
    so = batch.shape_offsets
    shape = tuple(int(s) for s in batch.shapes[so[r[0]] : so[r[0] + 1]]) or ((size,) if size != 1 else ())
    if int(np.prod(shape)) != size or (np.diff(batch.value_offsets)[r] != size).any():
        return None
    dt = int(batch.dist_type[r[0]])
    psize = np.diff(batch.param_offsets)[r]
    if (
        dt == NORMAL
        and size >= RESAMPLE_MIN_SIZE
        and (psize == 2 * size).all()
        and (batch.dist_type[r] == NORMAL).all()
    ):
        p = _dense(batch.params, batch.param_offsets, r, len(r), 2 * size)
        return ObservationBlock(
            name, shape, loc=SparseRows.encode(p[:, :size]), scale=SparseRows.encode(p[:, size:])
        )
    if (batch.flags[r] & FLAG_VALUE_OMITTED).any():
        return None
    return ObservationBlock(name, shape, values=_dense(batch.values, batch.value_offsets, r, len(r), size))


def iter_minibatches(group: TypeGroup, batch_size: int) -> Iterator[TypeGroup]:
    for a in range(0, len(group), batch_size):
        yield group.rows(a, min(a + batch_size, len(group)))
