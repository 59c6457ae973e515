"""A `ProposalLSTM`'s per-address layers stacked into tables, for inference rounds.

An IC round holds one pending draw per trace in flight, at as many different addresses. Calling
each address's layers on its own rows costs a few dozen small ops per address and round, which on
a GPU are as many kernel launches; with 64 traces in flight that, not the arithmetic, limits
inference. The weights do not change during inference, so they are stacked once here: a round
gathers every row's weights by its address index and runs each layer as one batched matmul. Only
the proposal's own math (`features`, `sample`, `log_prob`) runs once per head kind (class,
distribution and sizes), of which a simulator has a handful.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from probexec.nn.network import ProposalLSTM, _head_kind
from probexec.nn.proposals import ProposalHead


def _gathered_linear(weight_t: Tensor, bias: Tensor, rows: Tensor, x: Tensor) -> Tensor:
    """Row r through linear layer `rows[r]` of the stacked (transposed weight [S, in, out],
    bias [S, out]).

    Each row is a row vector times its gathered matrix. The obvious form, `weight[rows] @ x` with
    x a column, was 8x slower on one CPU thread at 64 rows (1.9 ms against 0.22): advanced
    indexing copies slower than `index_select`, and the batched matrix times column vector
    reads each matrix across its rows (`bench/ic_round.py`)."""
    w = weight_t.index_select(0, rows)
    return torch.baddbmm(bias.index_select(0, rows).unsqueeze(1), x.unsqueeze(1), w).squeeze(1)


def _transposed(layers: Sequence[Tensor]) -> Tensor:
    """[S, in, out] from S weights [out, in], contiguous, for `_gathered_linear`."""
    return torch.stack(list(layers)).transpose(1, 2).contiguous()


@dataclass
class _Kind:
    """Heads that share their math: the first one computes for all; their last layers stacked."""

    head: ProposalHead
    weight: Tensor  # [S_k, hidden, outputs] (transposed)
    bias: Tensor  # [S_k, outputs]
    embed_weight: Tensor  # [S_k, feature_size, value_dim] (transposed): its sites' value embeddings
    embed_bias: Tensor  # [S_k, value_dim]


@dataclass
class HeadDraws:
    """One head kind's share of a round: which rows, their values and log q (on the CPU)."""

    rows: list[int]
    values: np.ndarray  # [r, value_size] float64
    log_q: np.ndarray  # [r] float64
    # [r, prev_size] on the network's device: each row's "previous draw" input for its trace's
    # next LSTM step, from the value just drawn.
    following: Tensor


