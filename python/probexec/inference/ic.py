"""Inference compilation: importance sampling with a trained `ProposalLSTM` as the proposal.

Many simulators run at once (one trace each in flight); at every round the controlled draws all
of them are waiting on go through the network as one batch — one LSTM step and one head call per
address — then every simulator gets its value and runs on to its next draw. pyprob steps its
network one trace at a time; here the batch is as wide as the number of traces in flight.

The importance weight of a trace is p(y | x) p(x) / q(x) over the draws the network proposed:
for a rejection loop (`replace`) only the last iteration counts, and every iteration reuses the
proposal computed at the loop's first one (the network is trained on the accepted draws only).
Addresses the network has never seen are drawn from the prior (q = p, weight factor 1); they are
counted and reported.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import zmq
from tqdm import tqdm

from probexec.data.layout import kept_controlled_rows
from probexec.distributions.fast_sampling import sample_wire, value_shape
from probexec.handlers import Condition, PriorProposal
from probexec.inference.result import Posterior
from probexec.nn.network import ProposalLSTM
from probexec.stepping import PendingDraw, TraceStepper
from probexec.trace import FLAG_REPLACE, TraceBatch, TraceBatchBuilder, flatten_params

_POLL_MS = 100  # how often a silent simulator is checked for life and timeout


def _site_key(p: PendingDraw) -> str:
    return f"{p.address_id:016x}_{1 if p.replace else p.instance}"


@dataclass
class _Slot:
    """What one in-flight trace carries between network steps."""

    stepper: TraceStepper
    prev: tuple[str, torch.Tensor, torch.Tensor] | None = None  # key, params [1,P], value [1,V]
    cached: dict[str, torch.Tensor] = field(default_factory=dict)  # replace key -> head input row
    log_q: dict[str, float] = field(default_factory=dict)  # key -> log q of its last draw
    log_qs: list[dict[str, float]] = field(default_factory=list)  # per finished trace


@dataclass
class ICStats:
    steps: int = 0
    network_draws: int = 0
    prior_fallbacks: int = 0
    unknown_addresses: set[str] = field(default_factory=set)
    batch_sizes: list[int] = field(default_factory=list)


class ICDriver:
    """Runs traces on `models` with proposals from `network`, as many in flight as models."""

    def __init__(
        self,
        network: ProposalLSTM,
        models: Sequence[Any],
        observations: Mapping[str, Any],
        *,
        seed: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.net = network.to(device).eval()
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(self.rng.integers(2**62)))
        self.condition = Condition(observations)
        obs = {}
        for spec in self.net.config.observations:
            if spec.name not in observations:
                raise KeyError(
                    f"the network conditions on observation {spec.name!r}; give it (got {sorted(observations)})"
                )
            v = np.asarray(observations[spec.name], dtype=np.float32)
            if v.size != int(np.prod(spec.shape)):
                raise ValueError(
                    f"observation {spec.name!r} has {v.size} values, the network expects shape {spec.shape}"
                )
            obs[spec.name] = torch.from_numpy(v.reshape(1, *spec.shape)).to(self.device)
        with torch.no_grad():
            self.obs_embedding = self.net.embed_observations(obs)  # [1, O]: the same for every trace
        self.slots: list[_Slot] = []
        for m in models:
            builder = TraceBatchBuilder(m.addresses)
            stepper = TraceStepper(m, [self.condition], PriorProposal(self.rng, local=True), builder)
            self.slots.append(_Slot(stepper))
        hidden = self.net.config.hidden
        layers = self.net.config.lstm_layers
        self.h = torch.zeros(layers, len(self.slots), hidden, device=self.device)
        self.c = torch.zeros_like(self.h)
        self.stats = ICStats()

    # --- one network round over every pending draw -----------------------------------------------
    @torch.no_grad()
    def _propose(self, slots: list[int]) -> None:
        net, dev = self.net, self.device
        step_rows: list[int] = []
        reuse: list[int] = []
        for i in slots:
            s = self.slots[i]
            p = s.stepper.pending
            assert p is not None
            key = _site_key(p)
            if key not in net.sites:
                self.stats.prior_fallbacks += 1
                self.stats.unknown_addresses.add(p.name or key)
                s.stepper.post(sample_wire(p.dist_type, p.params, self.rng))
                continue
            if p.replace and key in s.cached:
                reuse.append(i)
            else:
                step_rows.append(i)
        outs: dict[int, torch.Tensor] = {}
        if step_rows:
            idx = torch.tensor(step_rows, device=dev)
            prev = torch.empty(len(step_rows), net.prev_size, device=dev)
            by_prev: dict[str, list[int]] = {}
            for j, i in enumerate(step_rows):
                pv = self.slots[i].prev
                if pv is None:
                    prev[j] = net.start
                else:
                    by_prev.setdefault(pv[0], []).append(j)
            for key, js in by_prev.items():
                ps = torch.cat([self.slots[step_rows[j]].prev[1] for j in js])  # type: ignore[index]
                vs = torch.cat([self.slots[step_rows[j]].prev[2] for j in js])  # type: ignore[index]
                prev[js] = net.previous_input(key, ps, vs)
            cur = torch.stack(
                [net.current_input(_site_key(self.slots[i].stepper.pending), 1)[0] for i in step_rows]
            )  # type: ignore[arg-type]
            x = torch.cat([self.obs_embedding.expand(len(step_rows), -1), prev, cur], -1)
            out, (h, c) = net.step(x, (self.h[:, idx], self.c[:, idx]))
            self.h[:, idx], self.c[:, idx] = h, c
            self.stats.steps += 1
            self.stats.batch_sizes.append(len(step_rows))
            for j, i in enumerate(step_rows):
                outs[i] = out[j]
        for i in reuse:
            outs[i] = self.slots[i].cached[_site_key(self.slots[i].stepper.pending)]  # type: ignore[arg-type]
        # Heads, grouped by address.
        by_key: dict[str, list[int]] = {}
        for i in outs:
            by_key.setdefault(_site_key(self.slots[i].stepper.pending), []).append(i)  # type: ignore[arg-type]
        for key, rows in by_key.items():
            head = net.heads[key]
            h_in = torch.stack([outs[i] for i in rows])
            raw = head.raw(h_in)
            pend = [self.slots[i].stepper.pending for i in rows]
            params = (
                torch.from_numpy(
                    np.stack(
                        [
                            flatten_params(
                                p.dist_type, p.params, np.zeros(value_shape(p.dist_type, p.params))
                            )
                            for p in pend
                        ]
                    )  # type: ignore[union-attr]
                )
                .float()
                .to(dev)
            )
            if params.shape[1] != head.param_size:
                raise ValueError(
                    f"address {key}: the network expects {head.param_size} prior parameters, the simulator sent {params.shape[1]}"
                )
            values = head.sample(raw, params, self.gen)
            log_q = head.log_prob(raw, params, values).double().cpu().numpy()
            vals = values.double().cpu().numpy()
            for j, i in enumerate(rows):
                s = self.slots[i]
                p = pend[j]
                if p.replace and key not in s.cached:  # type: ignore[union-attr]
                    s.cached[key] = outs[i]
                s.log_q[key] = float(log_q[j])
                s.prev = (key, params[j : j + 1], values[j : j + 1])
                shape = value_shape(p.dist_type, p.params)  # type: ignore[union-attr]
                v = float(vals[j, 0]) if shape == () else vals[j].reshape(shape)
                s.stepper.post(v)
        self.stats.network_draws += len(outs)

    def _gather(self, slots: list[int]) -> None:
        """Waits until each of `slots` has a pending draw or has ended its trace, answering their
        observations and tags as they arrive, in whatever order the simulators speak."""
        waiting = {id(self.slots[i].stepper.socket): i for i in slots}
        if not waiting:
            return
        poller = zmq.Poller()
        for i in waiting.values():
            poller.register(self.slots[i].stepper.socket, zmq.POLLIN)
        idle = 0.0
        while waiting:
            ready = poller.poll(_POLL_MS)
            if not ready:
                idle += _POLL_MS / 1000
                for i in waiting.values():
                    self.slots[i].stepper.check(idle)  # raises for a dead or silent simulator
                continue
            idle = 0.0
            for sock, _ in ready:
                st = self.slots[waiting[id(sock)]].stepper
                if st.feed(sock.recv()):
                    poller.unregister(sock)
                    del waiting[id(sock)]

    def _reset(self, i: int) -> None:
        s = self.slots[i]
        s.prev, s.cached, s.log_q = None, {}, {}
        self.h[:, i] = 0
        self.c[:, i] = 0

    def run(self, num_traces: int, progress: bool = False) -> tuple[TraceBatch, np.ndarray]:
        """`num_traces` traces and each one's sum of log q over the draws that count."""
        started = 0
        bar = tqdm(total=num_traces, desc="IC", unit="trace", disable=not progress)
        order: list[tuple[int, int]] = []  # (slot, index of the trace in that slot's builder)
        live: list[int] = []
        for i in range(min(num_traces, len(self.slots))):
            self._reset(i)
            self.slots[i].stepper.start(int(self.rng.integers(2**63)))
            started += 1
            live.append(i)
        try:
            while live:
                # Every live simulator computes towards its next controlled draw (or the end).
                self._gather([i for i in live if self.slots[i].stepper.awaiting])
                still: list[int] = []
                for i in live:
                    s = self.slots[i]
                    if not s.stepper.done:
                        still.append(i)
                        continue
                    order.append((i, s.stepper.builder.num_traces - 1))
                    s.log_qs.append(s.log_q)
                    bar.update(1)
                    if started < num_traces:  # the next trace runs its prefix during this round
                        self._reset(i)
                        s.stepper.start(int(self.rng.integers(2**63)))
                        started += 1
                        still.append(i)
                live = still
                pending = [i for i in live if self.slots[i].stepper.pending is not None]
                if pending:
                    self._propose(pending)
        finally:
            bar.close()
        # Assemble in finishing order.
        built = [s.stepper.builder.build() for s in self.slots]
        offsets = np.cumsum([0] + [b.num_traces for b in built])
        batch = TraceBatch.concat(built)
        pick = np.array([offsets[i] + k for i, k in order], dtype=np.int64)
        log_q_maps = [self.slots[i].log_qs[k] for i, k in order]
        batch = batch.select(pick)
        return batch, self._log_q_sums(batch, log_q_maps)

    @staticmethod
    def _log_q_sums(batch: TraceBatch, maps: list[dict[str, float]]) -> np.ndarray:
        """Per trace: Σ (log q - log p) over the kept draws the network proposed (fallback draws and
        non-final loop iterations do not count)."""
        rows = kept_controlled_rows(batch)
        lp = batch.log_prob()
        out = np.zeros(batch.num_traces)
        rtrace = batch.row_trace[rows]
        for r, t in zip(rows.tolist(), rtrace.tolist(), strict=True):
            inst = 1 if batch.flags[r] & FLAG_REPLACE else int(batch.instance[r])
            lq = maps[t].get(f"{int(batch.address_id[r]):016x}_{inst}")
            if lq is not None:
                out[t] += lq - lp[r]
        return out


