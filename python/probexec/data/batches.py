"""Minibatches for training: each of one trace type (a dense tensor), shuffled within a bounded
buffer so a dataset of millions of traces streams through in constant memory."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from probexec.data.layout import TypeGroup


def minibatches(
    groups: Iterable[TypeGroup],
    batch_size: int,
    *,
    rng: np.random.Generator,
    buffer_traces: int = 50_000,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[TypeGroup]:
    """Cuts groups into minibatches of `batch_size` traces of one type. Groups are buffered until
    `buffer_traces` traces are in hand; the buffer's full batches are shuffled and handed out
    (partial ones wait for more of their type). With `world_size` > 1 every rank sees the same
    sequence and keeps its share, and every rank gets the same number of batches, which
    distributed training needs (the few that do not divide evenly are left out)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pending: dict[str, list[TypeGroup]] = {}
    held = 0

    def flush(final: bool) -> Iterator[TypeGroup]:
        nonlocal held
        out: list[TypeGroup] = []
        for key in list(pending):
            g = TypeGroup.concat(pending.pop(key))
            g = g.rows(0, len(g)) if len(g) < 2 else _permute(g, rng.permutation(len(g)))
            full = len(g) // batch_size * batch_size
            out.extend(g.rows(a, a + batch_size) for a in range(0, full, batch_size))
            if full < len(g):
                if final:
                    out.append(g.rows(full, len(g)))
                else:
                    pending[key] = [g.rows(full, len(g))]
        held = sum(len(p) for ps in pending.values() for p in ps)
        order = rng.permutation(len(out))
        usable = len(out) // world_size * world_size
        for i in order[:usable][rank::world_size]:
            yield out[int(i)]

    for g in groups:
        if len(g) == 0:
            continue
        pending.setdefault(g.layout.key, []).append(g)
        held += len(g)
        if held >= buffer_traces:
            yield from flush(final=False)
    yield from flush(final=True)


def _permute(g: TypeGroup, idx: np.ndarray) -> TypeGroup:
    from probexec.data.layout import ObservationBlock

    obs = {
        k: ObservationBlock(o.name, o.shape, values=o.values[idx])
        if o.values is not None
        else ObservationBlock(o.name, o.shape, loc=o.loc.take(idx), scale=o.scale.take(idx))  # type: ignore[arg-type]
        for k, o in g.observations.items()
    }
    return TypeGroup(g.layout, g.values[idx], g.params[idx], obs)
