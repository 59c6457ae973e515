"""Models the engine can run: the common interface, and models written in Python.

A C++ simulator is a `RemoteModel` (remote.py). A Python function that calls `probexec.sample`,
`observe` and `tag` is a `PythonModel`; it runs through the same handlers and produces the same
`TraceBatch`, so every engine works on both.
"""

from __future__ import annotations

import contextvars
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from probexec.handlers import Draw, Handler, apply
from probexec.trace import (
    FLAG_CONTROLLED,
    FLAG_REPLACE,
    FLAG_SIMULATED,
    OBSERVE,
    SAMPLE,
    TAG,
    AddressRecord,
    AddressTable,
    TraceBatch,
    TraceBatchBuilder,
    string_address_id,
)


class Model(ABC):
    """Something that runs traces draw by draw through handlers (and maybe streams them)."""

    name: str
    addresses: AddressTable

    @property
    def supports_streaming(self) -> bool:
        return False

    @abstractmethod
    def run_trace(
        self, handlers: Sequence[Handler], builder: TraceBatchBuilder, seed: int | None = None
    ) -> None:
        """Runs one trace; its rows go to `builder`."""

    def stream(
        self, num_traces: int, seed: int | None = None, record_uncontrolled_values: bool | None = None
    ) -> TraceBatch:
        raise NotImplementedError(f"model {self.name!r} cannot stream traces")

    @property
    def supports_replay(self) -> bool:
        """Whether `replay` reruns a trace in one exchange (MCMC steps use it when it does)."""
        return False

    def replay(
        self,
        values: Mapping[tuple[int, int], Any],
        seed: int | None = None,
        observed: Mapping[str, Any] | None = None,
    ) -> TraceBatch:
        raise NotImplementedError(f"model {self.name!r} cannot replay a trace in one run")

    def close(self) -> None:  # noqa: B027 - optional hook: most models hold nothing to release
        """Releases what the model holds (server processes, sockets)."""

    def prior(
        self,
        num_traces: int,
        *,
        observe: Mapping[str, Any] | None = None,
        seed: int | None = None,
        mode: str = "auto",
        progress: bool | None = None,
    ) -> TraceBatch:
        """Traces from the prior (see `probexec.inference.prior.sample_prior`)."""
        from probexec.inference.prior import sample_prior

        return sample_prior(self, num_traces, observe=observe, seed=seed, mode=mode, progress=progress)

    def posterior(
        self,
        num_traces: int,
        *,
        engine: str = "is",
        observe: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Posterior inference on this model: `engine` "is" (importance sampling with the prior as
        proposal), "rmh" (random-walk Metropolis–Hastings) or "smc" (tempered SMC). "is" and
        "smc" take `stratify=NAME` for one run per value of a discrete latent, "is" also
        `stratify_pilot=P`; `options` go to the engine (seed, chains, burn_in, thinning,
        likelihood_importance, moves, ess_fraction, ...). Returns a `Posterior`."""
        from probexec.inference import run_engine

        return run_engine(self, engine, num_traces, observe or {}, **options)


# --- Python models ---------------------------------------------------------------------------------


@dataclass
class _PythonRun:
    handlers: Sequence[Handler]
    builder: TraceBatchBuilder
    addresses: AddressTable
    entry_depth: int
    instances: dict[int, int] = field(default_factory=dict)
    site_ids: dict[tuple[Any, ...], int] = field(default_factory=dict)


_current_run: contextvars.ContextVar[_PythonRun | None] = contextvars.ContextVar("probexec_run", default=None)


def _stack_depth() -> int:
    depth, f = 0, sys._getframe(1)
    while f is not None:
        depth += 1
        f = f.f_back
    return depth


def _site(run: _PythonRun, name: str, dist_type: int, kind: int) -> tuple[int, int]:
    """Address of a Python draw: the chain of (function, file, line) from the model's entry to the
    call, so the same line reached through different callers is a different address."""
    frames = []
    f = sys._getframe(3)  # skip _site, _draw and the public function
    depth = _stack_depth() - 3
    while f is not None and depth >= run.entry_depth:  # the model function itself included
        frames.append((f.f_code, f.f_lineno))
        f = f.f_back
        depth -= 1
    key = (tuple(frames), name, dist_type, kind)
    aid = run.site_ids.get(key)
    if aid is None:
        address = "|".join(
            f"{c.co_qualname if hasattr(c, 'co_qualname') else c.co_name}@{line}" for c, line in frames
        )
        source = "|".join(f"{c.co_filename}:{line}" for c, line in frames)
        aid = string_address_id(address, name, dist_type, kind)
        run.site_ids[key] = aid
        if aid not in run.addresses:
            run.addresses.add(AddressRecord(aid, address, name, dist_type, kind, source))
    inst = run.instances.get(aid, 0) + 1
    run.instances[aid] = inst
    return aid, inst


def _draw(kind: int, dist: Any, value: Any, name: str, control: bool, replace: bool) -> torch.Tensor | None:
    run = _current_run.get()
    if run is None:  # no engine attached: the model still runs, drawing from its own priors
        if kind == SAMPLE or (kind == OBSERVE and value is None):
            return dist.sample()
        return None if kind == OBSERVE else torch.as_tensor(value)
    wire = int(getattr(dist, "wire_type", 0)) if dist is not None else 0
    aid, inst = _site(run, name, wire, kind)
    if kind == TAG:
        v = np.asarray(torch.as_tensor(value, dtype=torch.float64))
        run.builder.add(aid, inst, TAG, 0, 0, (), v)
        return torch.as_tensor(value)
    params = tuple(np.asarray(p, dtype=np.float64) for p in dist.params()) if wire else ()
    draw = Draw(
        kind,
        aid,
        inst,
        name,
        wire,
        params,
        control,
        replace,
        None if value is None else np.asarray(torch.as_tensor(value, dtype=torch.float64)),
    )
    if wire:
        apply(run.handlers, draw)
    if draw.value is None:
        draw.value = dist.sample().numpy()
        draw.simulated = kind == OBSERVE
    v = torch.from_numpy(np.asarray(draw.value, dtype=np.float64))
    log_prob = float(dist.log_prob(v).sum())
    flags = (
        (FLAG_CONTROLLED if control and kind == SAMPLE else 0)
        | (FLAG_REPLACE if replace else 0)
        | (FLAG_SIMULATED if draw.simulated else 0)
    )
    run.builder.add(aid, inst, kind, flags, wire, params, np.asarray(draw.value, dtype=np.float64), log_prob)
    return v


def sample(dist: Any, name: str = "", control: bool = True, replace: bool = False) -> torch.Tensor:
    """A random draw in a Python model; the engine may choose its value."""
    out = _draw(SAMPLE, dist, None, name, control, replace)
    assert out is not None
    return out


def observe(dist: Any, value: Any = None, name: str = "") -> None:
    """Conditions on `value` (or on the user's observation called `name`)."""
    _draw(OBSERVE, dist, value, name, False, False)


def tag(value: Any, name: str) -> None:
    """Records a named quantity of the trace (a derived latent, say)."""
    _draw(TAG, None, value, name, False, False)


class PythonModel(Model):
    """A Python function using `sample`/`observe`/`tag`, run through the engine's handlers."""

    def __init__(self, fn: Callable[[], Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "python_model")
        self.addresses = AddressTable()

    def run_trace(
        self, handlers: Sequence[Handler], builder: TraceBatchBuilder, seed: int | None = None
    ) -> None:
        for h in handlers:
            h.begin_trace()
        run = _PythonRun(handlers, builder, self.addresses, _stack_depth() + 1)
        if seed is not None:
            torch.manual_seed(seed)
        token = _current_run.set(run)
        t0 = time.perf_counter()
        try:
            result = self.fn()
        except BaseException:
            builder.abandon_trace()
            raise
        finally:
            _current_run.reset(token)
        res = None if result is None else np.asarray(torch.as_tensor(result, dtype=torch.float64))
        builder.end_trace(res, time.perf_counter() - t0)
