"""Trace datasets on disk: a directory of shards that many processes can write at once and a
trainer can stream without loading whole.

Layout (format version 1; NumPy `.npz` and JSON only, nothing is unpickled)::

    DIR/dataset.json              {"format": "probexec-dataset", "version": 1, "simulator": NAME}
    DIR/shards/NAME.npz           one shard: the traces of one chunk, grouped by trace type
    DIR/shards/NAME.json          its sidecar: sha256 and size of the .npz, trace and type counts,
                                  every type's layout, the address table

A shard's `.npz` holds

* `trace/*`: the traces themselves (`TraceBatch.to_arrays`), in type order, failed traces last,
  with big observations (>= 1024 values) stripped to keep the file small;
* `g{k}/values`, `g{k}/params`: type k's controlled values and prior parameters, float32
  `[traces, width]` (see `layout.py`);
* `g{k}/obs/NAME/values` (float32 `[traces, size]`), or for a big Normal observation its
  `g{k}/obs/NAME/loc/*` and `.../scale/*` as `SparseRows`: the observation is drawn afresh from
  them when a batch is made, which has the same joint distribution as the stored noisy image.

Writers never touch each other's files: each shard has a unique name, is written under a
temporary name and renamed, and its sidecar (written last, also by rename) is what makes it part
of the dataset. Readers check the sha256 of every shard they open.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import socket
import threading
import time
import uuid
import warnings
import zipfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probexec.data.layout import (
    RESAMPLE_MIN_SIZE,
    ObservationBlock,
    TypeGroup,
    TypeLayout,
    split_by_type,
)
from probexec.data.sparse import SparseRows
from probexec.errors import ProbexecError
from probexec.lifeline import exit_with_parent
from probexec.trace import AddressRecord, AddressTable, TraceBatch

FORMAT = "probexec-dataset"
VERSION = 1


class DatasetError(ProbexecError, ValueError):
    """A dataset directory that cannot be read: missing, another simulator, a damaged shard."""


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    sha256: str
    bytes: int
    num_traces: int
    groups: list[tuple[TypeLayout, int]]  # layout and trace count, in shard order
    seconds: float = 0.0


@dataclass
class WriteStats:
    shards: int = 0
    traces: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def bytes_per_trace(self) -> float:
        return self.bytes / max(self.traces, 1)

    @property
    def traces_per_second(self) -> float:
        return self.traces / self.seconds if self.seconds > 0 else float("nan")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def encode_shard(batch: TraceBatch) -> tuple[bytes, list[tuple[TypeLayout, int]], dict[str, Any]]:
    """The shard file's bytes, its groups, and what its observations are (name -> shape, storage)."""
    groups, perm, _starts = split_by_type(batch)
    failed = np.setdiff1d(np.arange(batch.num_traces), perm)
    ordered = batch.select(np.concatenate([perm, failed]).astype(np.int64)) if batch.num_traces else batch
    arrays: dict[str, np.ndarray] = {
        f"trace/{k}": v
        for k, v in ordered.without_values(np.diff(ordered.value_offsets) >= RESAMPLE_MIN_SIZE)
        .to_arrays()
        .items()
    }
    meta: list[dict[str, Any]] = []
    observations: dict[str, Any] = {}
    for k, g in enumerate(groups):
        arrays[f"g{k}/values"] = g.values
        arrays[f"g{k}/params"] = g.params
        for name, ob in g.observations.items():
            p = f"g{k}/obs/{name}"
            if ob.values is not None:
                arrays[f"{p}/values"] = ob.values
                storage = "values"
            else:
                assert ob.loc is not None and ob.scale is not None
                arrays.update(ob.loc.arrays(f"{p}/loc"))
                arrays.update(ob.scale.arrays(f"{p}/scale"))
                storage = "normal"
            observations[name] = {"shape": list(ob.shape), "storage": storage}
        meta.append(
            {
                "key": g.layout.key,
                "count": len(g),
                "layout": g.layout.to_json(),
                "observations": sorted(g.observations),
            }
        )
    arrays["groups_json"] = np.array(json.dumps(meta))
    arrays["shard_format_version"] = np.array(VERSION)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue(), [(g.layout, len(g)) for g in groups], observations


