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

A *defensive* share ε of the traces can be drawn wholly from the prior (`defensive.py`): every
trace is then weighted against the mixture (1 - ε) q(x) + ε p(x), which needs q(x) also for the
prior's traces, so the network still steps through them and scores each draw.

A share s of the traces can likewise come from a second network (`mix`; `--adapt` uses it to keep
some traces from the network as trained beside the adapted one). Each trace is then weighted
against (1 - ε - s) q(x) + s q'(x) + ε p(x): both networks step through every trace, and each
scores the draws the other (or the prior) chose. This is multiple importance sampling with the
balance heuristic; every weight is bounded by 1/s times the weight q' alone would give it.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import zmq
from tqdm import tqdm

from probexec.data.layout import kept_controlled_rows
from probexec.distributions.fast_sampling import sample_wire, value_shape
from probexec.handlers import Condition, PriorProposal
from probexec.inference.defensive import check_defensive, check_mixture, mixture_log_ratio
from probexec.inference.ic_adapt import AdaptOptions, adapt_network, round_mix, round_seeds
from probexec.inference.result import BIG_OBSERVATION, Posterior
from probexec.inference.strata import DEFAULT_KEEP_NATS, stratified
from probexec.nn.network import ProposalLSTM
from probexec.nn.stacked import StackedSites
from probexec.stepping import PendingDraw, TraceStepper
from probexec.trace import FLAG_REPLACE, TraceBatch, TraceBatchBuilder, flatten_params

_POLL_MS = 100  # how often a silent simulator is checked for life and timeout


def _site_key(p: PendingDraw) -> str:
    return f"{p.address_id:016x}_{1 if p.replace else p.instance}"


def _prior_row(p: PendingDraw) -> tuple[np.ndarray, tuple[int, ...]]:
    """The draw's prior parameters as one row, and its value's shape (kept for posting it)."""
    shape = value_shape(p.dist_type, p.params)
    return flatten_params(p.dist_type, p.params, np.zeros(shape)), shape


PRIOR = -1  # a trace's source (`_Slot.source`): the prior; 0, 1: the driver's first, second network


@dataclass
class _Proposer:
    """One network's part of the driver: its stacked tables, the event's embedding and each
    in-flight trace's LSTM state. A driver mixing two networks has two, stepped side by side."""

    net: ProposalLSTM
    tables: StackedSites
    obs_embedding: torch.Tensor  # [1, O]: the same for every trace
    h: torch.Tensor  # [layers, slots, hidden]
    c: torch.Tensor
    # Each trace's "previous draw" input for its next LSTM step: the network's start vector
    # until its first proposed draw, then that draw's (`HeadDraws.following`).
    prev_in: torch.Tensor  # [slots, prev_size]


@dataclass
class _Slot:
    """What one in-flight trace carries between network steps; the lists have one entry per
    network (`ICDriver.proposers`)."""

    stepper: TraceStepper
    cached: list[dict[str, torch.Tensor]]  # replace key -> LSTM output row
    # A rejection loop's keys drawn so far in its current iteration, and per network the LSTM
    # state (h, c, the previous-draw input) before each one's first draw: where a repeated
    # iteration starts from.
    loop_keys: set[str] = field(default_factory=set)
    before: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = field(default_factory=dict)
    log_q: list[dict[str, float]] = field(default_factory=list)  # key -> log q of its last draw
    log_qs: list[list[dict[str, float]]] = field(default_factory=list)  # per finished trace
    source: int = 0  # which network chooses this trace's draws, or PRIOR
    sources: list[int] = field(default_factory=list)  # per finished trace


