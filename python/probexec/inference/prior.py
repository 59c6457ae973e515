"""Prior sampling, through either path.

Streaming (the simulator draws everything and sends whole traces, many per message) is the fast
path and the default when the simulator supports it; per-draw control runs the same handler stack
every other engine uses, and is what a PPX v1 simulator or a Python model gets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from tqdm import tqdm

from probexec.handlers import Condition, PriorProposal
from probexec.model import Model
from probexec.trace import TraceBatch, TraceBatchBuilder

STREAM_CHUNK = 2000


def sample_prior(
    model: Model,
    num_traces: int,
    *,
    observe: Mapping[str, Any] | None = None,
    seed: int | None = None,
    mode: str = "auto",
    local: bool = False,
    progress: bool | None = None,
    chunk: int = STREAM_CHUNK,
) -> TraceBatch:
    """`num_traces` traces with every value from the prior; with `observe`, each trace's
    log-likelihood is that of the given data. `mode` is "stream", "per_draw" or "auto"."""
    if num_traces < 1:
        raise ValueError(f"num_traces must be at least 1, got {num_traces}")
    if mode == "auto":
        mode = "stream" if model.supports_streaming else "per_draw"
    if mode not in ("stream", "per_draw"):
        raise ValueError(f"mode must be 'stream', 'per_draw' or 'auto', not {mode!r}")
    rng = np.random.default_rng(seed)
    if progress is None:
        progress = num_traces >= 20000 if mode == "stream" else num_traces >= 2000
    bar = tqdm(total=num_traces, desc=f"prior {model.name} ({mode})", unit="trace", disable=not progress)
    try:
        if mode == "stream":
            condition = Condition(observe)  # validates the observations (NaN) before any trace runs
            batches = []
            done = 0
            while done < num_traces:
                k = min(chunk, num_traces - done)
                batches.append(model.stream(k, seed=int(rng.integers(2**63))))
                done += k
                bar.update(k)
            batch = TraceBatch.concat(batches)
            if condition.observations:
                batch.condition(condition.observations)
            return batch
        handlers = [Condition(observe), PriorProposal(rng, local=local)]
        builder = TraceBatchBuilder(model.addresses)
        for _ in range(num_traces):
            model.run_trace(handlers, builder, seed=int(rng.integers(2**63)))
            bar.update(1)
        return builder.build()
    finally:
        bar.close()