def decode_shard(data: bytes, addresses: AddressTable | None = None) -> tuple[TraceBatch, list[TypeGroup]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        _check_shard_version(f)
        arrays = {k: f[k] for k in f.files}
    traces = TraceBatch.from_arrays(
        {k[6:]: v for k, v in arrays.items() if k.startswith("trace/")}, addresses
    )
    return traces, _groups_from_arrays(arrays)


def decode_groups(data: bytes) -> list[TypeGroup]:
    """Only the type groups of a shard: what training reads. Leaves the `trace/*` arrays (about
    half of a shard's members) unread, which halves the time to decode a shard."""
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        _check_shard_version(f)
        arrays = {k: f[k] for k in f.files if not k.startswith("trace/")}
    return _groups_from_arrays(arrays)


def _check_shard_version(f: Any) -> None:
    if int(f["shard_format_version"]) != VERSION:
        raise ValueError(
            f"shard format version {int(f['shard_format_version'])}, this probexec reads {VERSION}"
        )


def _groups_from_arrays(arrays: dict[str, np.ndarray]) -> list[TypeGroup]:
    groups = []
    for k, g in enumerate(json.loads(str(arrays["groups_json"]))):
        layout = TypeLayout.from_json(g["layout"])
        obs = {}
        for name in g["observations"]:
            p = f"g{k}/obs/{name}"
            if f"{p}/values" in arrays:
                v = arrays[f"{p}/values"]
                obs[name] = ObservationBlock(name, (), values=v)
            else:
                obs[name] = ObservationBlock(
                    name,
                    (),
                    loc=SparseRows.from_arrays(arrays, f"{p}/loc"),
                    scale=SparseRows.from_arrays(arrays, f"{p}/scale"),
                )
        group = TypeGroup(layout, arrays[f"g{k}/values"], arrays[f"g{k}/params"], obs)
        if (
            len(group) != g["count"]
            or group.values.shape[1] != layout.value_offsets[-1]
            or any(len(o) != g["count"] for o in obs.values())
        ):
            raise ValueError(f"group {k}: arrays do not match its layout")
        groups.append(group)
    return groups


class DatasetWriter:
    """Appends shards to a dataset directory (created if missing). Safe to use from several
    threads and from several processes writing the same directory.

    With `shard_traces` > 0, batches are held until that many traces are in hand and written as
    one shard: a simulator pool hands over chunks of a few dozen traces, and a shard per chunk
    makes tens of thousands of small files for a million traces, each read with its own fixed
    cost. Held traces are written by `close()` (or leaving a `with` block)."""

    def __init__(
        self,
        path: str | Path,
        simulator: str,
        addresses: AddressTable | None = None,
        shard_traces: int = 0,
    ) -> None:
        self.path = Path(path)
        self.shard_traces = shard_traces
        self._held: list[TraceBatch] = []
        self._held_traces = 0
        self.simulator = simulator
        self.addresses = addresses
        (self.path / "shards").mkdir(parents=True, exist_ok=True)
        manifest = self.path / "dataset.json"
        if manifest.exists():
            info = _read_manifest(self.path)
            if info["simulator"] != simulator:
                raise DatasetError(
                    f"{self.path} holds traces of simulator {info['simulator']!r}, not {simulator!r}"
                )
        else:
            blob = json.dumps(
                {"format": FORMAT, "version": VERSION, "simulator": simulator}, indent=2
            ).encode()
            _atomic_write(manifest, blob)
        self.stats = WriteStats()
        self._lock = threading.Lock()
        self._prefix = f"{socket.gethostname()}-{os.getpid()}"

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, batch: TraceBatch) -> ShardInfo | None:
        """Holds `batch` and writes a shard once `shard_traces` traces are held (at once when
        `shard_traces` is 0); returns the shard written, if any."""
        if self.shard_traces <= 0:
            return self.write(batch)
        with self._lock:
            self._held.append(batch)
            self._held_traces += batch.num_traces
            if self._held_traces < self.shard_traces:
                return None
            held, self._held, self._held_traces = self._held, [], 0
        return self.write(TraceBatch.concat(held))

    def close(self) -> ShardInfo | None:
        """Writes the traces still held (if any) as a last shard."""
        with self._lock:
            held, self._held, self._held_traces = self._held, [], 0
        return self.write(TraceBatch.concat(held)) if held else None

    def write(self, batch: TraceBatch) -> ShardInfo:
        """Writes `batch` as one shard now."""
        t0 = time.perf_counter()
        data, groups, observations = encode_shard(batch)
        name = f"{self._prefix}-{uuid.uuid4().hex[:12]}"
        npz = self.path / "shards" / f"{name}.npz"
        _atomic_write(npz, data)
        digest = hashlib.sha256(data).hexdigest()
        table = [[str(r.id), r.address, r.name, r.dist_type, r.kind, r.source] for r in batch.addresses]
        sidecar = {
            "file": npz.name,
            "sha256": digest,
            "bytes": len(data),
            "num_traces": batch.num_traces,
            "groups": [{"key": lay.key, "count": n, "layout": lay.to_json()} for lay, n in groups],
            "observations": observations,
            "addresses": table,
        }
        _atomic_write(npz.with_suffix(".json"), json.dumps(sidecar).encode())
        seconds = time.perf_counter() - t0
        with self._lock:
            self.stats.shards += 1
            self.stats.traces += batch.num_traces
            self.stats.bytes += len(data)
            self.stats.seconds += seconds
        return ShardInfo(npz, digest, len(data), batch.num_traces, groups, seconds)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        info = json.loads((path / "dataset.json").read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path} is not a probexec dataset (no dataset.json)") from None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}/dataset.json is unreadable: {e}") from None
    if info.get("format") != FORMAT:
        raise DatasetError(f"{path}/dataset.json is not a probexec dataset manifest")
    if info.get("version") != VERSION:
        raise DatasetError(
            f"{path}: dataset format version {info.get('version')}, this probexec reads {VERSION}"
        )
    return info