class StackedSites:
    """The per-address layers of `net` (address embeddings, value embeddings, heads) as tables."""

    def __init__(self, net: ProposalLSTM) -> None:
        self.net = net
        keys = list(net.sites)
        self.index = {k: i for i, k in enumerate(keys)}
        self.device = net.start.device
        kinds: dict[tuple[object, ...], list[int]] = {}
        for i, k in enumerate(keys):
            kinds.setdefault(_head_kind(net.heads[k]), []).append(i)
        self.kind_of = np.zeros(len(keys), np.int64)
        local = np.zeros(len(keys), np.int64)
        self.kinds: list[_Kind] = []
        with torch.no_grad():
            if keys:
                types = torch.tensor([net.sites[k].dist_type for k in keys], device=self.device)
                address = torch.stack([net.address_embeddings[k] for k in keys])
                self.site_input = torch.cat([address, net.dist_embedding.weight[types]], -1)
                self.w0 = _transposed([net.heads[k].layer[0].weight for k in keys])
                self.b0 = torch.stack([net.heads[k].layer[0].bias for k in keys])
            for j, sites in enumerate(kinds.values()):
                self.kind_of[sites] = j
                local[sites] = np.arange(len(sites))
                heads = [net.heads[keys[i]] for i in sites]
                embeds = [net.value_embeddings[keys[i]] for i in sites]
                self.kinds.append(
                    _Kind(
                        heads[0],
                        _transposed([h.layer[2].weight for h in heads]),
                        torch.stack([h.layer[2].bias for h in heads]),
                        _transposed([e.weight for e in embeds]),
                        torch.stack([e.bias for e in embeds]),
                    )
                )
        self.local = torch.from_numpy(local).to(self.device)
        self.keys = keys

    def _by_kind(self, sites: Sequence[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for r, kind in enumerate(self.kind_of[np.asarray(sites, dtype=np.int64)].tolist()):
            out.setdefault(kind, []).append(r)
        return out

    def _tensor(self, rows: Sequence[np.ndarray]) -> Tensor:
        return torch.from_numpy(_stack32(rows)).to(self.device)

    def current(self, sites: Sequence[int]) -> Tensor:
        """[R, address + type embedding]: the "this draw" part of each row's LSTM input."""
        return self.site_input[torch.as_tensor(np.asarray(sites), device=self.device)]

    def previous(
        self, sites: Sequence[int], params: Sequence[np.ndarray], values: Sequence[np.ndarray]
    ) -> Tensor:
        """[R, prev_size]: the "previous draw" part of each row's input, from the site, prior
        parameters and value of the row's previous draw."""
        out = torch.empty(len(sites), self.net.prev_size, device=self.device)
        for kind, rows in self._by_kind(sites).items():
            site_rows = torch.as_tensor(np.asarray([sites[r] for r in rows]), device=self.device)
            p = self._tensor([params[r] for r in rows])
            v = self._tensor([values[r] for r in rows])
            out[torch.as_tensor(rows, device=self.device)] = self._previous(self.kinds[kind], site_rows, p, v)
        return out

    def _previous(self, k: _Kind, sites: Tensor, params: Tensor, values: Tensor) -> Tensor:
        emb = _gathered_linear(
            k.embed_weight, k.embed_bias, self.local[sites], k.head.features(params, values)
        )
        return torch.cat([emb, self.site_input.index_select(0, sites)], -1)

    def draw(
        self,
        sites: Sequence[int],
        hidden: Tensor,
        params: Sequence[np.ndarray],
        generator: torch.Generator | None = None,
        given: Mapping[int, np.ndarray] | None = None,
    ) -> list[HeadDraws]:
        """Samples every row's value from its address's proposal given the LSTM output `hidden`
        [R, H], with its log q; one `sample_with_log_prob` call per head kind. Each row's input
        for its trace's next step is computed here too, while the values and parameters are
        tensors already.

        `given`: rows (by position) whose value is already chosen, e.g. drawn from the prior for
        a defensive mixture; they get that value and its log q under the proposal instead."""
        idx = torch.as_tensor(np.asarray(sites), device=self.device)
        h = torch.relu(_gathered_linear(self.w0, self.b0, idx, hidden))
        out = []
        for kind, rows in self._by_kind(sites).items():
            k = self.kinds[kind]
            p32 = self._params(k, [params[r] for r in rows], [sites[r] for r in rows])
            at = torch.as_tensor(rows, device=self.device)
            site_rows = idx.index_select(0, at)
            raw = _gathered_linear(k.weight, k.bias, self.local[site_rows], h.index_select(0, at))
            p = torch.from_numpy(p32).to(self.device)
            if given and all(r in given for r in rows):  # only scoring: nothing to draw
                values = self._given_values(k, rows, given, raw.dtype)
                log_q = k.head.log_prob(raw, p, values)
            else:
                values, log_q = k.head.sample_with_log_prob(raw, p, generator)
                if given:
                    values, log_q = self._score_given(k, rows, given, raw, p, values, log_q)
            following = self._previous(k, site_rows, p, values)
            # One copy back per kind (a copy from a GPU waits for it).
            both = torch.cat([values.double(), log_q.double().unsqueeze(-1)], -1).cpu().numpy()
            out.append(HeadDraws(rows, both[:, :-1], both[:, -1], following))
        return out

    def _score_given(
        self,
        k: _Kind,
        rows: list[int],
        given: Mapping[int, np.ndarray],
        raw: Tensor,
        params: Tensor,
        values: Tensor,
        log_q: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """`values` and `log_q` with the rows of `given` replaced by their value and its log q."""
        fixed = [j for j, r in enumerate(rows) if r in given]
        if not fixed:
            return values, log_q
        at = torch.as_tensor(fixed, device=self.device)
        v = self._given_values(k, [rows[j] for j in fixed], given, values.dtype)
        scored = k.head.log_prob(raw.index_select(0, at), params.index_select(0, at), v)
        return values.index_copy(0, at, v), log_q.index_copy(0, at, scored.to(log_q.dtype))

    def _given_values(
        self, k: _Kind, rows: Sequence[int], given: Mapping[int, np.ndarray], dtype: torch.dtype
    ) -> Tensor:
        """The given values of `rows` as one [r, value_size] tensor; a wrong size is refused."""
        size = k.head.value_size
        chosen = [np.asarray(given[r], dtype=np.float64).reshape(-1) for r in rows]
        if any(len(v) != size for v in chosen):
            bad = next(r for r, v in zip(rows, chosen, strict=True) if len(v) != size)
            raise ValueError(f"row {bad}: a given value must have {size} elements, like its address's draws")
        return torch.from_numpy(np.stack(chosen)).to(device=self.device, dtype=dtype)

    def _params(self, k: _Kind, params: Sequence[np.ndarray], sites: Sequence[int]) -> np.ndarray:
        """The rows' prior parameters as one float32 array, refused when a row has not as many as
        its address's head expects."""
        size = k.head.param_size
        if all(len(q) == size for q in params):
            return _stack32(params)
        r = next(r for r, q in enumerate(params) if len(q) != size)
        raise ValueError(
            f"address {self.keys[sites[r]]}: the network expects {size} prior parameters, the "
            f"simulator sent {len(params[r])}"
        )


def _stack32(rows: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack(rows).astype(np.float32, copy=False)
