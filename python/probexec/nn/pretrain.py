"""Teaching a fresh network's observation embedding to read the latents, before IC training.

Why: IC trained from scratch on the tau decay learns nothing about the decay channel from the
calorimeter (0.00 nats per draw), though the same 3D CNN, trained to predict the channel from
the image, gains +0.36 nats. IC's loss reaches the embedding only through the LSTM, and a
minibatch holds one trace type (nearly one channel), so no step contrasts the channels. Here
the embedding gets that contrast directly: a linear head on it predicts the traces' own latents
(every training trace holds them) from freshly drawn observations, on minibatches mixed across
trace types. The head is then dropped and IC training starts from the embedding. On
`tau_decay_coarse` that took the channel from -0.02 to +0.29 nats per draw (docs/ic/README.md).

Targets by prior type: a Categorical's value is a class (cross-entropy), a Bernoulli's a bit
(binary cross-entropy); every other value is regressed after standardising it on the pool
(mean squared error, 1.0 for a network that only knows the mean). A held-out slice of the pool
scores the result against those baselines, so a user sees what the embedding learned to read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from probexec.data.layout import ObservationBlock, Site, TypeGroup
from probexec.errors import ProbexecError
from probexec.nn.device_draw import NormalObservation
from probexec.nn.network import ProposalLSTM
from probexec.nn.proposals import BERNOULLI, CATEGORICAL

CLASS, BINARY, REGRESS = "class", "binary", "regress"


class PretrainError(ProbexecError, ValueError):
    """Pretraining cannot run: no usable traces, an unknown latent, a NaN loss."""


@dataclass(frozen=True)
class LatentTarget:
    """One named latent the head predicts, and how its loss is taken."""

    name: str
    kind: str  # CLASS, BINARY or REGRESS
    size: int  # values per trace
    classes: int = 0  # CLASS: categories per value

    @property
    def outputs(self) -> int:
        return self.size * self.classes if self.kind == CLASS else self.size


def target_of(site: Site) -> LatentTarget:
    if site.dist_type == CATEGORICAL:
        return LatentTarget(site.name, CLASS, site.value_size, site.param_size // site.value_size)
    if site.dist_type == BERNOULLI:
        return LatentTarget(site.name, BINARY, site.value_size)
    return LatentTarget(site.name, REGRESS, site.value_size)


@dataclass
class LatentPool:
    """Traces gathered for pretraining: every observation, and per latent its values and which
    traces drew it (a latent of some trace types only is masked in the others)."""

    observations: dict[str, ObservationBlock]
    targets: list[LatentTarget]
    values: list[np.ndarray]  # per target: [n, size] float32
    present: list[np.ndarray]  # per target: [n] bool

    def __len__(self) -> int:
        return len(self.present[0])


def _first_sites(group: TypeGroup) -> dict[str, int]:
    """Per address name, the position of its first site in the group's layout."""
    out: dict[str, int] = {}
    for i, s in enumerate(group.layout.sites):
        if s.name:
            out.setdefault(s.name, i)
    return out


def gather_pool(
    groups: Iterable[TypeGroup],
    observations: Sequence[str],
    latents: Sequence[str] | None,
    traces: int,
) -> LatentPool:
    """Up to `traces` traces from `groups` that hold every observation. `latents` None: the named
    addresses that every gathered trace draws."""
    picked: list[TypeGroup] = []
    got = 0
    for g in groups:
        if not all(name in g.observations for name in observations):
            continue
        take = min(len(g), traces - got)
        picked.append(g if take == len(g) else g.rows(0, take))
        got += take
        if got >= traces:
            break
    if not picked:
        raise PretrainError(
            f"pretraining found no traces holding every observation ({', '.join(observations)})"
        )
    sites: dict[str, Site] = {}
    counts: dict[str, int] = {}
    for g in picked:
        for name, i in _first_sites(g).items():
            s = g.layout.sites[i]
            first = sites.setdefault(name, s)
            if (first.dist_type, first.value_size, first.param_size) != (
                s.dist_type,
                s.value_size,
                s.param_size,
            ):
                raise PretrainError(f"latent {name!r} has a different distribution in different trace types")
            counts[name] = counts.get(name, 0) + len(g)
    if latents is None:
        chosen = [n for n in sites if counts[n] == got]
        if not chosen:
            raise PretrainError(
                "no named address is drawn in every trace; choose the latents to pretrain on by name"
            )
    else:
        chosen = list(dict.fromkeys(latents))
        unknown = [n for n in chosen if n not in sites]
        if unknown:
            raise PretrainError(
                f"no controlled address named {', '.join(map(repr, unknown))} in these traces; "
                f"named ones: {', '.join(sorted(sites))}"
            )
    targets = [target_of(sites[n]) for n in chosen]
    values = [np.zeros((got, t.size), np.float32) for t in targets]
    present = [np.zeros(got, bool) for _ in targets]
    row = 0
    for g in picked:
        where = _first_sites(g)
        offsets = g.layout.value_offsets
        for t, v, p in zip(targets, values, present, strict=True):
            if t.name in where:
                a = int(offsets[where[t.name]])
                v[row : row + len(g)] = g.values[:, a : a + t.size]
                p[row : row + len(g)] = True
        row += len(g)
    obs = {name: ObservationBlock.concat([g.observations[name] for g in picked]) for name in observations}
    return LatentPool(obs, targets, values, present)