@dataclass
class TypeInfo:
    layout: TypeLayout
    count: int = 0


@dataclass
class TraceDataset:
    """A dataset directory, read lazily: shard metadata at once, shard contents when iterated.

    `on_corrupt`: "stop" raises `DatasetError` naming a damaged shard; "skip" warns and goes on
    (`skipped` lists what was left out)."""

    path: Path
    on_corrupt: str = "stop"
    simulator: str = field(init=False)
    shards: list[ShardInfo] = field(init=False)
    addresses: AddressTable = field(init=False)
    observations: dict[str, Any] = field(init=False)
    skipped: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.on_corrupt not in ("stop", "skip"):
            raise ValueError(f"on_corrupt must be 'stop' or 'skip', not {self.on_corrupt!r}")
        self.simulator = _read_manifest(self.path)["simulator"]
        self.addresses = AddressTable()
        self.observations = {}
        self.shards = []
        for side in sorted((self.path / "shards").glob("*.json")):
            try:
                meta = json.loads(side.read_text())
                groups = [(TypeLayout.from_json(g["layout"]), int(g["count"])) for g in meta["groups"]]
                info = ShardInfo(
                    side.with_name(meta["file"]),
                    meta["sha256"],
                    int(meta["bytes"]),
                    int(meta["num_traces"]),
                    groups,
                )
                for r in meta["addresses"]:
                    self.addresses.add(AddressRecord(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), r[5]))
                self.observations.update(meta["observations"])
            except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
                self._corrupt(f"shard metadata {side.name} is unreadable ({e})")
                continue
            self.shards.append(info)
        if not self.shards and not self.skipped:
            raise DatasetError(f"{self.path} has no shards")

    def _corrupt(self, message: str) -> None:
        if self.on_corrupt == "stop":
            raise DatasetError(f"{self.path}: {message}")
        warnings.warn(f"{self.path}: {message}; skipped", stacklevel=3)
        self.skipped.append(message)

    @property
    def num_traces(self) -> int:
        return sum(s.num_traces for s in self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def trace_types(self) -> dict[str, TypeInfo]:
        """Every trace type in the dataset with its count, most frequent first."""
        out: dict[str, TypeInfo] = {}
        for s in self.shards:
            for layout, n in s.groups:
                out.setdefault(layout.key, TypeInfo(layout)).count += n
        return dict(sorted(out.items(), key=lambda kv: -kv[1].count))

    def read_shard(self, shard: ShardInfo) -> tuple[TraceBatch, list[TypeGroup]] | None:
        """The shard's traces and type groups, checksum verified (None if skipped as damaged)."""
        got = _load_shard(shard, self.addresses, self.observations, traces=True)
        if isinstance(got, str):
            self._corrupt(got)
            return None
        return got  # type: ignore[return-value]

    def iter_trace_batches(self) -> Iterator[TraceBatch]:
        """The traces, shard by shard (big observations stripped: value-omitted rows)."""
        for s in self.shards:
            got = self.read_shard(s)
            if got is not None:
                yield got[0]

    def iter_groups(
        self, *, shuffle: bool = False, seed: int = 0, workers: int = 0, readers: Any = None
    ) -> Iterator[TypeGroup]:
        """The type groups, shard by shard (in a seeded random shard order with `shuffle`).

        `workers` > 0 reads and checks shards in that many processes, in the same order: decoding
        a shard is Python-bound, and one process reads a few thousand tau traces a second, less
        than a GPU trains on. `readers` (from `reader_pool`) reuses processes across epochs. A
        damaged shard is still reported (or skipped) here."""
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.shards)) if shuffle else np.arange(len(self.shards))
        shards = [self.shards[int(i)] for i in order]
        if readers is not None:
            yield from self._groups_of(_read_ahead(readers, shards))
        elif workers > 0:
            pool = self.reader_pool(workers)
            try:
                yield from self._groups_of(_read_ahead(pool, shards))
            finally:
                close_readers(pool)
        else:
            yield from self._groups_of(
                _load_shard(s, self.addresses, self.observations, traces=False) for s in shards
            )

    def reader_pool(self, workers: int) -> Any:
        """A pool of `workers` shard-reading processes for `iter_groups(readers=...)`; end it with
        `close_readers`. Spawned, not forked: the trainer may hold CUDA and OpenMP state that a
        fork must not copy."""
        import multiprocessing as mp

        return mp.get_context("spawn").Pool(workers, initializer=_reader_init, initargs=(self.observations,))

    def _groups_of(self, results: Iterator[Any]) -> Iterator[TypeGroup]:
        for got in results:
            if isinstance(got, str):
                self._corrupt(got)
                continue
            yield from got


