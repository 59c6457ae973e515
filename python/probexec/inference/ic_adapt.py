"""Adapting an amortised proposal to one event before inferring it.

A network trained on prior traces proposes well on average over the prior predictive, but for an
event far out in it (a momentum the image embedding reads badly, a rare channel) its proposal can
miss most of the posterior. The traces IC has already drawn for that event say where the posterior
is: each round's weighted traces are a sample of it. Fitting the network to them (a few gradient
steps on -sum_i w_i log q(x_i | y) with the weights normalised: the forward-KL objective of
training, estimated at this one y instead of averaged over the prior predictive) moves q towards
this event's posterior. Then the next round draws from the adapted q. Each fit uses every round's
traces so far, with the weights tempered so that it never rests on only a few traces.

Every round's traces are weighted against the q that drew them, so the weights stay exact
whatever the adaptation does; a round that made q worse costs ESS, not correctness. The posterior
returned is the last round's alone: earlier rounds drew from proposals that are worse by design,
and pooling them would let their heavier weights back in.

A fit to a few hundred traces can narrow q onto the part of the posterior those traces found. So
after the first round a share `mix` of each round's traces (and of the final run's) comes from the
network as trained, and every trace is weighted against the mixture of the two (`ICDriver(mix=)`):
what the trained network reaches, the mixture still reaches, at no more than 1/mix the weight.

The caller's network is not changed: the rounds adapt a copy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from probexec.data.layout import TypeLayout, split_by_type
from probexec.inference.defensive import check_mixture
from probexec.inference.result import Posterior, kish_ess
from probexec.nn.network import ProposalLSTM
from probexec.trace import TraceBatch


@dataclass(frozen=True)
class AdaptOptions:
    """`rounds` rounds of `traces` IC traces each, each followed by `steps` Adam steps at `lr` on
    the weighted traces of all rounds so far. The weights are tempered first, w^beta with the
    largest beta <= 1 that keeps their ESS at `ess_share` of the traces: fitted to an ESS of a
    few, q would narrow onto those few traces. Traces whose normalised weight is below
    `min_weight` are left out of the fit (they would add nothing to the gradient but their cost).
    From the second round on, the share `mix` of the traces comes from the network as trained
    (module docstring).

    The defaults are timid (on GUM from a weak network, 20 steps at 1e-3 did far better:
    docs/ic/adapt_gum.py). On the tau decay, 4 rounds of 50 steps at 1e-3, before the weights were
    pooled and tempered, narrowed q onto a few traces: the evidence estimates fell 7-20 nats."""

    rounds: int = 4
    traces: int = 250
    steps: int = 20
    lr: float = 3e-4
    min_weight: float = 1e-4
    ess_share: float = 0.1
    mix: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rounds", "traces", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"adaptation {name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"adaptation lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.ess_share <= 1.0:
            raise ValueError(
                f"adaptation ess_share is a share of the fitted traces, in [0, 1]; got {self.ess_share}"
            )
        check_mixture(self.mix, name="adaptation mix")
        if not 0.0 <= self.min_weight < 1.0:
            raise ValueError(f"adaptation min_weight is a normalised weight in [0, 1), got {self.min_weight}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _WeightedGroup:
    layout: TypeLayout
    values: torch.Tensor
    params: torch.Tensor
    weights: torch.Tensor  # normalised over all groups' kept traces


def tempering_exponent(log_w: np.ndarray, ess_share: float) -> float:
    """The largest beta in [0, 1] for which the weights w^beta have a Kish ESS of at least
    `ess_share` of their number (found by bisection: the ESS falls as beta grows)."""
    target = ess_share * len(log_w)
    if kish_ess(log_w) >= target:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if kish_ess(mid * log_w) >= target else (lo, mid)
    return lo


def _weighted_groups(
    net: ProposalLSTM, posterior: Posterior, options: AdaptOptions, device: torch.device
) -> tuple[list[_WeightedGroup], float, float]:
    """The posterior's traces by type, those of types whose addresses the network has all seen
    and whose weight is at least `min_weight`, with their weights tempered (`tempering_exponent`)
    and normalised over what is kept. Also returns the share of the weight kept and the exponent."""
    beta = tempering_exponent(posterior.log_weights, options.ess_share)
    log_w = beta * posterior.log_weights
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    groups, order, starts = split_by_type(posterior.traces)
    picked: list[tuple[TypeLayout, np.ndarray, np.ndarray, np.ndarray]] = []
    for k, g in enumerate(groups):
        if not all(net.known([s.key for s in g.layout.sites])):
            continue  # drawn from the prior at an unknown address: nothing of the network to fit
        wk = w[order[starts[k] : starts[k + 1]]]
        keep = wk >= options.min_weight
        if keep.any():
            picked.append((g.layout, g.values[keep], g.params[keep], wk[keep]))
    kept = float(sum(p[3].sum() for p in picked))
    out = [
        _WeightedGroup(
            layout,
            torch.from_numpy(values).to(device),
            torch.from_numpy(params).to(device),
            torch.from_numpy((wk / kept).astype(np.float32)).to(device),
        )
        for layout, values, params, wk in picked
    ]
    return out, kept, beta


def weighted_log_q(
    net: ProposalLSTM, groups: list[_WeightedGroup], obs: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """sum_i w_i log q(x_i | y): minus the fit's loss."""
    emb = net.embed_observations(obs)
    total = emb.new_zeros(())
    for g in groups:
        lq = net.log_q(g.layout, g.values, g.params, emb.expand(len(g.values), -1))
        total = total + (g.weights * lq).sum()
    return total