class LatentHead(nn.Module):
    """A linear map from the observation embedding to every target's prediction."""

    def __init__(
        self, width: int, targets: Sequence[LatentTarget], mean: list[Tensor], std: list[Tensor]
    ) -> None:
        super().__init__()
        self.targets = list(targets)
        self.linear = nn.Linear(width, sum(t.outputs for t in self.targets))
        for i, (m, s) in enumerate(zip(mean, std, strict=True)):
            self.register_buffer(f"mean_{i}", m)
            self.register_buffer(f"std_{i}", s)

    def losses(self, embedding: Tensor, values: list[Tensor], present: list[Tensor]) -> list[Tensor]:
        """Per target, its mean loss over the traces that drew it (0 where none did)."""
        out = self.linear(embedding)
        losses, a = [], 0
        for i, (t, y, m) in enumerate(zip(self.targets, values, present, strict=True)):
            pred = out[:, a : a + t.outputs]
            a += t.outputs
            if t.kind == CLASS:
                logits = pred.reshape(len(pred), t.size, t.classes).transpose(1, 2)
                per = F.cross_entropy(logits, y.long().clamp(0, t.classes - 1), reduction="none")
            elif t.kind == BINARY:
                per = F.binary_cross_entropy_with_logits(pred, y, reduction="none")
            else:
                z = (y - getattr(self, f"mean_{i}")) / getattr(self, f"std_{i}")
                per = (pred - z) ** 2
            w = m.to(per.dtype)
            losses.append((per.mean(1) * w).sum() / w.sum().clamp(min=1.0))
        return losses


@dataclass
class LatentScore:
    """Held-out: the head's loss on one latent against what knowing nothing from the
    observations costs (class frequencies; the mean, i.e. 1.0 standardised). `gain` is in the
    loss's units: nats for classes and bits, standardised squared error for values (there,
    `gain / baseline` is the share of the variance the embedding explains)."""

    name: str
    kind: str
    loss: float
    baseline: float
    traces: int

    @property
    def gain(self) -> float:
        return self.baseline - self.loss


@dataclass
class PretrainReport:
    steps: int
    batch_size: int
    traces: int  # in the pool, held-out ones included
    held_out: int
    seconds: float
    latents: list[LatentScore] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        for row, s in zip(d["latents"], self.latents, strict=True):
            row["gain"] = s.gain
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PretrainReport:
        """Inverse of `to_dict` (a checkpoint's `train_state["pretrain"]`)."""
        rows = [LatentScore(**{k: v for k, v in r.items() if k != "gain"}) for r in d["latents"]]
        return cls(d["steps"], d["batch_size"], d["traces"], d["held_out"], d["seconds"], rows)

    def summary(self) -> str:
        parts = []
        for s in self.latents:
            if s.kind == REGRESS:
                parts.append(f"{s.name} {100 * (1 - s.loss / s.baseline):+.0f}% variance explained")
            else:
                parts.append(f"{s.name} {s.gain:+.3f} nats")
        return (
            f"pretrained the observation embedding ({self.steps} steps; held out: " + ", ".join(parts) + ")"
        )


def _frequency_nll(train: np.ndarray, test: np.ndarray, classes: int) -> float:
    """-log of each held-out value's frequency in the training part (counts start at one)."""
    counts = np.bincount(train.reshape(-1), minlength=classes)[:classes] + 1.0
    return float(-np.log(counts[test.reshape(-1)] / counts.sum()).mean())


