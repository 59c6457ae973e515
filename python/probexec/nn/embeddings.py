"""Observation embeddings: what the LSTM knows about the data at every step.

Chosen per observation by its shape (`auto`): a vector or scalar gets a feed-forward network, a
2D array a 2D CNN, a 3D array (a calorimeter's layers × rows × columns) a 3D CNN. Inputs are
standardised with statistics taken from training data when the network is made; calorimeter-like
inputs (energies spanning decades, noisy around zero) go through a signed log first.

A CNN may also normalise its features, after every convolution and after the last linear layer.
This is off by default: no way is good enough yet. Measured on tau_decay_coarse, 1 212 IC
training steps, gain over the prior in nats per draw on held-out traces (`docs/ic/README.md`,
fourth session):
- Why at all: on an image whose voxels are mostly noise, the plain CNN's output hardly differs
  between images. On a tau image with 200 MeV of noise per voxel the std across images is 0.01,
  against values of 0.1. So the LSTM sees nearly the same input for every event and learns only
  from the earlier draws. The unused units then die.
- `norm="batch"`: BatchNorm (batch statistics in training, running ones when proposing).
  - px and py become learnable: +0.24 and +0.21.
  - The channel becomes worse than the prior: −0.52. A minibatch holds one trace type, which
    is nearly one channel, so the batch's statistics subtract what sets the channel apart.
    Proposing uses running statistics over all channels instead, which the network never saw
    in training.
- `norm="running"`: always the running statistics, updated in training (`_running`). Training
  and proposing then normalise alike, but nothing was gained in those steps (px −0.001).
- `norm="conv"`: batch statistics in the convolutions only, and running ones after the last
  layer. It gained +0.078 on the channel in 1 212 steps, but that was the start of a leak: with
  the batch's statistics, as in training, the same network gains +0.35 (sixth session). Trained
  on, the gap grows: at 2 500 steps +0.83 with batch statistics and −0.79 proposing. However
  little a one-type batch's statistics differ between channels, the network learns to read them.
- `norm="group"`: GroupNorm in the convolutions and LayerNorm after the last layer, each over
  one trace's own features. No statistics cross traces, so no batch can tell the network its
  type, and training and proposing compute the same thing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

EMBEDDINGS = ("auto", "ff", "cnn2d", "cnn3d")
TRANSFORMS = ("none", "symlog")
NORMS = ("none", "batch", "running", "conv", "group")


@dataclass
class ObservationSpec:
    """How one named observation is embedded; saved in checkpoints (plain data only)."""

    name: str
    shape: tuple[int, ...]
    embedding: str = "auto"
    transform: str = "none"
    norm: str = "none"  # "running": normalised CNN features (checkpoints from before it: "none")

    def resolved(self) -> ObservationSpec:
        if self.embedding not in EMBEDDINGS:
            raise ValueError(
                f"observation {self.name!r}: unknown embedding {self.embedding!r} (one of {EMBEDDINGS})"
            )
        if self.transform not in TRANSFORMS:
            raise ValueError(
                f"observation {self.name!r}: unknown transform {self.transform!r} (one of {TRANSFORMS})"
            )
        if self.norm not in NORMS:
            raise ValueError(f"observation {self.name!r}: unknown norm {self.norm!r} (one of {NORMS})")
        emb = self.embedding
        if emb == "auto":
            emb = {2: "cnn2d", 3: "cnn3d"}.get(len(self.shape), "ff")
        need = {"cnn2d": 2, "cnn3d": 3}.get(emb)
        if need is not None and len(self.shape) != need:
            raise ValueError(f"observation {self.name!r} of shape {self.shape} cannot use a {emb} embedding")
        if self.norm != "none" and emb == "ff":
            raise ValueError(
                f"observation {self.name!r}: norm {self.norm!r} applies to a CNN embedding, not ff"
            )
        return ObservationSpec(self.name, tuple(self.shape), emb, self.transform, self.norm)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def _running(cls: type[nn.modules.batchnorm._BatchNorm]) -> type[nn.Module]:
    """`cls` that always normalises with its running statistics, and while training updates them
    from each batch first (a cumulative average, then an average over the last ~100 batches).

    Not batch statistics: minibatches hold one trace type each, which for the tau decay is
    nearly one decay channel, so normalising by the batch would subtract exactly what tells the
    channels apart (measured: the channel proposal became worse than the prior). With running
    statistics, training and proposing normalise alike, and a trace never depends on the
    traces beside it."""

    class Running(cls):  # type: ignore[valid-type, misc]
        def forward(self, x: Tensor) -> Tensor:
            if self.training and x.numel() > x.shape[1]:  # a batch with more than one value per feature
                with torch.no_grad():
                    self.num_batches_tracked += 1
                    factor = max(1.0 / float(self.num_batches_tracked), 0.01)
                    nn.functional.batch_norm(
                        x.detach(), self.running_mean, self.running_var, None, None, True, factor, self.eps
                    )
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )

    Running.__name__ = "Running" + cls.__name__
    return Running


_Norm1d, _Norm2d, _Norm3d = (_running(c) for c in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))


def _single_safe(cls: type[nn.modules.batchnorm._BatchNorm], settling: bool = False) -> type[nn.Module]:
    """`cls` (batch statistics while training) that uses its running statistics for a batch of
    one trace, which has none: a rare trace type's minibatch can hold a single trace.

    `settling`: the running statistics average all batches so far, then the last ~100, like
    `_running`'s. Torch's fixed momentum of 0.1 leaves them for the first tens of steps near
    their initial 0 and 1, and a layer after them that normalises by its own running statistics
    (norm="conv") then learns a scale that proposing with those statistics does not match."""

    class SingleSafe(cls):  # type: ignore[valid-type, misc]
        def forward(self, x: Tensor) -> Tensor:
            if self.training and x.numel() == x.shape[1]:
                return nn.functional.batch_norm(
                    x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
                )
            if settling and self.training:
                self.momentum = max(1.0 / (float(self.num_batches_tracked) + 1.0), 0.01)
            return super().forward(x)

    SingleSafe.__name__ = cls.__name__
    return SingleSafe


_Batch1d, _Batch2d, _Batch3d = (_single_safe(c) for c in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))
_Settling2d, _Settling3d = (_single_safe(c, settling=True) for c in (nn.BatchNorm2d, nn.BatchNorm3d))


def _group_norm(channels: int) -> nn.GroupNorm:
    """Each trace's features normalised by that trace's own statistics (per group of channels,
    over every voxel): nothing depends on the other traces of the batch, so a minibatch of one
    trace type cannot tell the network its channel, and training and proposing compute alike."""
    return nn.GroupNorm(min(4, channels), channels)


LAYOUTS = ("auto", "contiguous", "channels_last")


def _channels_last_here(layout: str, x: Tensor) -> bool:
    """Whether a convolution runs channels-last: `auto` does on the CPU, where oneDNN's
    channels-last kernels ran the tau 3D CNN's forward and backward 2.3x as fast (`bench/
    conv_embedding.py`), and not on CUDA, where that is still to be measured."""
    if layout == "auto":
        return x.device.type == "cpu"
    return layout == "channels_last"


class _Conv:
    """A convolution that may run channels-last (`_channels_last_here`). The parameter keeps the
    standard layout, so checkpoints, optimizer state and gradients are as before; the copy into
    channels-last is one small op per layer.

    `to(memory_format=)`, not `contiguous(memory_format=)`: with one input channel a standard
    weight already counts as channels-last-contiguous and `contiguous` returns it as is, so the
    first (and largest) layer would not switch."""

    layout = "auto"
    memory_format: torch.memory_format

    def forward(self, x: Tensor) -> Tensor:
        if not _channels_last_here(self.layout, x):
            return self._conv_forward(x, self.weight, self.bias)  # type: ignore[attr-defined]
        fmt = self.memory_format
        return self._conv_forward(  # type: ignore[attr-defined]
            x.to(memory_format=fmt),
            self.weight.to(memory_format=fmt),
            self.bias,  # type: ignore[attr-defined]
        )


class _Conv3d(_Conv, nn.Conv3d):
    memory_format = torch.channels_last_3d


class _Conv2d(_Conv, nn.Conv2d):
    memory_format = torch.channels_last


def _conv_stack(
    dims: int, channels: tuple[int, ...], shape: tuple[int, ...], norm_kind: str = "none"
) -> tuple[nn.Sequential, int]:
    """Convolution, norm (if any), max-pool, ReLU per layer. Pooling before the ReLU computes the
    same (max and ReLU commute) on an eighth of the values; the parameters keep the indices they
    had when the ReLU came first, so older checkpoints load and propose alike."""
    conv = _Conv3d if dims == 3 else _Conv2d
    pool = nn.MaxPool3d if dims == 3 else nn.MaxPool2d
    by_kind = {
        "batch": (_Batch2d, _Batch3d),
        "conv": (_Settling2d, _Settling3d),
        "running": (_Norm2d, _Norm3d),
        "group": (_group_norm, _group_norm),
    }
    norm = by_kind.get(norm_kind, (None, None))[dims - 2]
    batch_norm = norm is not None
    layers: list[nn.Module] = []
    c_in, size = 1, list(shape)
    for c in channels:
        layers += [conv(c_in, c, 3, padding=1), *([norm(c)] if batch_norm else [])]
        if min(size) >= 2:
            layers.append(pool(2))
            size = [s // 2 for s in size]
        layers.append(nn.ReLU())
        c_in = c
    return nn.Sequential(*layers, nn.Flatten()), c_in * math.prod(size)


def set_conv_layout(module: nn.Module, layout: str) -> None:
    """Sets the memory layout every CNN embedding in `module` (a network or one embedding) runs
    its convolutions in: "auto" (channels-last on the CPU only), "contiguous" or
    "channels_last". It changes speed, not results; it is not saved in checkpoints."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown convolution layout {layout!r} (one of {LAYOUTS})")
    for m in module.modules():
        if isinstance(m, _Conv):
            m.layout = layout


class ObservationEmbedding(nn.Module):
    """One observation -> a vector of `dim`."""

    def __init__(self, spec: ObservationSpec, dim: int) -> None:
        super().__init__()
        self.spec = spec.resolved()
        self.dim = dim
        size = math.prod(self.spec.shape)
        # Standardisation, set from data by `fit` (kept in the state dict).
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))
        if self.spec.embedding == "ff":
            self.register_buffer("shift_v", torch.zeros(size))
            self.register_buffer("scale_v", torch.ones(size))
            self.net = nn.Sequential(nn.Linear(size, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        else:
            dims = 3 if self.spec.embedding == "cnn3d" else 2
            body, flat = _conv_stack(dims, (8, 16, 32), self.spec.shape, self.spec.norm)
            last = {"batch": _Batch1d, "running": _Norm1d, "conv": _Norm1d, "group": nn.LayerNorm}.get(
                self.spec.norm
            )
            head: list[nn.Module] = [nn.Linear(flat, dim), *([last(dim)] if last else []), nn.ReLU()]
            self.net = nn.Sequential(body, *head)

    def _transform(self, x: Tensor) -> Tensor:
        if self.spec.transform == "symlog":
            return torch.sign(x) * torch.log1p(x.abs())
        return x

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Standardisation statistics from a sample of observations [N, *shape]."""
        y = self._transform(x.reshape(len(x), -1).double())
        if self.spec.embedding == "ff":
            self.shift_v.copy_(y.mean(0).float())
            self.scale_v.copy_(y.std(0).clamp_min(1e-6).float() if len(y) > 1 else torch.ones(y.shape[1]))
        else:
            self.shift.copy_(y.mean().float())
            self.scale.copy_(y.std().clamp_min(1e-6).float() if y.numel() > 1 else torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        y = self._transform(x.reshape(len(x), *self.spec.shape))
        if self.spec.embedding == "ff":
            return self.net((y.reshape(len(y), -1) - self.shift_v) / self.scale_v)
        return self.net(((y - self.shift) / self.scale).unsqueeze(1))
