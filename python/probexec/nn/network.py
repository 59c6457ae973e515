"""`ProposalLSTM`: the inference-compilation network.

At each controlled draw of a trace the LSTM takes

    [observation embedding | previous draw: value embedding, address embedding, type embedding |
     this draw: address embedding, type embedding]

and its output feeds the proposal head of this draw's address (`proposals.py`). Per-address
layers (address embedding, value embedding, head) are keyed by "address id _ instance" and made
when an address is first met — during training they join the optimizer's parameters (`add_parameters`),
so the existing parameters keep their optimizer state. The shared parts (observation embeddings,
type embeddings, LSTM) are made once.

Training runs a whole minibatch of one trace type as one `nn.LSTM` call over the sequence;
inference steps many traces, each at its own address, as one batched cell step (`step`). Around
that LSTM call, training batches across the addresses of a trace type too (`log_q`): addresses
whose heads have the same kind (class, distribution, sizes) form a group, and each group's value
embeddings and heads run as one batched matmul on stacked weights, so a training step launches a
few ops per group instead of a few dozen per address.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from probexec.data.layout import Site, TypeLayout
from probexec.nn.embeddings import ObservationEmbedding, ObservationSpec
from probexec.nn.proposals import NUM_DIST_TYPES, ProposalHead, make_head


@dataclass
class NetworkConfig:
    simulator: str
    observations: list[ObservationSpec]
    obs_dim: int = 64
    address_dim: int = 16
    value_dim: int = 16
    dist_dim: int = 4
    hidden: int = 128
    lstm_layers: int = 1
    components: int = 5

    def to_dict(self) -> dict:
        d = {
            k: getattr(self, k)
            for k in (
                "simulator",
                "obs_dim",
                "address_dim",
                "value_dim",
                "dist_dim",
                "hidden",
                "lstm_layers",
                "components",
            )
        }
        d["observations"] = [o.to_dict() for o in self.observations]
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> NetworkConfig:
        obs = [
            ObservationSpec(
                o["name"], tuple(o["shape"]), o["embedding"], o["transform"], o.get("norm", "none")
            )
            for o in d["observations"]
        ]
        return cls(**{k: v for k, v in d.items() if k != "observations"}, observations=obs)


def _module_key(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def _head_kind(head: ProposalHead) -> tuple[object, ...]:
    """What two heads must share to run as one: the same math (class, and the prior type where
    the class branches on it) and the same shapes of parameters, values, features and layers."""
    return (
        type(head),
        getattr(head, "dist_type", None),
        head.value_size,
        head.param_size,
        head.components,
        getattr(head, "categories", None),
        head.feature_size(),
    )


def _stacked_linear(layers: Sequence[nn.Linear], x: Tensor) -> Tensor:
    """G linear layers of one shape applied to their own rows, x [G, B, in] -> [G, B, out], as one
    batched matmul. The weights are stacked on every call: they are the parameters being trained.
    Computed as (W x^T)^T so that the stacked weight's gradient comes out contiguous and each
    weight's slice of it is its gradient as is (x W^T would copy every one of them)."""
    weight = torch.stack([m.weight for m in layers])
    bias = torch.stack([m.bias for m in layers])
    return torch.baddbmm(bias.unsqueeze(2), weight, x.mT).mT


@dataclass(frozen=True)
class _SiteGroup:
    """Sites of one layout whose heads have one kind (`_head_kind`), in layout order."""

    keys: tuple[str, ...]
    value_columns: Tensor  # [G, value_size] their columns of the dense value rows
    param_columns: Tensor  # [G, param_size] their columns of the dense parameter rows
    previous: int  # how many of them feed a next step: all but the layout's last site


@dataclass(frozen=True)
class _EmbeddingSet:
    """Groups whose value features have one size, so their value embeddings (linears of one
    shape) run as one: the feeding sites of each member group, member after member."""

    members: tuple[int, ...]  # indices into the plan's groups
    keys: tuple[str, ...]


@dataclass(frozen=True)
class _LayoutPlan:
    """What `log_q` needs of a layout beyond the batch: it depends on the layout only, so it is
    made once per layout and device and the per-step Python work stays small."""

    keys: tuple[str, ...]
    dist_types: Tensor  # [L] each site's distribution type
    groups: tuple[_SiteGroup, ...]
    by_group: Tensor  # [L] the layout's steps, group after group
    keys_by_group: tuple[str, ...]  # their sites' keys
    embedding_sets: tuple[_EmbeddingSet, ...]
    # The previous-value embeddings come out set after set; this puts them in step order.
    previous_order: Tensor  # [L - 1]