def ic_posterior(
    network: ProposalLSTM,
    models: Sequence[Any],
    num_traces: int,
    observe: Mapping[str, Any],
    *,
    latents: Sequence[str] | None = None,
    seed: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> Posterior:
    t0 = time.perf_counter()
    driver = ICDriver(network, models, observe, seed=seed, device=device)
    threads = torch.get_num_threads()
    if driver.device.type == "cpu":
        # Small per-step matrices: one thread, and the other cores stay with the simulators.
        torch.set_num_threads(1)
    try:
        batch, q_minus_p = driver.run(num_traces, progress=progress)
    finally:
        torch.set_num_threads(threads)
    log_w = batch.log_likelihood() - q_minus_p
    failed = batch.failed if batch.errors else np.zeros(batch.num_traces, bool)
    bad = failed | ~np.isfinite(log_w)
    dropped = int(bad.sum())
    keep = ~bad
    batch, log_w = batch.select(keep), log_w[keep]
    names = list(latents) if latents is not None else batch.addresses.names(kind=0)
    st = driver.stats
    stats = {
        "network_steps": st.steps,
        "network_draws": st.network_draws,
        "prior_fallbacks": st.prior_fallbacks,
        "unknown_addresses": sorted(st.unknown_addresses),
        "mean_batch": float(np.mean(st.batch_sizes)) if st.batch_sizes else 0.0,
        "in_flight": len(driver.slots),
    }
    post = Posterior("ic", batch, log_w, names, time.perf_counter() - t0, dropped, stats)
    post.stats["ess_fraction"] = post.ess / max(post.num_traces, 1)
    return post
