"""Prior sampling, through either path.

Streaming (the simulator draws everything and sends whole traces, many per message) is the fast
path and the default when the simulator supports it; per-draw control runs the same handler stack
every other engine uses, and is what a PPX v1 simulator or a Python model gets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from tqdm import tqdm

from probexec.handlers import Condition, PriorProposal
from probexec.inference.pool import ModelPool
from probexec.model import Model
from probexec.trace import TraceBatch, TraceBatchBuilder

CHUNK_STREAM = 2000  # traces per streamed message, at most ...
STREAM_MESSAGE_BYTES = 32 << 20  # ... and about this many bytes (a calorimeter trace is ~0.6 MB)
CHUNK_PER_DRAW = 100


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - i) for i in range(0, total, size)]


def _sample_names(target: Model | ModelPool) -> list[str]:
    """Names of the model's samples; one streamed trace teaches them when no trace has run yet."""
    if not len(target.addresses) and target.supports_streaming:
        if isinstance(target, ModelPool):
            target.map([1], lambda model, _i, n: model.stream(n))  # the pool's failure handling applies
        else:
            target.stream(1)
    return target.addresses.names(kind=0)


def _stream_chunk(target: Model | ModelPool) -> int:
    """Traces per streamed message: CHUNK_STREAM, fewer when traces are big (measured once per
    model on a 4-trace probe), so a message stays near STREAM_MESSAGE_BYTES."""
    cached = getattr(target, "_probexec_stream_chunk", None)
    if cached is None:
        if isinstance(target, ModelPool):
            probe = target.map([4], lambda model, _i, n: model.stream(n, seed=0))[0]
        else:
            probe = target.stream(4, seed=0)
        per_trace = (probe.values.nbytes + probe.params.nbytes + 40 * probe.num_rows) / max(
            probe.num_traces, 1
        )
        cached = int(max(1, min(CHUNK_STREAM, STREAM_MESSAGE_BYTES // max(per_trace, 1))))
        target._probexec_stream_chunk = cached  # type: ignore[union-attr]
    return cached


def sample_prior(
    target: Model | ModelPool,
    num_traces: int,
    *,
    observe: Mapping[str, Any] | None = None,
    seed: int | None = None,
    mode: str = "auto",
    local: bool = False,
    progress: bool | None = None,
    sink: Callable[[TraceBatch], Any] | None = None,
    keep: Callable[[TraceBatch], TraceBatch] | None = None,
) -> TraceBatch:
    """`num_traces` traces with every value from the prior, from one model or a pool; with
    `observe`, each trace's log-likelihood is that of the given data. `mode` is "stream",
    "per_draw" or "auto" (streamed when the simulator can and nothing needs control). `local`:
    per-draw, but the simulator draws the values itself on request. Work is cut into chunks with
    their own seeds, so the result does not depend on which worker ran which chunk. With `sink`,
    each chunk goes to `sink` as it is made (on the worker's thread: a dataset writer) and
    nothing is kept; an empty batch is returned. With `keep`, each chunk (conditioned) is
    replaced by `keep(chunk)` as it is made: importance sampling keeps wide observations as their
    log-density alone, so memory grows by kilobytes, not 0.6 MB, a trace."""
    if num_traces < 1:
        raise ValueError(f"the number of traces must be at least 1, got {num_traces}")
    if mode not in ("stream", "per_draw", "auto"):
        raise ValueError(f"mode must be 'stream', 'per_draw' or 'auto', not {mode!r}")
    pool = target if isinstance(target, ModelPool) else None
    if mode == "auto":
        # Observing a named sample fixes its value: only the per-draw path can do that.
        observes_sample = bool(observe) and any(n in _sample_names(target) for n in observe)
        mode = "stream" if target.supports_streaming and not observes_sample else "per_draw"
    sizes = _chunks(num_traces, _stream_chunk(target) if mode == "stream" else CHUNK_PER_DRAW)
    seeds = np.random.SeedSequence(seed).generate_state(len(sizes), dtype=np.uint64)
    if progress is None:
        progress = num_traces >= (20000 if mode == "stream" else 1000)
    bar = tqdm(total=num_traces, desc=f"{target.name} ({mode})", unit="trace", disable=not progress)
    condition = Condition(observe)

    def run(model: Model, i: int, n: int) -> TraceBatch | None:
        chunk = make(model, i, n)
        if mode == "stream" and condition.observations:
            chunk.condition(condition.observations)
        if keep is not None:
            chunk = keep(chunk)
        if sink is None:
            return chunk
        sink(chunk)
        return None

    def make(model: Model, i: int, n: int) -> TraceBatch:
        if mode == "stream":
            return model.stream(n, seed=int(seeds[i]))
        rng = np.random.default_rng(int(seeds[i]))
        handlers = [condition, PriorProposal(rng, local=local)]
        builder = TraceBatchBuilder(model.addresses)
        for _ in range(n):
            model.run_trace(handlers, builder, seed=int(rng.integers(2**63)))
        return builder.build()

    try:
        if pool is not None:
            batches = pool.map(sizes, run, on_done=lambda i: bar.update(sizes[i]))
        else:
            batches = []
            for i, n in enumerate(sizes):
                batches.append(run(target, i, n))  # type: ignore[arg-type]
                bar.update(n)
    finally:
        bar.close()
    if sink is not None:
        return TraceBatch.empty(target.addresses)
    return TraceBatch.concat(batches)
