"""Which addresses a proposal network has learned: per address, how much better than the prior
it scores the values of held-out prior traces.

A network's loss is a sum over a trace's draws, so "the loss is the prior's own" cannot say
whether the network learned nothing or learned the channel and nothing else. Per address, the
mean -log q of the true values against their mean -log p under the prior says it: the gap
(nats per draw) is what the proposal gained there from the observation and the draws before.
Zero means the proposal there is as good as the prior, and for IC no better than IS; below zero
means worse than the prior.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from probexec.data.dataset import TraceDataset
from probexec.data.layout import TypeGroup
from probexec.distributions.registry import wire_type_name
from probexec.nn.network import ProposalLSTM
from probexec.trace import score_rows


@dataclass
class AddressGain:
    """One address's draws in the scored traces. Sums, so that parts can be added up."""

    name: str  # the draw's name, else the address key
    key: str
    distribution: str
    draws: int = 0
    prior_nll: float = 0.0  # sum of -log p(value) under the prior
    proposal_nll: float = 0.0  # sum of -log q(value | observation, earlier draws)

    @property
    def gain(self) -> float:
        """Nats per draw by which the proposal beats the prior."""
        return (self.prior_nll - self.proposal_nll) / max(self.draws, 1)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "key": self.key,
            "distribution": self.distribution,
            "draws": self.draws,
            "prior_nll_per_draw": self.prior_nll / max(self.draws, 1),
            "proposal_nll_per_draw": self.proposal_nll / max(self.draws, 1),
            "gain_per_draw": self.gain,
        }


@dataclass
class GainReport:
    addresses: list[AddressGain]  # largest gain first
    traces: int  # traces scored
    skipped_traces: int  # of a type with an address the network has no layers for

    @property
    def prior_nll_per_trace(self) -> float:
        return sum(a.prior_nll for a in self.addresses) / max(self.traces, 1)

    @property
    def proposal_nll_per_trace(self) -> float:
        return sum(a.proposal_nll for a in self.addresses) / max(self.traces, 1)

    def to_dict(self) -> dict:
        return {
            "traces": self.traces,
            "skipped_traces": self.skipped_traces,
            "prior_nll_per_trace": self.prior_nll_per_trace,
            "proposal_nll_per_trace": self.proposal_nll_per_trace,
            "addresses": [a.to_dict() for a in self.addresses],
        }


@torch.no_grad()
def address_gains(
    network: ProposalLSTM,
    data: TraceDataset | Iterable[TypeGroup],
    traces: int = 2000,
    *,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 256,
) -> GainReport:
    """Scores up to `traces` traces of `data` (held-out prior traces: a dataset or type groups),
    each observation drawn afresh with `seed`, and sums each address's -log q and -log p."""
    groups = data.iter_groups() if isinstance(data, TraceDataset) else data
    dev = torch.device(device)
    rng = np.random.default_rng(seed)
    was_training = network.training
    network.eval()
    by_key: dict[str, AddressGain] = {}
    done = skipped = 0
    try:
        for group in groups:
            if done >= traces:
                break
            layout = group.layout
            keys = [s.key for s in layout.sites]
            if not all(network.known(keys)):
                skipped += len(group)
                continue
            for a in range(0, min(len(group), traces - done), batch_size):
                g = group.rows(a, min(a + batch_size, len(group), a + traces - done))
                obs = {k: torch.from_numpy(o.draw(rng)).to(dev) for k, o in g.observations.items()}
                values = torch.from_numpy(np.ascontiguousarray(g.values, dtype=np.float32)).to(dev)
                params = torch.from_numpy(np.ascontiguousarray(g.params, dtype=np.float32)).to(dev)
                log_q = (
                    network.site_log_q(layout, values, params, network.embed_observations(obs))
                    .double()
                    .cpu()
                    .numpy()
                )
                vo, po = layout.value_offsets, layout.param_offsets
                for t, site in enumerate(layout.sites):
                    log_p = score_rows(
                        site.dist_type,
                        g.values[:, vo[t] : vo[t + 1]].astype(np.float64),
                        g.params[:, po[t] : po[t + 1]].astype(np.float64),
                    )
                    row = by_key.get(site.key)
                    if row is None:
                        row = by_key[site.key] = AddressGain(
                            site.name or site.key, site.key, wire_type_name(site.dist_type)
                        )
                    row.draws += len(g)
                    row.prior_nll -= float(log_p.sum())
                    row.proposal_nll -= float(log_q[t].sum())
                done += len(g)
    finally:
        network.train(was_training)
    rows = sorted(by_key.values(), key=lambda r: -r.gain)
    return GainReport(rows, done, skipped)


def format_report(report: GainReport, limit: int | None = None) -> str:
    lines = [
        f"{report.traces} traces scored ({report.skipped_traces} of types the network lacks layers for left out)",
        f"per trace: -log p under the prior {report.prior_nll_per_trace:.3f}, "
        f"-log q under the network {report.proposal_nll_per_trace:.3f} nats",
        f"{'address':<32} {'distribution':<12} {'draws':>7} {'-log p':>9} {'-log q':>9} {'gain':>8}",
    ]
    for r in report.addresses[:limit]:
        d = r.to_dict()
        lines.append(
            f"{r.name[:32]:<32} {r.distribution:<12} {r.draws:>7} {d['prior_nll_per_draw']:>9.3f} "
            f"{d['proposal_nll_per_draw']:>9.3f} {r.gain:>8.3f}"
        )
    return "\n".join(lines)
