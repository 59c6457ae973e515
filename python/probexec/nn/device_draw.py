"""Big Normal observations drawn on the training device.

A tau-decay minibatch of 512 traces needs 12.5 M Gaussian draws for its calorimeter images. On
the batch-making thread that is about a tenth of a second of NumPy, slower than a GPU trains on
the batch; on the GPU it is a few microseconds. So a batch carries each such observation as its
sparse mean and stddev (`SparseRows`, ~2 kB per image instead of 98 kB dense), and the image is
made and its noise drawn where the network runs. On the CPU too: torch draws them a few times
faster than NumPy, and the batch thread then no longer competes with training for the cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from probexec.data.layout import ObservationBlock
from probexec.data.sparse import SparseRows


@dataclass
class SparseTensor:
    """`SparseRows` as tensors: `fill` everywhere except `values` at (`rows`, `cols`)."""

    fill: float
    rows: Tensor
    cols: Tensor
    values: Tensor

    @classmethod
    def from_rows(cls, s: SparseRows, pin: bool = False) -> SparseTensor:
        rows, cols = s.coo()
        t = cls(
            s.fill,
            torch.from_numpy(rows.astype(np.int32)),
            torch.from_numpy(np.ascontiguousarray(cols, dtype=np.int32)),
            torch.from_numpy(np.ascontiguousarray(s.value, dtype=np.float32)),
        )
        if pin:
            t.rows, t.cols, t.values = t.rows.pin_memory(), t.cols.pin_memory(), t.values.pin_memory()
        return t

    def dense(self, n: int, size: int, device: torch.device) -> Tensor:
        out = torch.full((n, size), self.fill, dtype=torch.float32, device=device)
        rows = self.rows.to(device, non_blocking=True).long()
        cols = self.cols.to(device, non_blocking=True).long()
        out[rows, cols] = self.values.to(device, non_blocking=True)
        return out


@dataclass
class NormalObservation:
    """One observation of a minibatch, still to be drawn: Normal(loc, scale) per value."""

    shape: tuple[int, ...]
    n: int
    size: int
    loc: SparseTensor
    scale: SparseTensor

    @classmethod
    def from_block(cls, block: ObservationBlock, pin: bool = False) -> NormalObservation:
        if block.loc is None or block.scale is None:
            raise ValueError(f"observation {block.name!r} is stored as values, not as a Normal to draw from")
        return cls(
            tuple(block.shape),
            len(block),
            block.loc.size,
            SparseTensor.from_rows(block.loc, pin),
            SparseTensor.from_rows(block.scale, pin),
        )

    def draw(self, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        loc = self.loc.dense(self.n, self.size, device)
        scale = self.scale.dense(self.n, self.size, device)
        noise = torch.randn(loc.shape, device=device, generator=generator)
        return torch.addcmul(loc, scale, noise).reshape(self.n, *self.shape)
