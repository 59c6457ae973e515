"""IC over several driver processes, kept for as many events as there are to infer.

One driver's Python (answering messages, assembling each round, running the network) fills one
core: on the tau decay about 3.3 ms of CPU a trace, while its simulators need about as much
again. A 16-core node therefore runs several drivers, each with its own copy of the network, its
own simulators and its share of the traces; their traces form one weighted sample, since each
weight is p(y | x) p(x) / q(x) of its own trace whichever process made it.

Starting a driver costs seconds (a spawned Python importing torch, the network loaded, its
simulators started), as long as driving a few thousand tau traces. Amortised inference is for
many events, so `ICDrivers` starts the drivers once and keeps them: `posterior` per event sends
each driver its share and collects the results, and only the first event pays for the start.
`ic_posterior_processes` is the one-event form.
"""

from __future__ import annotations

import contextlib
import copy
import multiprocessing as mp
import pickle
import time
import traceback
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from tqdm import tqdm

from probexec.inference.defensive import check_defensive, check_mixture
from probexec.inference.ic import _posterior, _run_driver
from probexec.inference.ic_adapt import AdaptOptions, adapt_network, round_mix, round_seeds
from probexec.inference.result import Posterior
from probexec.lifeline import exit_with_parent
from probexec.nn.checkpoint import load_checkpoint
from probexec.nn.network import ProposalLSTM
from probexec.simulators import SimulatorInfo, get_simulator
from probexec.trace import TraceBatch

_START_TIMEOUT_S = 300.0  # for a driver to import, load the network and start its simulators


class DriverError(RuntimeError):
    """A driver process failed or died; the message names it and carries its traceback."""