def add_parameters(optimizer: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter]) -> None:
    """New parameters (a new address's layers) join the optimizer's last group. Adam keys its
    state by parameter and makes it at a parameter's first step, so the old parameters keep
    theirs; the saved state numbers parameters in this order, which `make_optimizer` rebuilds."""
    group = optimizer.param_groups[-1]
    known = {id(p) for g in optimizer.param_groups for p in g["params"]}
    group["params"].extend(p for p in params if id(p) not in known)


class ProposalLSTM(nn.Module):
    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        if not c.observations:
            raise ValueError("a proposal network needs at least one observation to condition on")
        # Observations a feed-forward network embeds (scalars, vectors) are concatenated and
        # embedded together: an HMM's 16 scalar observations are one 16-vector, not 16 networks.
        specs = [o.resolved() for o in c.observations]
        self.ff_names = [o.name for o in specs if o.embedding == "ff"]
        self.conv_names = [o.name for o in specs if o.embedding != "ff"]
        self._specs = {o.name: o for o in specs}
        self.obs_embeddings = nn.ModuleDict(
            {_module_key(n): ObservationEmbedding(self._specs[n], c.obs_dim) for n in self.conv_names}
        )
        if self.ff_names:
            size = sum(math.prod(self._specs[n].shape) for n in self.ff_names)
            self.obs_embeddings["_feedforward"] = ObservationEmbedding(
                ObservationSpec("_feedforward", (size,), "ff"), c.obs_dim
            )
        self.obs_combine = nn.Sequential(
            nn.Linear(c.obs_dim * len(self.obs_embeddings), c.obs_dim), nn.ReLU()
        )
        self.dist_embedding = nn.Embedding(NUM_DIST_TYPES, c.dist_dim)
        self.prev_size = c.value_dim + c.address_dim + c.dist_dim
        self.start = nn.Parameter(torch.zeros(self.prev_size))
        self.input_size = c.obs_dim + self.prev_size + c.address_dim + c.dist_dim
        self.lstm = nn.LSTM(self.input_size, c.hidden, c.lstm_layers)
        self.address_embeddings = nn.ParameterDict()
        self.value_embeddings = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.sites: dict[str, Site] = {}
        self._plans: dict[tuple[str, torch.device], _LayoutPlan] = {}

    # --- sites ---------------------------------------------------------------------------------
    def add_site(self, site: Site) -> list[nn.Parameter]:
        """Makes the layers of a new address; returns their parameters (for the optimizer)."""
        c = self.config
        key = site.key
        dev = self.start.device
        head = make_head(site.dist_type, c.hidden, site.value_size, site.param_size, c.components).to(dev)
        emb = nn.Parameter(torch.randn(c.address_dim, device=dev) * 0.1)
        val = nn.Linear(head.feature_size(), c.value_dim).to(dev)
        self.address_embeddings[key] = emb
        self.value_embeddings[key] = val
        self.heads[key] = head
        self.sites[key] = site
        return [emb, *val.parameters(), *head.parameters()]

    def ensure_sites(
        self, layouts: Iterable[TypeLayout], optimizer: torch.optim.Optimizer | None = None
    ) -> int:
        """Adds the layers of every address in `layouts` not seen yet; returns how many."""
        added = 0
        for layout in layouts:
            for site in layout.sites:
                if site.key in self.sites:
                    old = self.sites[site.key]
                    if (old.dist_type, old.value_size, old.param_size) != (
                        site.dist_type,
                        site.value_size,
                        site.param_size,
                    ):
                        raise ValueError(
                            f"address {site.name or site.key} changed its distribution: was type {old.dist_type} with "
                            f"{old.value_size} value(s), now type {site.dist_type} with {site.value_size}"
                        )
                    continue
                new = self.add_site(site)
                if optimizer is not None:
                    add_parameters(optimizer, new)
                added += 1
        return added

    def site_parameter_groups(self) -> list[list[nn.Parameter]]:
        """Per site, in creation order: the parameter groups an optimizer must have (after the
        shared group) to load a saved optimizer state."""
        return [
            [self.address_embeddings[k], *self.value_embeddings[k].parameters(), *self.heads[k].parameters()]
            for k in self.sites
        ]

    def shared_parameters(self) -> list[nn.Parameter]:
        site_ids = {id(p) for g in self.site_parameter_groups() for p in g}
        return [p for p in self.parameters() if id(p) not in site_ids]

    # --- pieces --------------------------------------------------------------------------------
    def _check(self, observations: Mapping[str, Tensor]) -> None:
        for spec in self.config.observations:
            if spec.name not in observations:
                raise KeyError(f"the network needs observation {spec.name!r}; got {sorted(observations)}")

    def observation_batch(self, observe: Mapping[str, Any], device: torch.device | str) -> dict[str, Tensor]:
        """One event's observations (arrays of any shape with the right number of values) as the
        batch of one this network embeds; a missing one or a wrong size is named."""
        batch = {}
        for spec in self.config.observations:
            if spec.name not in observe:
                raise KeyError(
                    f"the network conditions on observation {spec.name!r}; give it (got {sorted(observe)})"
                )
            v = np.asarray(observe[spec.name], dtype=np.float32)
            if v.size != int(np.prod(spec.shape)):
                raise ValueError(
                    f"observation {spec.name!r} has {v.size} values, the network expects shape {spec.shape}"
                )
            batch[spec.name] = torch.from_numpy(v.reshape(1, *spec.shape)).to(device)
        return batch

    def feedforward_input(self, observations: Mapping[str, Tensor]) -> Tensor:
        """The feed-forward observations, transformed and concatenated: [B, size]."""
        parts = []
        for n in self.ff_names:
            x = observations[n]
            x = x.reshape(len(x), -1)
            parts.append(torch.sign(x) * torch.log1p(x.abs()) if self._specs[n].transform == "symlog" else x)
        return torch.cat(parts, -1)

    def fit_observations(self, observations: Mapping[str, Tensor]) -> None:
        """Standardisation statistics of every observation embedding from a sample."""
        self._check(observations)
        for n in self.conv_names:
            self.obs_embeddings[_module_key(n)].fit(observations[n])
        if self.ff_names:
            self.obs_embeddings["_feedforward"].fit(self.feedforward_input(observations))

    def embed_observations(self, observations: Mapping[str, Tensor]) -> Tensor:
        self._check(observations)
        parts = [self.obs_embeddings[_module_key(n)](observations[n]) for n in self.conv_names]
        if self.ff_names:
            parts.append(self.obs_embeddings["_feedforward"](self.feedforward_input(observations)))
        return self.obs_combine(torch.cat(parts, -1))

    def current_input(self, key: str, n: int) -> Tensor:
        site = self.sites[key]
        dt = self.dist_embedding.weight[site.dist_type]
        return torch.cat([self.address_embeddings[key], dt]).expand(n, -1)

    def previous_input(self, key: str, params: Tensor, value: Tensor) -> Tensor:
        site = self.sites[key]
        feats = self.heads[key].features(params, value)
        v = self.value_embeddings[key](feats)
        rest = torch.cat([self.address_embeddings[key], self.dist_embedding.weight[site.dist_type]])
        return torch.cat([v, rest.expand(len(v), -1)], -1)

    def initial_state(self, n: int) -> tuple[Tensor, Tensor]:
        z = torch.zeros(self.config.lstm_layers, n, self.config.hidden, device=self.start.device)
        return z, z.clone()

    # --- training ------------------------------------------------------------------------------
    def _plan(self, layout: TypeLayout, device: torch.device) -> _LayoutPlan:
        cache_key = (layout.key, device)
        plan = self._plans.get(cache_key)
        if plan is not None:
            return plan
        keys = tuple(s.key for s in layout.sites)
        vo, po = layout.value_offsets, layout.param_offsets
        by_kind: dict[tuple[object, ...], list[int]] = {}
        for t, key in enumerate(keys):
            by_kind.setdefault(_head_kind(self.heads[key]), []).append(t)
        kinds = list(by_kind.values())

        def index(rows: list[Any]) -> Tensor:
            return torch.tensor(rows, dtype=torch.long, device=device)

        groups = tuple(
            _SiteGroup(
                keys=tuple(keys[t] for t in steps),
                value_columns=index([list(range(vo[t], vo[t + 1])) for t in steps]),
                param_columns=index([list(range(po[t], po[t + 1])) for t in steps]),
                previous=len(steps) - int(steps[-1] == len(keys) - 1),
            )
            for steps in kinds
        )
        by_size: dict[int, list[int]] = {}
        for i, g in enumerate(groups):
            if g.previous:
                by_size.setdefault(self.heads[g.keys[0]].feature_size(), []).append(i)
        sets = tuple(
            _EmbeddingSet(tuple(m), tuple(k for i in m for k in groups[i].keys[: groups[i].previous]))
            for m in by_size.values()
        )
        feeding = [t for e in sets for i in e.members for t in kinds[i][: groups[i].previous]]
        plan = _LayoutPlan(
            keys=keys,
            dist_types=index([s.dist_type for s in layout.sites]),
            groups=groups,
            by_group=index([t for steps in kinds for t in steps]),
            keys_by_group=tuple(keys[t] for steps in kinds for t in steps),
            embedding_sets=sets,
            previous_order=index(sorted(range(len(feeding)), key=feeding.__getitem__)),
        )
        self._plans[cache_key] = plan
        return plan

    def log_q(self, layout: TypeLayout, values: Tensor, params: Tensor, obs_embedding: Tensor) -> Tensor:
        """log q(trace) per trace [B] for a minibatch of one trace type. The same as
        `log_q_per_site`, with same-shape layers of many sites run as one batched op: a tau-decay
        type has tens of sites but only a handful of head kinds and two feature sizes."""
        n = len(values)
        if len(layout) == 0:
            return torch.zeros(n, device=values.device)
        plan = self._plan(layout, values.device)
        steps = len(plan.keys)
        # Each group's values and parameters as [G * B, size] rows, site after site.
        rows = []
        for g in plan.groups:
            v = values[:, g.value_columns].transpose(0, 1).reshape(len(g.keys) * n, g.value_columns.shape[1])
            p = params[:, g.param_columns].transpose(0, 1).reshape(len(g.keys) * n, g.param_columns.shape[1])
            rows.append((v, p))
        # Per step, this site's address and type embedding (what the LSTM input calls "this draw").
        address = torch.stack([self.address_embeddings[k] for k in plan.keys])
        site_emb = torch.cat([address, self.dist_embedding.weight[plan.dist_types]], -1)
        current = site_emb.unsqueeze(1).expand(steps, n, -1)
        # Teacher forcing: the input at step t holds site t - 1's value, known before the LSTM runs.
        prev = self.start.expand(1, n, -1)
        if steps > 1:
            feats: dict[int, Tensor] = {}
            for i, (g, (v, p)) in enumerate(zip(plan.groups, rows, strict=True)):
                if g.previous:
                    used = g.previous * n
                    head = self.heads[g.keys[0]]
                    feats[i] = head.features(p[:used], v[:used]).reshape(g.previous, n, head.feature_size())
            embedded = [
                _stacked_linear(
                    [self.value_embeddings[k] for k in e.keys], torch.cat([feats[i] for i in e.members])
                )
                for e in plan.embedding_sets
            ]
            value_emb = torch.cat(embedded).index_select(0, plan.previous_order)
            prev = torch.cat([prev, torch.cat([value_emb, current[:-1]], -1)])
        obs = obs_embedding.unsqueeze(0).expand(steps, n, -1)
        out, _ = self.lstm(torch.cat([obs, prev, current], -1))
        # A head's `layer` is Linear, ReLU, Linear, and every first Linear is hidden -> hidden: all
        # sites at once, group after group, then a split into the groups (whose gradient is one
        # concatenation).
        out = out.index_select(0, plan.by_group)
        hidden = torch.relu(_stacked_linear([self.heads[k].layer[0] for k in plan.keys_by_group], out))
        log_probs = []
        for g, (v, p), h in zip(
            plan.groups, rows, hidden.split([len(g.keys) for g in plan.groups]), strict=True
        ):
            heads = [self.heads[k] for k in g.keys]
            raw = _stacked_linear([head.layer[2] for head in heads], h)
            log_probs.append(heads[0].log_prob(raw.reshape(len(heads) * n, raw.shape[-1]), p, v))
        return torch.cat(log_probs).reshape(steps, n).sum(0)

    def log_q_per_site(
        self, layout: TypeLayout, values: Tensor, params: Tensor, obs_embedding: Tensor
    ) -> Tensor:
        """`log_q` one site at a time, as the inference path steps: the reference the grouped
        `log_q` is tested against."""
        if len(layout) == 0:
            return torch.zeros(len(values), device=values.device)
        return self.site_log_q(layout, values, params, obs_embedding).sum(0)

    def site_log_q(self, layout: TypeLayout, values: Tensor, params: Tensor, obs_embedding: Tensor) -> Tensor:
        """log q of each site's value, [sites, B]: which addresses the network has learned
        (`nn.diagnostics`), where the trace total hides it."""
        n = len(values)
        vo, po = layout.value_offsets, layout.param_offsets
        keys = [s.key for s in layout.sites]
        inputs = []
        prev = self.start.expand(n, -1)
        for t, key in enumerate(keys):
            inputs.append(torch.cat([obs_embedding, prev, self.current_input(key, n)], -1))
            prev = self.previous_input(key, params[:, po[t] : po[t + 1]], values[:, vo[t] : vo[t + 1]])
        out, _ = self.lstm(torch.stack(inputs))
        per_site = []
        for t, key in enumerate(keys):
            head = self.heads[key]
            per_site.append(
                head.log_prob(head.raw(out[t]), params[:, po[t] : po[t + 1]], values[:, vo[t] : vo[t + 1]])
            )
        return torch.stack(per_site)

    def loss(
        self, layout: TypeLayout, values: Tensor, params: Tensor, observations: Mapping[str, Tensor]
    ) -> Tensor:
        """Mean negative log proposal density of the traces' own values: minimising it over prior
        traces fits q(x | y) to the posterior p(x | y), averaged over the prior predictive."""
        return -self.log_q(layout, values, params, self.embed_observations(observations)).mean()

    # --- inference -----------------------------------------------------------------------------
    def step(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, new = self.lstm(x.unsqueeze(0), state)
        return out[0], new

    def known(self, keys: Sequence[str]) -> list[bool]:
        return [k in self.sites for k in keys]
