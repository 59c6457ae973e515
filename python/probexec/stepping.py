"""Driving one trace on a remote simulator a controlled draw at a time, without blocking.

`RemoteModel.run_trace` runs a trace to its end, asking the handler stack for each value. A
learned proposal is fastest when it decides the values of many traces at once (one batched LSTM
step for all of them), so `TraceStepper` stops at every controlled sample that no handler fixed
and exposes it as `pending`; the driver chooses values for all pending draws together, `post`s
them (a send, no wait) and then gathers every stepper's next request. Observations, tags and
draws the simulator makes locally are answered by the stepper itself.

Nothing here blocks except `collect`: `start` and `post` only send, and `feed` acts on one
received message (answering it when it can). A driver waiting on many simulators polls their
`socket`s and feeds whichever has spoken, so one simulator's observations and tags are answered
while the others are still computing (`ic.ICDriver` does this).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from probexec import _core
from probexec.errors import ProtocolError, SimulatorError
from probexec.handlers import Draw, Handler
from probexec.protocol.messages import RunMode
from probexec.remote import (  # the message constants the blocking driver uses
    _DRAW_LOCALLY,
    _ERROR,
    _OBSERVE,
    _OBSERVE_RESULT,
    _RUN_RESULT,
    _SAMPLE,
    _TAG,
    _TAG_RESULT,
    RemoteModel,
    encode_value,
)
from probexec.trace import (
    FLAG_CONTROLLED,
    FLAG_OBSERVED,
    FLAG_REPLACE,
    FLAG_SIMULATED,
    OBSERVE,
    SAMPLE,
    TraceBatchBuilder,
    score_draw,
)


@dataclass(slots=True)
class PendingDraw:
    """A controlled sample waiting for its value."""

    address_id: int
    instance: int
    name: str
    dist_type: int
    params: tuple
    replace: bool
    # A latent the user observed by name (`Condition`), when the stepper was asked to stop there
    # too (`step_given`): its value is fixed, and a network only steps through it and scores it.
    given: Any = None


class TraceStepper:
    """One trace at a time on `model`; `handlers` see every draw first (conditioning), and a
    sample they leave without a value (and that is controlled) becomes `pending`. Uncontrolled
    samples are drawn by the simulator itself (v2) or by `fallback`."""

    def __init__(
        self,
        model: RemoteModel,
        handlers: Sequence[Handler],
        fallback: Handler,
        builder: TraceBatchBuilder,
        score_wide: int | None = None,
        step_given: bool = False,
    ) -> None:
        """`score_wide`: observations of at least this many values are scored as they arrive and
        recorded by their log-density alone (no value, no parameters). A calorimeter image is
        0.6 MB a trace as a row, and moving it through the batch costs the driver more than
        the rest of the trace; an inference engine needs only its log-likelihood.

        `step_given`: a controlled sample whose value a handler fixed as observed (a latent
        conditioned by name) becomes `pending` too, with that value in `given`. A proposal
        network trained on prior traces saw a step there; stepping through it keeps the later
        proposals conditioned on the given value, as in training."""
        if model.peer_version < 2:
            raise ProtocolError(f"simulator {model.name!r} speaks PPX v1: batched stepping needs protocol v2")
        self.model = model
        self.handlers = list(handlers)
        self.fallback = fallback
        self.builder = builder
        self.pending: PendingDraw | None = None
        self.done = True
        self.awaiting = False  # a request is out and its reply not yet fed
        self.error = ""
        self._draw = Draw()
        self._draw.can_draw_locally = "draw_locally" in model.capabilities
        self.score_wide = score_wide
        self.step_given = step_given
        self._t0 = 0.0
        self.sent_at = 0.0  # when the request now awaiting an answer went out

    @property
    def socket(self) -> Any:
        assert self.model._conn is not None, f"simulator {self.model.name!r} is closed"
        return self.model._conn.socket

    def start(self, seed: int | None) -> None:
        """Asks the simulator for a new trace (a send, no wait)."""
        for h in self.handlers:
            h.begin_trace()
        self.done, self.error, self.pending = False, "", None
        self._t0 = time.perf_counter()
        self.model._where = f"trace {self.model.traces_run}"
        self._send(_core.encode_run(int(RunMode.PER_DRAW), 1, seed, self.model.record_uncontrolled_values))

    def post(self, value: np.ndarray | float) -> None:
        """Sends the pending draw's value (no wait) and records its row."""
        p = self.pending
        assert p is not None, "no pending draw"
        flags = FLAG_CONTROLLED | (FLAG_REPLACE if p.replace else 0)
        if p.given is not None:  # observed: its density is likelihood, and no proposal chose it
            flags |= FLAG_OBSERVED
            value = p.given
        self.builder.add(p.address_id, p.instance, SAMPLE, flags, p.dist_type, p.params, value)
        self.pending = None
        self._send(encode_value(value))

    def collect(self) -> None:
        """Blocks until the next pending draw or the end of the trace."""
        try:
            while not self.feed(self.model._conn.recv(what=self.model._where)):  # type: ignore[union-attr]
                pass
        except BaseException:
            self.fail()
            raise

    def feed(self, data: bytes) -> bool:
        """Acts on one message from the simulator. True when the driver's turn has come (a pending
        draw, or the trace ended); False when the stepper answered and waits for the next."""
        try:
            turn = self._handle(_core.decode(data))
        except SimulatorError as e:
            # The model threw: the trace ends as failed, the simulator is ready for the next.
            self.builder.abandon_trace()
            self.builder.end_trace(None, time.perf_counter() - self._t0, str(e))
            self.done, self.error, self.awaiting = True, str(e), False
            return True
        except BaseException:
            self.fail()
            raise
        self.awaiting = not turn
        return turn

    def fail(self) -> None:
        """Drops the trace in progress (its simulator did not answer or sent garbage)."""
        self.builder.abandon_trace()
        self.done, self.awaiting, self.pending = True, False, None

    def check(self, waited: float) -> None:
        """Raises when the simulator died, or has not answered for longer than its timeout."""
        assert self.model._conn is not None
        try:
            self.model._conn.check(waited, what=self.model._where)
        except BaseException:
            self.fail()
            raise

    def _send(self, data: bytes) -> None:
        self.socket.send(data)
        self.awaiting = True
        self.sent_at = time.perf_counter()

    def _request(self, data: bytes) -> bool:
        self._send(data)
        return False

    def _handle(self, reply: tuple) -> bool:
        """Acts on one message: answers it and returns False, or returns True when the driver's
        turn comes."""
        m, b, kind = self.model, self.builder, reply[0]
        draw = self._draw
        if kind == _SAMPLE:
            m._begin_sample(b, reply, False, draw, self.handlers)
            if draw.control and (draw.value is None or (draw.observed and self.step_given)):
                self.pending = PendingDraw(
                    draw.address_id,
                    draw.instance,
                    draw.name,
                    draw.dist_type,
                    draw.params,
                    bool(draw.replace),
                    draw.value if draw.observed else None,
                )
                return True
            if draw.value is None:
                self.fallback.on_sample(draw)
            if draw.draw_locally:
                return self._request(_DRAW_LOCALLY)
            return self._request(m._record_sample(b, draw))
        if kind == _OBSERVE:
            m._begin_observe(b, reply, False, draw, self.handlers)
            if draw.value is None:
                self.fallback.on_observe(draw)
            v, dt = draw.value, draw.dist_type
            flags = FLAG_SIMULATED if draw.simulated else 0
            if self.score_wide is not None and np.size(v) >= self.score_wide:
                b.add(
                    draw.address_id,
                    draw.instance,
                    OBSERVE,
                    flags,
                    dt,
                    (),
                    None,
                    score_draw(dt, draw.params, v),
                )
            else:
                b.add(draw.address_id, draw.instance, OBSERVE, flags, dt, draw.params, v)
            return self._request(_OBSERVE_RESULT)
        if kind == _TAG:
            m._record_tag(b, reply, False)
            return self._request(_TAG_RESULT)
        if kind == _RUN_RESULT:
            m._finish_trace(b, reply, self._t0)
            self.done = True
            return True
        if kind == _ERROR:
            raise SimulatorError(f"simulator {m.name!r}, {m._where}: {reply[1]}")
        raise ProtocolError(f"simulator {m.name!r} sent message type {kind} during {m._where}")