@dataclass
class ICStats:
    steps: int = 0
    network_draws: int = 0
    prior_fallbacks: int = 0
    prior_traces: int = 0  # the defensive mixture's traces drawn from the prior
    mix_traces: int = 0  # the traces drawn from the second network (`mix`)
    given_steps: int = 0  # steps through latents observed by name (their value given, not drawn)
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
        keep_observations: bool = False,
        quorum: float = 1.0,
        defensive: float = 0.0,
        mix: tuple[ProposalLSTM, float] | None = None,
    ) -> None:
        """`keep_observations`: keep every trace's wide observations (a calorimeter image and its
        per-voxel mean and stddev, 0.6 MB a trace) in the result; by default they are scored on
        arrival and kept as their log-likelihood alone (`Posterior.save` drops them anyway).

        `quorum`: the share of the traces in flight a round waits for. At 1 every round waits
        until each simulator has asked for its next draw or ended, so the rounds, and the whole
        run for a seed, do not depend on timing. Below 1 a round starts once that share has
        arrived and no other reply is waiting: a simulator still computing (a trace's last
        step builds the calorimeter image) joins the next round instead of holding this one up.
        The traces are as exact either way; only which random numbers each draw gets depends
        on timing.

        `defensive`: the share ε of traces drawn from the prior, each trace weighted against the
        mixture (1 - ε) q + ε p (module docstring). 0, the default, is plain IC; 1 is importance
        sampling from the prior, with the network's steps spent for nothing.

        `mix`: (a second network, its share s of the traces), with the same addresses as
        `network`; each trace is weighted against (1 - ε - s) q + s q' + ε p."""
        if not 0.0 < quorum <= 1.0:
            raise ValueError(f"quorum is a share of the traces in flight, in (0, 1]; got {quorum}")
        check_defensive(defensive)
        networks = [network]
        self.mix_share = 0.0
        if mix is not None:
            other, self.mix_share = mix[0], float(mix[1])
            check_mixture(self.mix_share, defensive)
            if list(other.sites) != list(network.sites):
                raise ValueError(
                    "the mixed networks must know the same addresses in the same order (an adapted "
                    "copy of the network does)"
                )
            if self.mix_share > 0:
                networks.append(other)
        self.quorum = quorum
        self.defensive = defensive
        self._checked = 0.0  # when the simulators in flight were last checked for life
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(self.rng.integers(2**62)))
        self.condition = Condition(observations)
        self.proposers = [self._proposer(n, observations, len(models)) for n in networks]
        self.slots: list[_Slot] = []
        for m in models:
            builder = TraceBatchBuilder(m.addresses)
            stepper = TraceStepper(
                m,
                [self.condition],
                PriorProposal(self.rng, local=True),
                builder,
                score_wide=None if keep_observations else BIG_OBSERVATION,
                step_given=True,
            )
            self.slots.append(_Slot(stepper, [{} for _ in networks], log_q=[{} for _ in networks]))
        self._restarted: list[int] = []
        self.stats = ICStats()
        self.log_q_ratios: list[np.ndarray] = []  # after `run`: per network, each trace's log q/p

    def _proposer(self, network: ProposalLSTM, observations: Mapping[str, Any], slots: int) -> _Proposer:
        net = network.to(self.device).eval()
        obs = net.observation_batch(observations, self.device)
        with torch.no_grad():
            emb = net.embed_observations(obs)
        # The rounds run in inference mode (no autograd bookkeeping: 15 % less time per op on
        # these small tensors), and the state they update in place is made in it too.
        with torch.inference_mode():
            h = torch.zeros(net.config.lstm_layers, slots, net.config.hidden, device=self.device)
            prev_in = net.start.detach().expand(slots, -1).clone()
            return _Proposer(net, StackedSites(net), emb, h, torch.zeros_like(h), prev_in)

    # --- one network round over every pending draw -----------------------------------------------
    @torch.inference_mode()
    def _propose(self, slots: list[int]) -> None:
        """One LSTM step for every pending draw, then every proposal drawn from the stacked
        per-address tables (`StackedSites`): a fixed number of batched ops per round, whatever
        the number of traces and addresses in it.

        A rejection loop's later iterations reuse the proposals of its first (the weights take
        the last iteration's draws at those proposals), but the LSTM steps through every
        iteration again from the state before the loop, so that after the loop its state is
        that of the accepted draws alone, as in training, not of the first iteration's."""
        dev, props = self.device, self.proposers
        index = props[0].tables.index
        if self._restarted:  # fresh traces start from a zero LSTM state
            fresh = torch.tensor(self._restarted, device=dev)
            for pr in props:
                pr.h[:, fresh] = 0
                pr.c[:, fresh] = 0
                pr.prev_in[fresh] = pr.net.start
            self._restarted = []
        step_rows: list[int] = []
        reuse: list[int] = []
        keys: dict[int, str] = {}
        for i in slots:
            s = self.slots[i]
            p = s.stepper.pending
            assert p is not None
            key = _site_key(p)
            if key not in index:
                if p.given is not None:  # observed by name: nothing to propose, nothing to step
                    s.stepper.post(p.given)
                    continue
                self.stats.prior_fallbacks += 1
                self.stats.unknown_addresses.add(p.name or key)
                s.stepper.post(sample_wire(p.dist_type, p.params, self.rng))
                continue
            keys[i] = key
            if not p.replace:
                s.loop_keys.clear()
                step_rows.append(i)
            elif key not in s.cached[0]:  # a loop's first iteration
                s.before[key] = [
                    (pr.h[:, i].clone(), pr.c[:, i].clone(), pr.prev_in[i].clone()) for pr in props
                ]
                s.loop_keys.add(key)
                step_rows.append(i)
            else:
                if key in s.loop_keys:  # the loop starts over here: back to the state before it
                    for pr, (h, c, prev) in zip(props, s.before[key], strict=True):
                        pr.h[:, i], pr.c[:, i], pr.prev_in[i] = h, c, prev
                    s.loop_keys = {key}
                else:
                    s.loop_keys.add(key)
                reuse.append(i)
        if not keys:
            return
        rows = step_rows + reuse
        idx = torch.tensor(rows, device=dev)
        sites = [index[keys[i]] for i in rows]
        hiddens = [self._step(n, pr, rows, idx, sites, keys, len(step_rows)) for n, pr in enumerate(props)]
        self.stats.steps += 1
        self.stats.batch_sizes.append(len(rows))
        pend = [self.slots[i].stepper.pending for i in rows]
        priors = [_prior_row(p) for p in pend]  # type: ignore[arg-type]
        params = [q[0] for q in priors]
        # Latents observed by name, and the prior's traces of the defensive mixture: the value is
        # given (by the user, by the prior), and the networks only score it and step through it.
        given: dict[int, np.ndarray] = {}
        for r, i in enumerate(rows):
            p = pend[r]
            assert p is not None
            if p.given is not None:
                given[r] = np.asarray(p.given, dtype=np.float64)
                self.stats.given_steps += 1
            elif self.defensive and self.slots[i].source == PRIOR:
                given[r] = np.asarray(sample_wire(p.dist_type, p.params, self.rng), dtype=np.float64)
        values = self._draw_all(rows, sites, hiddens, params, given)
        for r, i in enumerate(rows):
            shape = priors[r][1]
            v = values[r]
            self.slots[i].stepper.post(float(v[0]) if shape == () else v.reshape(shape))
        self.stats.network_draws += len(rows)

    def _step(
        self,
        n: int,
        pr: _Proposer,
        rows: list[int],
        idx: torch.Tensor,
        sites: list[int],
        keys: Mapping[int, str],
        stepped: int,
    ) -> torch.Tensor:
        """Network n's LSTM step for `rows` (the first `stepped` step, the others reuse their
        loop's first proposal); its LSTM output per row, and each loop's first one cached."""
        prev = pr.prev_in.index_select(0, idx)
        cur = pr.tables.current(sites)
        x = torch.cat([pr.obs_embedding.expand(len(rows), -1), prev, cur], -1)
        hidden, (h, c) = pr.net.step(x, (pr.h[:, idx], pr.c[:, idx]))
        pr.h[:, idx], pr.c[:, idx] = h, c
        for r in range(stepped):
            s = self.slots[rows[r]]
            p = s.stepper.pending
            if p is not None and p.replace and keys[rows[r]] not in s.cached[n]:
                s.cached[n][keys[rows[r]]] = hidden[r]
        if stepped == len(rows):
            return hidden
        return torch.cat(
            [hidden[:stepped], torch.stack([self.slots[i].cached[n][keys[i]] for i in rows[stepped:]])]
        )

    def _draw_all(
        self,
        rows: list[int],
        sites: list[int],
        hiddens: list[torch.Tensor],
        params: list[np.ndarray],
        given: dict[int, np.ndarray],
    ) -> list[np.ndarray]:
        """Every row's value, from its trace's source, and each network's log q of it and input
        for its next step. The second network draws its own traces' rows first; then the first
        network draws its rows and scores the others; then the second scores the rest."""
        chosen = dict(given)
        if len(self.proposers) > 1:
            own = [r for r, i in enumerate(rows) if self.slots[i].source == 1]
            if own:
                chosen.update(self._draw_rows(1, own, rows, sites, hiddens[1], params, {}))
        drawn = self._draw_rows(0, list(range(len(rows))), rows, sites, hiddens[0], params, chosen)
        if len(self.proposers) > 1:
            rest = [r for r, i in enumerate(rows) if self.slots[i].source != 1]
            if rest:
                self._draw_rows(1, rest, rows, sites, hiddens[1], params, {r: drawn[r] for r in rest})
        return [drawn[r] for r in range(len(rows))]

    def _draw_rows(
        self,
        n: int,
        part: list[int],
        rows: list[int],
        sites: list[int],
        hidden: torch.Tensor,
        params: list[np.ndarray],
        given: Mapping[int, np.ndarray],
    ) -> dict[int, np.ndarray]:
        """Network n's draws (or scores, for rows in `given`) at the positions `part` of the
        round; records their log q and next-step inputs, and returns the values by position."""
        pr = self.proposers[n]
        whole = len(part) == len(rows)
        at = None if whole else torch.tensor(part, device=self.device)
        sub_hidden = hidden if at is None else hidden.index_select(0, at)
        sub_given = {j: given[r] for j, r in enumerate(part) if r in given}
        values: dict[int, np.ndarray] = {}
        for draws in pr.tables.draw(
            [sites[r] for r in part], sub_hidden, [params[r] for r in part], self.gen, sub_given
        ):
            slots = [rows[part[j]] for j in draws.rows]
            pr.prev_in[torch.tensor(slots, device=self.device)] = draws.following
            for k, (j, i) in enumerate(zip(draws.rows, slots, strict=True)):
                s = self.slots[i]
                p = s.stepper.pending
                assert p is not None
                s.log_q[n][_site_key(p)] = float(draws.log_q[k])
                values[part[j]] = draws.values[k]
        return values

    def _gather(self, slots: list[int]) -> None:
        """Waits until each of `slots` has a pending draw or has ended its trace (or, with a
        quorum below 1, until that share has and no other reply is ready), answering their
        observations and tags as they arrive, in whatever order the simulators speak."""
        waiting = {id(self.slots[i].stepper.socket): i for i in slots}
        if not waiting:
            return
        poller = zmq.Poller()
        for i in waiting.values():
            poller.register(self.slots[i].stepper.socket, zmq.POLLIN)
        # With a quorum below 1, this many may go on computing into the next round.
        may_wait = len(waiting) - math.ceil(self.quorum * len(waiting))
        while waiting:
            quorate = len(waiting) <= may_wait
            ready = poller.poll(0 if quorate else _POLL_MS)
            if quorate and not ready:
                break  # enough are in, and no other reply is waiting
            now = time.perf_counter()
            if not ready or now - self._checked > _POLL_MS / 1000:
                # A dead or silent simulator raises, also one left computing by earlier rounds.
                for i in waiting.values():
                    st = self.slots[i].stepper
                    st.check(now - st.sent_at)
                self._checked = now
            for sock, _ in ready:
                st = self.slots[waiting[id(sock)]].stepper
                if st.feed(sock.recv()):
                    poller.unregister(sock)
                    del waiting[id(sock)]

    def _reset(self, i: int) -> None:
        s = self.slots[i]
        n = len(self.proposers)
        s.cached, s.log_q, s.loop_keys, s.before = [{} for _ in range(n)], [{} for _ in range(n)], set(), {}
        s.source = 0
        # Drawn only when asked for, so that plain IC's random numbers, and results for a seed, stay.
        if self.defensive > 0 or n > 1:
            u = self.rng.random()
            if u < self.defensive:
                s.source = PRIOR
            elif u < self.defensive + self.mix_share:
                s.source = 1
        self._restarted.append(i)  # its LSTM state is zeroed at the next round, with the others

    def run(
        self, num_traces: int, progress: bool = False, on_trace: Callable[[], None] | None = None
    ) -> tuple[TraceBatch, np.ndarray]:
        """`num_traces` traces and each one's sum of log q over the draws that count
        (`on_trace` is called as each one finishes)."""
        started = 0
        bar = tqdm(total=num_traces, desc="IC", unit="trace", disable=not progress)
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
                    s.log_qs.append(s.log_q)
                    s.sources.append(s.source)
                    bar.update(1)
                    if on_trace is not None:
                        on_trace()
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
        # Slot by slot (a weighted sample has no order; reordering would copy every row).
        batch = TraceBatch.concat([s.stepper.builder.build() for s in self.slots])
        sources = [k for s in self.slots for k in s.sources]
        self.stats.prior_traces = sources.count(PRIOR)
        self.stats.mix_traces = sources.count(1)
        self.log_q_ratios = [
            self._log_q_sums(batch, [m[n] for s in self.slots for m in s.log_qs])
            for n in range(len(self.proposers))
        ]
        shares = [1.0 - self.defensive - self.mix_share, self.mix_share][: len(self.proposers)]
        return batch, mixture_log_ratio(self.log_q_ratios, shares, self.defensive)

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
    keep_observations: bool = False,
    quorum: float = 1.0,
    defensive: float = 0.0,
    adapt: AdaptOptions | None = None,
) -> Posterior:
    """IC over `models` (one trace in flight per model). `keep_observations`, `quorum`,
    `defensive`: see `ICDriver`. `adapt`: first adapt a copy of the network to this event over
    rounds of IC (`ic_adapt.py`); the posterior is then the last, adapted round's (with the
    share `adapt.mix` of its traces from `network` as given), and its stats' `adapt` holds each
    round's record."""
    t0 = time.perf_counter()
    records = None
    mix = None
    if adapt is not None:
        check_mixture(adapt.mix, defensive, "--adapt-mix")
        seeds = round_seeds(seed, adapt)
        trained = network

        def run_round(net: ProposalLSTM, r: int) -> Posterior:
            b, q, st = _run_driver(
                net,
                models,
                adapt.traces,
                observe,
                seeds[r],
                device,
                False,  # one bar over the rounds (adapt_network), not one per round
                quorum=quorum,
                defensive=defensive,
                mix=(trained, round_mix(adapt, r)),
            )
            return _posterior(b, q, st, latents, 0.0)

        network, records = adapt_network(network, run_round, observe, adapt, progress)
        seed = seeds[-1]
        mix = (trained, round_mix(adapt, adapt.rounds))
    batch, q_minus_p, stats = _run_driver(
        network,
        models,
        num_traces,
        observe,
        seed,
        device,
        progress,
        keep_observations=keep_observations,
        quorum=quorum,
        defensive=defensive,
        mix=mix,
    )
    if records is not None:
        stats["adapt"] = {"options": adapt.to_dict(), "rounds": records}
    return _posterior(batch, q_minus_p, stats, latents, time.perf_counter() - t0)


