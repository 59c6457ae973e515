"""Handlers: what the engine does with each draw.

A draw arriving from a simulator (or a Python model) becomes one `Draw` message that passes
through a short stack of small handlers, each doing one thing: `Condition` puts the user's data
on observations, `PriorProposal` draws values nobody else chose. Engines are combinations of
handlers (prior sampling = [Condition, PriorProposal]); recording is done by the driver after the
stack, so it sees the final value. Later engines add handlers (replay for RMH, learned proposals
for IC) without touching the drivers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from probexec.distributions.fast_sampling import sample_wire, value_shape
from probexec.errors import ObservationError
from probexec.trace import FLAG_CONTROLLED, FLAG_REPLACE, OBSERVE, SAMPLE, TraceBatch


@dataclass(slots=True)
class Draw:
    """One draw on its way through the handler stack. Drivers reuse one object per connection."""

    kind: int = SAMPLE
    address_id: int = 0
    instance: int = 0
    name: str = ""
    dist_type: int = 0
    params: Sequence[np.ndarray] = ()
    control: bool = True
    replace: bool = False
    value: np.ndarray | None = None
    # Set by a handler that wants the simulator to draw the value itself and report it; only
    # honoured when the driver says the peer can (`can_draw_locally`: v2 with that capability).
    draw_locally: bool = False
    can_draw_locally: bool = False
    # Set by Condition on a named sample the user observed: its density belongs to the likelihood.
    observed: bool = False
    # Set by PriorProposal on an observation it simulated for want of data (FLAG_SIMULATED).
    simulated: bool = False


class Handler:
    """Base: does nothing. Subclasses override the hooks they need."""

    def begin_trace(self) -> None:
        pass

    def on_sample(self, draw: Draw) -> None:
        pass

    def on_observe(self, draw: Draw) -> None:
        pass


def apply(handlers: Sequence[Handler], draw: Draw) -> None:
    if draw.kind == SAMPLE:
        for h in handlers:
            h.on_sample(draw)
    elif draw.kind == OBSERVE:
        for h in handlers:
            h.on_observe(draw)


class Condition(Handler):
    """Observations by name: the user's value replaces whatever the simulator observed. A named
    sample can be observed too: its value is fixed and its density counts as likelihood."""

    def __init__(self, observations: Mapping[str, Any] | None) -> None:
        self.observations = {k: np.asarray(v, dtype=np.float64) for k, v in (observations or {}).items()}
        for k, v in self.observations.items():
            if np.isnan(v).any():
                raise ObservationError(f"observation {k!r} contains NaN")

    def on_sample(self, draw: Draw) -> None:
        if draw.name in self.observations:
            self.on_observe(draw)
            draw.observed = True

    def on_observe(self, draw: Draw) -> None:
        obs = self.observations.get(draw.name)
        if obs is None:
            return
        shape = value_shape(draw.dist_type, draw.params)
        if obs.size != int(np.prod(shape)):
            raise ObservationError(
                f"observation {draw.name!r} has {obs.size} value(s) but the model observes "
                f"{int(np.prod(shape))} there (shape {shape})"
            )
        draw.value = float(obs.reshape(())) if shape == () else obs.reshape(shape)


class Replay(Handler):
    """Gives every controlled sample the value it had in the first trace of `trace` (a recorded
    TraceBatch), matched by address and instance; a rejection loop's accepted value goes to its
    first iteration, so the loop accepts at once. Draws the recording lacks are left to later
    handlers. Rerunning a trace this way isolates what the uncontrolled draws do."""

    def __init__(self, trace: TraceBatch) -> None:
        self.values: dict[tuple[int, int], Any] = {}
        rows = np.nonzero(
            (trace.row_trace == 0) & (trace.kind == SAMPLE) & ((trace.flags & FLAG_CONTROLLED) != 0)
        )[0]
        for r in rows.tolist():
            inst = 1 if trace.flags[r] & FLAG_REPLACE else int(trace.instance[r])
            v = trace.values[trace.value_offsets[r] : trace.value_offsets[r + 1]]
            self.values[(int(trace.address_id[r]), inst)] = float(v[0]) if v.size == 1 else v.copy()

    def on_sample(self, draw: Draw) -> None:
        if draw.control and draw.value is None:
            v = self.values.get((draw.address_id, 1 if draw.replace else draw.instance))
            if v is not None:
                draw.value = v


class PriorProposal(Handler):
    """Draws from the prior whatever no earlier handler chose. With `local=True` it asks the
    simulator to draw controlled values itself (no Python sampling at all)."""

    def __init__(self, rng: np.random.Generator, local: bool = False) -> None:
        self.rng = rng
        self.local = local

    def on_sample(self, draw: Draw) -> None:
        if draw.value is not None or draw.draw_locally:
            return
        if self.local and draw.can_draw_locally:
            draw.draw_locally = True
        else:
            draw.value = sample_wire(draw.dist_type, draw.params, self.rng)

    def on_observe(self, draw: Draw) -> None:
        # An observation with no value from the simulator nor the user is simulated, as the
        # simulator itself does when it runs standalone.
        if draw.value is None:
            draw.value = sample_wire(draw.dist_type, draw.params, self.rng)
            draw.simulated = True