def _load_shard(
    shard: ShardInfo, addresses: AddressTable, observations: dict[str, Any], *, traces: bool
) -> tuple[TraceBatch, list[TypeGroup]] | list[TypeGroup] | str:
    """The shard's (traces and) groups, checksum verified, or a message saying what is wrong."""
    try:
        data = shard.path.read_bytes()
    except OSError as e:
        return f"shard {shard.path.name} cannot be read ({e})"
    if len(data) != shard.bytes or hashlib.sha256(data).hexdigest() != shard.sha256:
        return f"shard {shard.path.name} is corrupt (checksum mismatch: {len(data)} bytes, expected {shard.bytes})"
    try:
        if traces:
            batch, groups = decode_shard(data, addresses)
        else:
            groups = decode_groups(data)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        return f"shard {shard.path.name} is unreadable ({e})"
    for g in groups:
        for name, ob in g.observations.items():
            ob.shape = tuple(observations[name]["shape"])
        _ = g.layout.key  # computed (and cached) here: in a reader process, not the trainer's
    return (batch, groups) if traces else groups


def close_readers(pool: Any, timeout: float = 60.0) -> None:
    """Ends a `reader_pool` by letting its readers finish the shards they hold, then stop.

    `Pool.terminate()` (what leaving `with Pool(...)` does) kills readers that may be sending a
    result, and one killed while it holds the result queue's write lock leaves the pool's own
    shutdown waiting for that lock for ever. That hung `iter_groups(workers=2)` when a damaged
    shard stopped it with shards still being read. Only a reader still busy after `timeout`
    seconds (a hung file system) is killed."""
    pool.close()
    joiner = threading.Thread(target=pool.join, name="probexec-readers-join", daemon=True)
    joiner.start()
    joiner.join(timeout)
    if joiner.is_alive():
        pool.terminate()
        joiner.join(timeout)


def _read_ahead(pool: Any, shards: list[ShardInfo]) -> Iterator[list[TypeGroup] | str]:
    """`pool.imap(_read_groups, shards)` with at most two shards per reader in flight. imap hands
    every shard to the readers at once: their results pile up in memory when training is slower
    than reading (the whole dataset, at worst), and a generator left early (the sample a new
    network is built from) leaves the readers busy with the rest of the dataset."""
    ahead = max(2, 2 * int(getattr(pool, "_processes", 1) or 1))
    pending: deque[Any] = deque()
    todo = iter(shards)
    for s in itertools.islice(todo, ahead):
        pending.append(pool.apply_async(_read_groups, (s,)))
    while pending:
        got = pending.popleft().get()
        nxt = next(todo, None)
        if nxt is not None:
            pending.append(pool.apply_async(_read_groups, (nxt,)))
        yield got


_READER_OBSERVATIONS: dict[str, Any] = {}


def _reader_init(observations: dict[str, Any]) -> None:
    _READER_OBSERVATIONS.update(observations)
    exit_with_parent()  # a reader whose trainer was killed must not outlive it


def _read_groups(shard: ShardInfo) -> list[TypeGroup] | str:
    return _load_shard(shard, AddressTable(), _READER_OBSERVATIONS, traces=False)  # type: ignore[return-value]