def stratified_ic(
    network: ProposalLSTM,
    models: Sequence[Any],
    num_traces: int,
    observe: Mapping[str, Any],
    stratum: str,
    *,
    values: Sequence[float] | None = None,
    latents: Sequence[str] | None = None,
    seed: int | None = None,
    pilot: int = 0,
    keep_nats: float = DEFAULT_KEEP_NATS,
    **options: Any,
) -> Posterior:
    """IC once per value of the discrete latent `stratum`, `num_traces` traces each, combined by
    each run's evidence p(y, value) (`strata.py`). The network steps through the given value as
    through its own draw, so its later proposals are conditioned on it; a value the network's
    own channel head would rarely pick still gets its traces. `pilot`: that many traces a value
    first, the rest shared out by the pilot's probabilities over the values within `keep_nats`
    of the best (`strata.pilot_shares`). `options`: as `ic_posterior`'s."""
    if options.get("adapt") is not None:
        raise ValueError(
            "adapting the network (--adapt) is not done per stratum: its fit does not step through the given value"
        )
    return stratified(
        lambda obs, s, n: ic_posterior(network, models, n, obs, latents=latents, seed=s, **options),
        observe,
        stratum,
        values,
        num_traces=num_traces,
        pilot=pilot,
        keep_nats=keep_nats,
        engine="ic",
        target=models[0],
        seed=seed,
        latents=latents,
    )