def auto_processes(num_traces: int, cores: int) -> int:
    """How many IC driver processes `probexec posterior --engine ic` runs when not told.

    One driver's Python keeps one core busy, and its simulators need about as much CPU again
    (tau decay: 3.4 ms a trace in the driver, 3.2 in the simulators, on 2 cores): a driver per 4
    cores leaves room for both. At most 8: on the H100 machine's 16 cores, 8 drivers of 32 did
    best and more added nothing. And none with fewer than 1 000 traces to make: a driver takes
    seconds to start (importing torch, loading the network, starting its simulators)."""
    return max(1, min(cores // 4, 8, num_traces // 1000))


def _driver_main(
    conn: Connection,
    network: str,
    simulator: SimulatorInfo,
    in_flight: int,
    device: str,
    counts: Any,
    slot: int,
    created: float,
) -> None:
    """A driver process: loads the network, starts its simulators, says it is ready, then runs
    one share of traces per task it receives until told to stop (None) or its parent dies."""
    booted = time.time() - created
    exit_with_parent()  # a killed engine's drivers end, and their simulators with them
    try:
        import torch

        from probexec.inference.pool import remote_pool
        from probexec.nn.checkpoint import load_checkpoint

        startup = {"booted": booted}
        net, _ = load_checkpoint(network, simulator=simulator.name, device=device)
        adapted: ProposalLSTM | None = None  # a copy for a task's adapted weights; `net` stays as trained
        startup["network_loaded"] = time.time() - created
        with remote_pool(simulator, workers=in_flight) as pool:
            startup["simulators_started"] = time.time() - created
            conn.send(("ready", startup))
            while (task := conn.recv()) is not None:
                num_traces, observe, seed, quorum, defensive, called, weights, mix = task
                proposer, mixed = net, None
                if weights is not None:
                    if adapted is None:
                        adapted = copy.deepcopy(net)
                    adapted.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
                    proposer = adapted
                    mixed = (net, mix) if mix > 0 else None

                def count() -> None:
                    counts[slot] += 1

                driving = time.time() - called
                batch, q_minus_p, stats = _run_driver(
                    proposer,
                    pool.models,
                    num_traces,
                    observe,
                    seed,
                    device,
                    False,
                    count,
                    quorum=quorum,
                    defensive=defensive,
                    mix=mixed,
                )
                stats["timeline"] = {"driving": driving, "driven": time.time() - called}
                conn.send(("done", (batch, q_minus_p, stats)))
    except (EOFError, KeyboardInterrupt):
        pass  # the parent closed the pipe or was interrupted: nothing to report to
    except BaseException as e:
        # The exception itself where it survives pickling (the caller then catches a
        # NetworkMismatchError as such), its text otherwise.
        try:
            error = pickle.loads(pickle.dumps(e))
        except Exception:
            error = DriverError(repr(e))
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", (error, traceback.format_exc())))


def _weights(net: ProposalLSTM) -> dict[str, np.ndarray]:
    """A network's weights as arrays, to send to the drivers (a copy each: they load it)."""
    return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}


class ICDrivers:
    """`processes` IC driver processes, each with its own copy of the network (loaded from the
    checkpoint file `network`) and `in_flight` simulators, kept until `close`:

        with ICDrivers("tau.pt", "tau_decay_coarse", processes=8, in_flight=32) as drivers:
            for event in events:
                post = drivers.posterior(2000, event, seed=k)

    A driver that fails to start or fails during a call raises its own error here (with a note
    naming it and its traceback); one that dies raises `DriverError`. The drivers are closed then."""

    def __init__(
        self,
        network: str | Path,
        simulator: str | SimulatorInfo,
        *,
        processes: int,
        in_flight: int = 16,
        device: str = "cpu",
        start_timeout: float = _START_TIMEOUT_S,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {in_flight}")
        # Described here once (your own executable is run for its names), then handed to each driver.
        self.info = get_simulator(simulator)
        self.simulator = self.info.name
        self.in_flight = in_flight
        self.network = Path(network)
        self._adapt_base: ProposalLSTM | None = None  # the network, loaded here when adapting
        ctx = mp.get_context("spawn")  # the parent may hold CUDA state, which a fork must not copy
        self._counts = ctx.RawArray("q", processes)
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        created = time.time()
        try:
            for slot in range(processes):
                parent, child = ctx.Pipe()
                p = ctx.Process(
                    target=_driver_main,
                    args=(child, str(network), self.info, in_flight, device, self._counts, slot, created),
                    name=f"probexec-ic-driver-{slot}",
                    daemon=True,
                )
                p.start()
                child.close()  # the parent's copy: a dead driver then reads as end of file
                self._procs.append(p)
                self._conns.append(parent)
            # Per driver, seconds from construction to each stage of its start-up.
            self.startup: list[dict[str, float]] = self._collect(
                "ready", list(range(processes)), time.monotonic() + start_timeout
            )
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.time() - created

    @property
    def processes(self) -> int:
        return len(self._procs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def _collect(self, kind: str, slots: list[int], deadline: float | None, on_wait: Any = None) -> list[Any]:
        """One `kind` message from each driver in `slots`. A driver that reports an error, dies or
        (with a deadline) stays silent past it stops the call with its name."""
        got: dict[int, Any] = {}
        while len(got) < len(slots):
            pending = {self._conns[i]: i for i in slots if i not in got}
            timeout = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            for c in wait(list(pending), timeout=timeout):
                i = pending[c]  # type: ignore[index]
                try:
                    what, payload = self._conns[i].recv()
                except (EOFError, OSError):
                    self._procs[i].join(5)
                    code = self._procs[i].exitcode
                    raise DriverError(f"IC driver {i} of {self.simulator} died (exit code {code})") from None
                if what == "error":
                    error, tb = payload
                    if hasattr(error, "add_note"):  # Python 3.11+
                        error.add_note(f"in IC driver {i} of {self.simulator}:\n{tb}")
                    raise error
                got[i] = payload
            if on_wait is not None:
                on_wait()
            if deadline is not None and time.monotonic() > deadline and len(got) < len(slots):
                late = [i for i in slots if i not in got]
                raise DriverError(f"IC driver(s) {late} of {self.simulator} not {kind} in time")
        return [got[i] for i in slots]

    def posterior(
        self,
        num_traces: int,
        observe: Mapping[str, Any],
        *,
        latents: Sequence[str] | None = None,
        seed: int | None = None,
        progress: bool = False,
        quorum: float = 1.0,
        defensive: float = 0.0,
        adapt: AdaptOptions | None = None,
    ) -> Posterior:
        """IC of `num_traces` traces conditioned on `observe`, shared out over the drivers (at
        most one driver per trace). The same seed on the same drivers gives the same split and
        the same per-driver seeds. `quorum`, `defensive`: see `ICDriver`. `adapt`: as in
        `ic_posterior`; the rounds run on the drivers and the fits here, and the drivers get the
        adapted weights for this call only."""
        if not self._procs:
            raise RuntimeError("these IC drivers are closed")
        # Checked here, not in the drivers: a bad argument should not cost the drivers.
        if num_traces < 1:
            raise ValueError(f"num_traces must be at least 1, got {num_traces}")
        if not 0.0 < quorum <= 1.0:
            raise ValueError(f"quorum is a share of the traces in flight, in (0, 1]; got {quorum}")
        check_defensive(defensive)
        if adapt is None:
            return self._posterior(num_traces, observe, latents, seed, progress, quorum, defensive, None)
        check_mixture(adapt.mix, defensive, "--adapt-mix")
        if self._adapt_base is None:
            self._adapt_base, _ = load_checkpoint(self.network, simulator=self.simulator, device="cpu")
        t0 = time.perf_counter()
        seeds = round_seeds(seed, adapt)

        def run_round(net: ProposalLSTM, r: int) -> Posterior:
            return self._posterior(
                adapt.traces,
                observe,
                latents,
                seeds[r],
                False,
                quorum,
                defensive,
                _weights(net),
                round_mix(adapt, r),
            )

        net, records = adapt_network(self._adapt_base, run_round, observe, adapt, progress)
        post = self._posterior(
            num_traces,
            observe,
            latents,
            seeds[-1],
            progress,
            quorum,
            defensive,
            _weights(net),
            round_mix(adapt, adapt.rounds),
        )
        post.stats["adapt"] = {"options": adapt.to_dict(), "rounds": records}
        post.seconds = time.perf_counter() - t0
        return post

    def _posterior(
        self,
        num_traces: int,
        observe: Mapping[str, Any],
        latents: Sequence[str] | None,
        seed: int | None,
        progress: bool,
        quorum: float,
        defensive: float,
        weights: dict[str, np.ndarray] | None,
        mix: float = 0.0,
    ) -> Posterior:
        t0, called = time.perf_counter(), time.time()
        n = self.processes
        sizes = [num_traces // n + (i < num_traces % n) for i in range(n)]
        seeds = np.random.SeedSequence(seed).generate_state(n, dtype=np.uint64)
        base = [int(c) for c in self._counts]
        bar = tqdm(total=num_traces, desc="IC", unit="trace", disable=not progress)
        used = [i for i in range(n) if sizes[i]]

        def advance() -> None:
            bar.update(sum(self._counts[i] - base[i] for i in used) - bar.n)

        try:
            for i in used:
                task = (sizes[i], dict(observe), int(seeds[i]) >> 1, quorum, defensive, called, weights, mix)
                self._conns[i].send(task)
            parts = self._collect("done", used, None, advance)
            bar.update(num_traces - bar.n)
        except BaseException:
            self.close()
            raise
        finally:
            bar.close()
        received = time.time() - called
        batch = TraceBatch.concat([b for b, _, _ in parts])
        q_minus_p = np.concatenate([q for _, q, _ in parts])
        stats: dict[str, Any] = {
            "network_steps": sum(st["network_steps"] for _, _, st in parts),
            "network_draws": sum(st["network_draws"] for _, _, st in parts),
            "prior_fallbacks": sum(st["prior_fallbacks"] for _, _, st in parts),
            "defensive": defensive,
            "prior_traces": sum(st["prior_traces"] for _, _, st in parts),
            "mix": mix,
            "mix_traces": sum(st["mix_traces"] for _, _, st in parts),
            "given_steps": sum(st["given_steps"] for _, _, st in parts),
            "unknown_addresses": sorted({a for _, _, st in parts for a in st["unknown_addresses"]}),
            "batch_sizes": [k for _, _, st in parts for k in st["batch_sizes"]],
            "in_flight": sum(st["in_flight"] for _, _, st in parts),
            "processes": len(parts),
            "driver_seconds": max(st["driver_seconds"] for _, _, st in parts),
            # Until the last driver began this call's traces.
            "startup_seconds": max(st["timeline"]["driving"] for _, _, st in parts),
            "timeline": [{**st["timeline"], "received": received} for _, _, st in parts],
        }
        return _posterior(batch, q_minus_p, stats, latents, time.perf_counter() - t0)

    def close(self) -> None:
        """Stops the drivers (each closes its simulators); those that do not end in a few seconds
        are terminated."""
        conns, procs = self._conns, self._procs
        self._conns, self._procs = [], []
        for c in conns:
            with contextlib.suppress(OSError, ValueError):
                c.send(None)
        deadline = time.monotonic() + 10.0
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join(5)
        for c in conns:
            c.close()

    def __enter__(self) -> ICDrivers:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def ic_posterior_processes(
    network: str | Path,
    simulator: str | SimulatorInfo,
    num_traces: int,
    observe: Mapping[str, Any],
    *,
    processes: int,
    in_flight: int = 16,
    latents: Sequence[str] | None = None,
    seed: int | None = None,
    device: str = "cpu",
    progress: bool = False,
    quorum: float = 1.0,
    defensive: float = 0.0,
    adapt: AdaptOptions | None = None,
) -> Posterior:
    """IC of one event with `processes` driver processes started for it (`ICDrivers`, closed at
    the end). Its stats' `timeline` holds each driver's start-up stages as well, all in seconds
    from this call; `startup_seconds` is when the last driver began its traces."""
    if num_traces < 1:
        raise ValueError(f"num_traces must be at least 1, got {num_traces}")
    t0 = time.perf_counter()
    processes = min(processes, num_traces)  # a driver with no traces is not started; ICDrivers checks >= 1
    with ICDrivers(network, simulator, processes=processes, in_flight=in_flight, device=device) as drivers:
        post = drivers.posterior(
            num_traces,
            observe,
            latents=latents,
            seed=seed,
            progress=progress,
            quorum=quorum,
            defensive=defensive,
            adapt=adapt,
        )
        shift = drivers.startup_seconds
        post.stats["timeline"] = [
            {**start, **{k: v + shift for k, v in run.items()}}
            for start, run in zip(drivers.startup, post.stats["timeline"], strict=True)
        ]
        post.stats["startup_seconds"] += shift
    post.seconds = time.perf_counter() - t0
    return post
