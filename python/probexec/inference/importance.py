"""Importance sampling with the prior as proposal.

Every trace's weight is its likelihood (raised to `likelihood_importance`, which tempers or
sharpens it). When nothing needs controlling the traces are streamed: the simulator draws them
all and sends whole traces, and the weights come from one vectorised likelihood evaluation.
Traces whose weight is NaN or -inf, or whose model threw, are dropped and counted.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from probexec.handlers import Condition, PriorProposal
from probexec.inference.pool import ModelPool
from probexec.inference.result import Posterior
from probexec.model import Model
from probexec.trace import TraceBatch, TraceBatchBuilder

CHUNK_STREAM = 2000
CHUNK_PER_DRAW = 100


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - i) for i in range(0, total, size)]


def _sample_names(target: Model | ModelPool) -> list[str]:
    """Names of the model's samples; one streamed trace teaches them when no trace has run yet."""
    if not len(target.addresses) and target.supports_streaming:
        model = target.models[0] if isinstance(target, ModelPool) else target
        model.stream(1)
    return target.addresses.names(kind=0)


def prior_traces(
    target: Model | ModelPool,
    num_traces: int,
    observe: Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    mode: str = "auto",
    progress: bool | None = None,
) -> TraceBatch:
    """Prior traces from one model or a pool, streamed when possible; conditioned on `observe`."""
    if num_traces < 1:
        raise ValueError(f"the number of traces must be at least 1, got {num_traces}")
    pool = target if isinstance(target, ModelPool) else None
    if mode == "auto":
        # Observing a named sample fixes its value: only the per-draw path can do that.
        observes_sample = bool(observe) and any(n in _sample_names(target) for n in observe)
        mode = "stream" if target.supports_streaming and not observes_sample else "per_draw"
    sizes = _chunks(num_traces, CHUNK_STREAM if mode == "stream" else CHUNK_PER_DRAW)
    seeds = np.random.SeedSequence(seed).generate_state(len(sizes), dtype=np.uint64)
    if progress is None:
        progress = num_traces >= (20000 if mode == "stream" else 1000)
    bar = tqdm(total=num_traces, desc=f"{target.name} ({mode})", unit="trace", disable=not progress)
    condition = Condition(observe)

    def run(model: Model, i: int, n: int) -> TraceBatch:
        if mode == "stream":
            return model.stream(n, seed=int(seeds[i]))
        rng = np.random.default_rng(int(seeds[i]))
        handlers = [condition, PriorProposal(rng)]
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
    batch = TraceBatch.concat(batches)
    if mode == "stream" and condition.observations:
        batch.condition(condition.observations)
    return batch


def importance_sampling(
    target: Model | ModelPool,
    num_traces: int,
    observe: Mapping[str, Any],
    *,
    latents: Sequence[str] | None = None,
    seed: int | None = None,
    likelihood_importance: float = 1.0,
    mode: str = "auto",
    progress: bool | None = None,
) -> Posterior:
    t0 = time.perf_counter()
    batch = prior_traces(target, num_traces, observe, seed=seed, mode=mode, progress=progress)
    log_w = likelihood_importance * batch.log_likelihood()
    bad = ~np.isfinite(log_w) | (log_w == np.inf)
    bad |= batch.failed if batch.errors else False
    if bad.any():
        batch = batch.select(~bad)
        log_w = log_w[~bad]
    if latents is None:
        latents = batch.addresses.names(kind=0)
    return Posterior(
        engine="is",
        traces=batch,
        log_weights=log_w,
        latents=list(latents),
        seconds=time.perf_counter() - t0,
        dropped=int(bad.sum()),
        stats={"likelihood_importance": likelihood_importance},
    )