def _run_driver(
    network: ProposalLSTM,
    models: Sequence[Any],
    num_traces: int,
    observe: Mapping[str, Any],
    seed: int | None,
    device: str,
    progress: bool,
    on_trace: Callable[[], None] | None = None,
    keep_observations: bool = False,
    quorum: float = 1.0,
    defensive: float = 0.0,
    mix: tuple[ProposalLSTM, float] | None = None,
) -> tuple[TraceBatch, np.ndarray, dict[str, Any]]:
    driver = ICDriver(
        network,
        models,
        observe,
        seed=seed,
        device=device,
        keep_observations=keep_observations,
        quorum=quorum,
        defensive=defensive,
        mix=mix,
    )
    threads = torch.get_num_threads()
    if driver.device.type == "cpu":
        # Small per-step matrices: one thread, and the other cores stay with the simulators.
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        batch, q_minus_p = driver.run(num_traces, progress=progress, on_trace=on_trace)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    st = driver.stats
    stats = {
        "network_steps": st.steps,
        "network_draws": st.network_draws,
        "prior_fallbacks": st.prior_fallbacks,
        "defensive": driver.defensive,
        "prior_traces": st.prior_traces,
        "mix": driver.mix_share,
        "mix_traces": st.mix_traces,
        "given_steps": st.given_steps,
        "unknown_addresses": sorted(st.unknown_addresses),
        "batch_sizes": st.batch_sizes,
        "in_flight": len(driver.slots),
        "driver_seconds": seconds,  # the traces alone: no network loading, no simulator start-up
    }
    return batch, q_minus_p, stats