def pretrain_embedding(
    network: ProposalLSTM,
    groups: Iterable[TypeGroup],
    *,
    steps: int,
    latents: Sequence[str] | None = None,
    traces: int = 40_000,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    draw_on_device: bool | None = None,
) -> PretrainReport:
    """Trains `network`'s observation embedding (in place, on its device) to predict `latents`
    from the observations of traces from `groups`; returns held-out scores. The rest of the
    network is untouched. `draw_on_device` (default: on CUDA) makes big Normal observations
    (the calorimeter image) from their sparse mean and stddev on the network's device, as
    training does: drawing 512 images with NumPy takes longer than a GPU step."""
    if steps < 1:
        raise ValueError(f"pretraining needs at least one step, not {steps}")
    t0 = time.perf_counter()
    names = [s.name for s in network.config.observations]
    pool = gather_pool(groups, names, latents, traces)
    n = len(pool)
    if n < 10:
        raise PretrainError(f"pretraining needs at least 10 traces; the data gave {n}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    held = min(2000, n // 10)
    test, fit = perm[:held], perm[held:]
    device = network.start.device
    mean, std = [], []
    for t, v, p in zip(pool.targets, pool.values, pool.present, strict=True):
        rows = v[fit][p[fit]]
        m = rows.mean(0) if len(rows) else np.zeros(t.size, np.float32)
        s = rows.std(0) if len(rows) else np.ones(t.size, np.float32)
        mean.append(torch.as_tensor(m, dtype=torch.float32))
        std.append(torch.as_tensor(np.where(s > 1e-6, s, 1.0), dtype=torch.float32))
    head = LatentHead(network.config.obs_dim, pool.targets, mean, std).to(device)
    params = [*network.obs_embeddings.parameters(), *network.obs_combine.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)

    on_device = draw_on_device if draw_on_device is not None else device.type == "cuda"
    noise = torch.Generator(device=device)
    noise.manual_seed(seed)

    def draw(block: ObservationBlock) -> Tensor:
        if on_device and block.values is None:
            return NormalObservation.from_block(block).draw(device, noise)
        return torch.from_numpy(block.draw(rng)).to(device)

    def batch(idx: np.ndarray) -> tuple[dict[str, Tensor], list[Tensor], list[Tensor]]:
        obs = {k: draw(b.take(idx)) for k, b in pool.observations.items()}
        ys = [torch.from_numpy(v[idx]).to(device) for v in pool.values]
        ms = [torch.from_numpy(p[idx]).to(device) for p in pool.present]
        return obs, ys, ms

    network.train()
    bar = tqdm(range(steps), desc="pretrain embedding", unit="step", disable=not progress)
    for step in bar:
        obs, ys, ms = batch(fit[rng.integers(0, len(fit), batch_size)])
        loss = torch.stack(head.losses(network.embed_observations(obs), ys, ms)).sum()
        # Reading the loss waits for the device: every 20 steps and at the end. A NaN stays
        # NaN in the parameters, so it is caught at the next read, before IC training starts.
        if step % 20 == 0 or step == steps - 1:
            value = float(loss.detach())
            if not math.isfinite(value):
                raise PretrainError(f"pretraining loss is {value} at step {step}")
            bar.set_postfix(loss=f"{value:.3f}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
    bar.close()
    if not all(bool(torch.isfinite(p).all()) for p in params):
        raise PretrainError(f"pretraining left non-finite weights in the embedding after {steps} steps")

    network.eval()
    sums = torch.zeros(len(pool.targets))
    with torch.no_grad():
        for a in range(0, held, 256):
            idx = test[a : a + 256]
            obs, ys, ms = batch(idx)
            for i, (lo, m) in enumerate(
                zip(head.losses(network.embed_observations(obs), ys, ms), ms, strict=True)
            ):
                sums[i] += float(lo) * float(m.sum())
    network.train()
    scores = []
    for i, (t, v, p) in enumerate(zip(pool.targets, pool.values, pool.present, strict=True)):
        k = int(p[test].sum())
        if t.kind == REGRESS:
            z = (v[test][p[test]] - mean[i].numpy()) / std[i].numpy()
            base = float((z**2).mean()) if k else math.nan
        else:
            classes = t.classes if t.kind == CLASS else 2
            tr, te = v[fit][p[fit]].astype(np.int64), v[test][p[test]].astype(np.int64)
            base = (
                _frequency_nll(np.clip(tr, 0, classes - 1), np.clip(te, 0, classes - 1), classes)
                if k
                else math.nan
            )
        scores.append(LatentScore(t.name, t.kind, float(sums[i]) / k if k else math.nan, base, k))
    return PretrainReport(steps, batch_size, n, held, time.perf_counter() - t0, scores)
