"""Observation embeddings on noise-dominated calorimeter images: batch norm makes the CNN's
output tell events apart from the first step, without making one event's proposal depend on the
other traces in flight, and old checkpoints keep their embedding."""

from __future__ import annotations

import numpy as np
import torch

from probexec.nn.embeddings import ObservationEmbedding, ObservationSpec
from probexec.nn.network import NetworkConfig

SHAPE = (20, 35, 35)


def noisy_images(n: int, seed: int = 0) -> torch.Tensor:
    """A shower-like blob of a few GeV at a random place under 200 MeV of noise per voxel."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(s) for s in SHAPE), indexing="ij")
    out = rng.normal(0.0, 0.2, (n, *SHAPE))
    for i in range(n):
        cy, cx = rng.uniform(8, 27, 2)
        out[i] += 0.6 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 4.0 - z / 6.0)
    return torch.from_numpy(out).float()


def embedding(norm: str) -> ObservationEmbedding:
    torch.manual_seed(0)
    e = ObservationEmbedding(ObservationSpec("calorimeter", SHAPE, "cnn3d", "symlog", norm), 64)
    e.fit(noisy_images(64, seed=1))
    return e


def test_batch_norm_makes_the_cnn_output_differ_between_noisy_images() -> None:
    x = noisy_images(64)
    with torch.no_grad():
        plain = embedding("none")(x)
        normed = embedding("batch")(x)

    # Spread across images of each output unit, against the output's size. Plain: about 0.2
    # over six initialisations (and 0.01 / 0.1 on real tau_decay_coarse images); with batch
    # norm about 1.5.
    def spread(e: torch.Tensor) -> float:
        return float(e.std(0).mean() / e.abs().mean())

    assert spread(plain) < 0.4, spread(plain)
    assert spread(normed) > 1.0, spread(normed)
    assert int((normed.abs().amax(0) > 0).sum()) > 56  # nearly every unit alive at the start


def test_proposing_uses_running_statistics_so_traces_do_not_mix() -> None:
    e = embedding("batch")
    x = noisy_images(16)
    e.train()
    with torch.no_grad():
        for _ in range(5):  # running statistics from a few training batches
            e(noisy_images(32, seed=7 + _))
    e.eval()
    with torch.no_grad():
        torch.testing.assert_close(e(x[:1]), e(x)[:1])
        torch.testing.assert_close(e(x[3:4].expand(8, *SHAPE)), e(x[3:4]).expand(8, -1))
    # A minibatch of a single trace (a rare trace type) trains with the running statistics.
    e.train()
    with torch.no_grad():
        one = e(x[:1])
    e.eval()
    with torch.no_grad():
        torch.testing.assert_close(one, e(x[:1]))


def test_checkpoints_from_before_norm_load_without_it() -> None:
    new = NetworkConfig("tau_decay", [ObservationSpec("calorimeter", SHAPE, "cnn3d", "symlog", "batch")])
    d = new.to_dict()
    assert d["observations"][0]["norm"] == "batch"
    assert NetworkConfig.from_dict(d).observations[0].norm == "batch"
    del d["observations"][0]["norm"]  # as a checkpoint written before the option existed
    old = NetworkConfig.from_dict(d).observations[0]
    assert old.norm == "none"
    assert not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in ObservationEmbedding(old, 8).modules()
    )
