"""Where traces come from: one interface over every kind of trace input.

Analytics never holds a whole dataset: every input is read as a sequence of `Chunk`s (a
`TraceBatch` of some thousands of traces plus, for a posterior, their log-weights), and each
analysis folds chunks into a bounded summary. The inputs:

- a trace file (`.npz` written by `TraceBatch.save`), or a directory of them (`probexec prior`);
- a posterior directory (`probexec posterior`: `posterior.npz`, `summary.json`, `traces.npz`);
- a sharded dataset directory (`dataset.json`, read through `probexec.data.TraceDataset`);
- a simulator run on the fly (`sim:NAME:N[:SEED]`), for prior studies too large to store (a tau
  decay trace carries its 24 500-voxel calorimeter image: 100 000 of them would be ~60 GB);
- in Python, a `TraceBatch`, a `Posterior` or any iterable of `TraceBatch`es.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probexec.trace import TraceBatch

#: Traces per chunk when a loaded batch is cut up (bounds the temporaries of every analysis).
CHUNK_TRACES = 50_000
#: ... and at most about this many rows per chunk.
CHUNK_ROWS = 2_000_000


@dataclass
class Chunk:
    """Consecutive traces of one source: `first_trace` is the index of the batch's first trace in
    the whole source, `log_weights` one per trace (None: equal weights)."""

    batch: TraceBatch
    log_weights: np.ndarray | None
    first_trace: int


@dataclass
class TraceSource:
    """A named input of the report. `chunks()` may be called more than once (each call reads the
    input again), so an analysis can make a second pass when it needs one."""

    label: str
    kind: str  # "traces", "posterior", "dataset", "simulator" or "memory"
    reader: Any  # () -> Iterator[tuple[TraceBatch, np.ndarray | None]]
    num_traces: int | None = None
    engine: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def weighted(self) -> bool:
        return self.engine in ("is", "ic")

    def chunks(self, max_traces: int = CHUNK_TRACES, max_rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
        first = 0
        for batch, log_weights in self.reader():
            for part, lw in _split(batch, log_weights, max_traces, max_rows):
                yield Chunk(part, lw, first)
                first += part.num_traces


def _split(
    batch: TraceBatch, log_weights: np.ndarray | None, max_traces: int, max_rows: int
) -> Iterator[tuple[TraceBatch, np.ndarray | None]]:
    """Cuts a big batch into pieces of at most `max_traces` traces and about `max_rows` rows."""
    n = batch.num_traces
    if log_weights is not None and len(log_weights) != n:
        raise ValueError(f"{n} traces but {len(log_weights)} log-weights")
    if n <= max_traces and batch.num_rows <= max_rows:
        yield batch, log_weights
        return
    rows_per_trace = max(batch.num_rows / max(n, 1), 1.0)
    step = int(max(1, min(max_traces, max_rows // rows_per_trace)))
    for a in range(0, n, step):
        b = min(n, a + step)
        yield batch.select(slice(a, b)), None if log_weights is None else log_weights[a:b]


def _trace_files(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.glob("*.npz") if not p.name.endswith(".tmp.npz"))
    return [p for p in files if p.name not in ("posterior.npz", "rmh_state.npz")]


def _load_traces(path: Path) -> TraceBatch:
    return TraceBatch.load(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from None


def trace_files_source(paths: list[Path], label: str) -> TraceSource:
    """Trace `.npz` files read one at a time, in order."""

    def reader() -> Iterator[tuple[TraceBatch, None]]:
        for p in paths:
            yield _load_traces(p), None

    total = None
    summary = paths[0].parent / "summary.json" if paths else None
    if summary is not None and summary.is_file() and len(paths) == 1:
        total = _read_json(summary).get("num_traces")
    return TraceSource(label, "traces", reader, num_traces=total, path=str(paths[0].parent if paths else ""))


def posterior_source(directory: Path, label: str | None = None) -> TraceSource:
    """A posterior directory: its traces (`traces.npz`) with the log-weights of `posterior.npz`."""
    summary = _read_json(directory / "summary.json") if (directory / "summary.json").is_file() else {}
    traces_path = directory / "traces.npz"
    if not traces_path.is_file():
        raise ValueError(
            f"{directory}: the posterior has no traces.npz (written by an older probexec, which saved "
            "only the latents); run the posterior again to analyse its traces"
        )
    try:
        with open(directory / "posterior.npz", "rb") as fh, np.load(fh, allow_pickle=False) as f:
            log_weights = np.asarray(f["log_weights"], dtype=np.float64)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{directory / 'posterior.npz'}: not a readable posterior file ({e})") from None
    engine = str(summary.get("engine", "posterior"))

    def reader() -> Iterator[tuple[TraceBatch, np.ndarray]]:
        batch = _load_traces(traces_path)
        if batch.num_traces != len(log_weights):
            raise ValueError(
                f"{directory}: traces.npz holds {batch.num_traces} traces, posterior.npz "
                f"{len(log_weights)} log-weights"
            )
        yield batch, log_weights

    return TraceSource(
        label or engine,
        "posterior",
        reader,
        num_traces=len(log_weights),
        engine=engine,
        stats=summary,
        path=str(directory),
    )


def dataset_source(directory: Path, label: str) -> TraceSource:
    """A sharded dataset directory (`dataset.json`), read shard by shard."""
    try:
        from probexec.data import TraceDataset  # type: ignore[attr-defined]
    except ImportError:
        raise ValueError(
            f"{directory} is a trace dataset, but this probexec cannot read datasets (probexec.data is missing)"
        ) from None
    dataset = TraceDataset(directory)

    def reader() -> Iterator[tuple[TraceBatch, None]]:
        for batch in dataset.iter_trace_batches():
            yield batch, None

    total = getattr(dataset, "num_traces", None)
    return TraceSource(label, "dataset", reader, num_traces=total, path=str(directory))


def simulator_source(
    name: str, num_traces: int, seed: int | None = None, workers: int | None = None, label: str = "prior"
) -> TraceSource:
    """Prior traces simulated while they are analysed (nothing is stored)."""
    from probexec.simulators import get_simulator

    get_simulator(name)
    if num_traces < 1:
        raise ValueError(f"the number of traces must be at least 1, got {num_traces}")

    def reader() -> Iterator[tuple[TraceBatch, None]]:
        from probexec.inference.pool import remote_pool
        from probexec.inference.prior import _stream_chunk

        with remote_pool(name, workers=workers) as pool:
            per_message = _stream_chunk(pool)
            # Several messages per round, one per worker, so every worker is busy.
            per_round = per_message * len(pool.models)
            seeds = np.random.SeedSequence(seed).generate_state(
                -(-num_traces // per_message), dtype=np.uint64
            )
            done, k = 0, 0
            while done < num_traces:
                sizes = []
                while done + sum(sizes) < num_traces and sum(sizes) < per_round:
                    sizes.append(min(per_message, num_traces - done - sum(sizes)))
                base = k

                def run(model: Any, i: int, n: int, base: int = base) -> TraceBatch:
                    return model.stream(n, seed=int(seeds[base + i]))

                for batch in pool.map(sizes, run):
                    yield batch, None
                done += sum(sizes)
                k += len(sizes)

    return TraceSource(label, "simulator", reader, num_traces=num_traces, path=f"sim:{name}:{num_traces}")


def memory_source(
    traces: Any, label: str = "traces", log_weights: np.ndarray | None = None, engine: str | None = None
) -> TraceSource:
    """A TraceBatch, a Posterior, or an iterable of TraceBatches already in Python."""
    from probexec.inference.result import Posterior

    if isinstance(traces, Posterior):
        post = traces
        return TraceSource(
            label if label != "traces" else post.engine,
            "memory",
            lambda: iter([(post.traces, post.log_weights)]),
            num_traces=post.num_traces,
            engine=post.engine,
            stats=dict(post.stats, engine=post.engine, latents=list(post.latents)),
        )
    if isinstance(traces, TraceBatch):
        batch = traces
        return TraceSource(
            label,
            "memory",
            lambda: iter([(batch, log_weights)]),
            num_traces=batch.num_traces,
            engine=engine,
        )
    if isinstance(traces, Iterable):
        batches = traces

        def reader() -> Iterator[tuple[TraceBatch, None]]:
            for b in batches:
                if not isinstance(b, TraceBatch):
                    raise TypeError(f"expected TraceBatch chunks, got {type(b).__name__}")
                yield b, None

        return TraceSource(label, "memory", reader, engine=engine)
    raise TypeError(f"cannot read traces from a {type(traces).__name__}")


def open_source(spec: Any, label: str | None = None, workers: int | None = None) -> TraceSource:
    """The source a command-line argument or Python object names. A string may be `LABEL=PATH`;
    `workers` is the number of simulator processes of a `sim:` source."""
    if isinstance(spec, TraceSource):
        return spec
    if not isinstance(spec, str | Path):
        return memory_source(spec, label or "traces")
    text = str(spec)
    if label is None and "=" in text and not Path(text).exists():
        label, text = text.split("=", 1)
    if text.startswith("sim:"):
        parts = text.split(":")
        if len(parts) not in (3, 4) or not parts[2].isdigit() or (len(parts) == 4 and not parts[3].isdigit()):
            raise ValueError(f"{text!r}: a simulated source is sim:NAME:N or sim:NAME:N:SEED")
        return simulator_source(
            parts[1], int(parts[2]), int(parts[3]) if len(parts) == 4 else None, workers, label or "prior"
        )
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"{path}: expected a trace file (.npz), a posterior or a dataset directory")
        return trace_files_source([path], label or path.stem)
    if (path / "dataset.json").is_file():
        return dataset_source(path, label or path.name)
    if (path / "posterior.npz").is_file():
        return posterior_source(path, label)
    files = _trace_files(path)
    if files:
        return trace_files_source(files, label or path.name)
    raise ValueError(
        f"{path}: neither a posterior (posterior.npz), a dataset (dataset.json) nor a directory of trace files (.npz)"
    )