def fit_to_posterior(
    net: ProposalLSTM, posterior: Posterior, observe: Mapping[str, Any], options: AdaptOptions
) -> dict[str, float]:
    """`options.steps` Adam steps on `net` (in place) towards the weighted traces of `posterior`.
    Returns the weighted -log q before and after, and the share of the weight fitted."""
    device = next(net.parameters()).device
    groups, kept, beta = _weighted_groups(net, posterior, options, device)
    if not groups:
        return {
            "loss_before": math.nan,
            "loss_after": math.nan,
            "weight_fitted": 0.0,
            "traces_fitted": 0,
            "beta": beta,
        }
    obs = net.observation_batch(observe, device)
    # Eval mode: no dropout, and normalisation as at inference, where the adapted q is used.
    net.eval()
    optimizer = torch.optim.Adam(net.parameters(), lr=options.lr)
    with torch.enable_grad():
        losses = []
        for _ in range(options.steps):
            optimizer.zero_grad(set_to_none=True)
            loss = -weighted_log_q(net, groups, obs)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the adaptation loss became {float(loss)}; try a smaller --adapt-lr"
                )
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        with torch.no_grad():
            after = -float(weighted_log_q(net, groups, obs))
    return {
        "loss_before": losses[0],
        "loss_after": after,
        "weight_fitted": kept,
        "traces_fitted": int(sum(len(g.values) for g in groups)),
        "beta": beta,
    }


def pooled(posteriors: list[Posterior]) -> Posterior:
    """Several IC runs of one event as one weighted sample (each trace keeps its own weight)."""
    if len(posteriors) == 1:
        return posteriors[0]
    first = posteriors[0]
    return Posterior(
        first.engine,
        TraceBatch.concat([p.traces for p in posteriors]),
        np.concatenate([p.log_weights for p in posteriors]),
        first.latents,
        sum(p.seconds for p in posteriors),
    )


def round_mix(options: AdaptOptions, r: int) -> float:
    """The share of round r's traces (r = `options.rounds`: the final run's) drawn from the
    network as trained: none in the first round, whose network is still the trained one."""
    return options.mix if r > 0 else 0.0


def round_seeds(seed: int | None, options: AdaptOptions) -> list[int]:
    """A seed per adaptation round and one for the final run, all from `seed`."""
    states = np.random.SeedSequence(seed).generate_state(options.rounds + 1, dtype=np.uint64)
    return [int(s) >> 1 for s in states]


def adapt_network(
    network: ProposalLSTM,
    run_round: Callable[[ProposalLSTM, int], Posterior],
    observe: Mapping[str, Any],
    options: AdaptOptions,
    progress: bool = False,
) -> tuple[ProposalLSTM, list[dict[str, Any]]]:
    """A copy of `network` adapted over `options.rounds` rounds; `run_round(net, r)` runs round
    r's IC with `net`. Returns the copy and a record per round (its ESS and evidence estimate
    from the network as it was, and the fit that followed). `progress`: one bar over the rounds,
    with each round's ESS, since the fits can take longer than the traces."""
    net = copy.deepcopy(network)
    records = []
    drawn: list[Posterior] = []
    bar = tqdm(total=options.rounds, desc="adapting to the event", unit="round", disable=not progress)
    for r in range(options.rounds):
        post = run_round(net, r)
        drawn.append(post)
        record: dict[str, Any] = {
            "round": r,
            "traces": post.num_traces,
            "ess": post.ess,
            "log_evidence": post.log_evidence,
        }
        # Fitted to every round's traces so far: each is weighted against its own proposal, so
        # together they are one weighted sample of the posterior, with more distinct traces than
        # the last round alone to keep the fit from narrowing q onto a few of them.
        record.update(fit_to_posterior(net, pooled(drawn), observe, options))
        records.append(record)
        bar.set_postfix_str(f"round {r + 1}: ESS {post.ess:.1f} of {post.num_traces}")
        bar.update()
    bar.close()
    net.eval()
    return net, records
