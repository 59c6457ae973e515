"""The training forward pass batched across sites (`ProposalLSTM.log_q`) against the one-site-at-a-
time reference (`log_q_per_site`): the same log q and the same gradient for every parameter, on the
trace types of several simulators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probexec.data import TypeGroup
from probexec.nn.network import ProposalLSTM
from probexec.nn.stacked import StackedSites
from probexec.nn.training import build_network, prepare
from test_ic import make_dataset


def log_q_and_grads(
    net: ProposalLSTM, group: TypeGroup, grouped: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    batch = prepare(group, np.random.default_rng(0))
    net.zero_grad(set_to_none=True)
    log_q = net.log_q if grouped else net.log_q_per_site
    lq = log_q(group.layout, batch.values, batch.params, net.embed_observations(batch.observations))
    lq.sum().backward()
    return lq.detach(), {k: None if p.grad is None else p.grad.clone() for k, p in net.named_parameters()}


@pytest.mark.parametrize("sim", ["gum", "gum_marsaglia", "branching", "hmm", "tau_decay"])
def test_grouped_log_q_and_gradients_equal_per_site(sim, tmp_path):
    torch.manual_seed(0)
    groups = list(make_dataset(tmp_path / sim, sim, 300).iter_groups())
    net = build_network(sim, groups)
    group_sizes = []
    for group in groups:
        # Two batch sizes of one layout: the cached plan must not depend on the batch.
        for rows in (16, 5):
            part = group.rows(0, min(rows, len(group)))
            lq, grads = log_q_and_grads(net, part, grouped=True)
            ref_lq, ref_grads = log_q_and_grads(net, part, grouped=False)
            assert lq.shape == (len(part),) and torch.isfinite(lq).all()
            torch.testing.assert_close(lq, ref_lq)
            for name, ref in ref_grads.items():
                if ref is None:  # untouched by this layout; the optimizer must skip it as before
                    assert grads[name] is None, name
                else:
                    assert grads[name] is not None, name
                    # Sums over the batch taken in another order: a few float32 roundings apart.
                    torch.testing.assert_close(
                        grads[name], ref, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}"
                    )
        # The last site's value feeds no step: its value embedding gets no gradient at all.
        last = group.layout.sites[-1].key
        assert grads[f"value_embeddings.{last}.weight"] is None
        group_sizes.append(sorted(len(g.keys) for g in net._plan(group.layout, lq.device).groups))
    if sim == "hmm":  # 17 categorical draws, one kind
        assert group_sizes == [[17]]
    if sim == "tau_decay":  # Uniform, Categorical, Normal and Poisson sites: groups of several sizes
        assert all(len(s) == 4 and s[-1] >= 5 and s[0] == 1 for s in group_sizes), group_sizes


@pytest.mark.parametrize("sim", ["branching", "tau_decay"])
def test_stacked_inference_tables_equal_each_address_own_layers(sim, tmp_path):
    """IC rounds run every address's layers from stacked tables (`StackedSites`); for rows at many
    addresses at once they must give each address's own input, and a log q that the address's
    own head gives the drawn value."""
    torch.manual_seed(0)
    groups = list(make_dataset(tmp_path / sim, sim, 200).iter_groups())
    net = build_network(sim, groups).eval()
    tables = StackedSites(net)
    # One row per site of every layout, in a shuffled order: many addresses and kinds per call.
    rows = [(g, t) for g in groups for t in range(len(g.layout))]
    rows = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    keys = [g.layout.sites[t].key for g, t in rows]
    vo = [g.layout.value_offsets for g, _ in rows]
    po = [g.layout.param_offsets for g, _ in rows]
    values = [g.values[0, o[t] : o[t + 1]].astype(np.float32) for (g, t), o in zip(rows, vo, strict=True)]
    params = [g.params[0, o[t] : o[t + 1]].astype(np.float32) for (g, t), o in zip(rows, po, strict=True)]
    assert len(set(keys)) >= 2
    if sim == "tau_decay":  # several head kinds in one call
        assert len({tables.kind_of[tables.index[k]] for k in keys}) >= 3
    sites = [tables.index[k] for k in keys]
    with torch.no_grad():
        prev = tables.previous(sites, params, values)
        for r, k in enumerate(keys):
            one = net.previous_input(k, torch.from_numpy(params[r][None]), torch.from_numpy(values[r][None]))
            torch.testing.assert_close(prev[r], one[0])
            torch.testing.assert_close(tables.current([sites[r]])[0], net.current_input(k, 1)[0])
        hidden = torch.randn(len(rows), net.config.hidden)
        parts = tables.draw(sites, hidden, params, torch.Generator().manual_seed(0))
        assert sorted(r for p in parts for r in p.rows) == list(range(len(rows)))
        for part in parts:
            for j, r in enumerate(part.rows):
                head = net.heads[keys[r]]
                v = torch.from_numpy(part.values[j][None].astype(np.float32))
                own = head.log_prob(head.raw(hidden[r][None]), torch.from_numpy(params[r][None]), v)
                assert part.log_q[j] == pytest.approx(float(own[0]), rel=1e-4, abs=1e-4)
                # The drawn value as its trace's next step sees it.
                following = net.previous_input(keys[r], torch.from_numpy(params[r][None]), v)
                torch.testing.assert_close(part.following[j], following[0])