def _posterior(
    batch: TraceBatch,
    q_minus_p: np.ndarray,
    stats: dict[str, Any],
    latents: Sequence[str] | None,
    seconds: float,
) -> Posterior:
    log_w = batch.log_likelihood() - q_minus_p
    failed = batch.failed if batch.errors else np.zeros(batch.num_traces, bool)
    bad = failed | ~np.isfinite(log_w)
    dropped = int(bad.sum())
    keep = ~bad
    batch, log_w = batch.select(keep), log_w[keep]
    names = list(latents) if latents is not None else batch.addresses.names(kind=0)
    sizes = stats.pop("batch_sizes")
    stats["mean_batch"] = float(np.mean(sizes)) if sizes else 0.0
    post = Posterior("ic", batch, log_w, names, seconds, dropped, stats)
    post.stats["ess_fraction"] = post.ess / max(post.num_traces, 1)
    _warn_if_mostly_unknown(stats)
    return post


# Share of controlled draws from the prior above which IC warns that the network does not know
# this simulator's addresses (a few rare addresses falling back is normal).
UNKNOWN_WARN_FRACTION = 0.5


def _warn_if_mostly_unknown(stats: Mapping[str, Any]) -> None:
    """A network that meets mostly unknown addresses is IS from the prior under another name;
    the usual cause is a simulator whose model code changed since the training data was made
    (address ids follow the functions on the call stack), so say so instead of returning a
    posterior that only looks amortised."""
    fallbacks, proposed = stats["prior_fallbacks"], stats["network_draws"]
    if fallbacks and fallbacks > UNKNOWN_WARN_FRACTION * (fallbacks + proposed):
        shown = ", ".join(stats["unknown_addresses"][:6])
        warnings.warn(
            f"the network proposed only {proposed} of {fallbacks + proposed} controlled draws; the "
            f"other {fallbacks} came from the prior at addresses it has never seen ({shown}, ...). "
            "Was the simulator's model code changed or rebuilt without its symbol table since the "
            "training traces were made? Retrain on traces of this build.",
            RuntimeWarning,
            stacklevel=3,
        )
