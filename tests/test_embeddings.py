"""Observation embeddings on noise-dominated calorimeter images: normalised CNN features tell
events apart from the first step, training and proposing normalise alike (no batch statistics,
which type-bucketed minibatches would turn into a per-channel offset), and old checkpoints keep
their embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probexec.nn.embeddings import ObservationEmbedding, ObservationSpec
from probexec.nn.network import NetworkConfig
from probexec.nn.training import ALL_OBSERVATIONS, observation_specs

SHAPE = (20, 35, 35)


def noisy_images(n: int, seed: int = 0, at: tuple[float, float] | None = None) -> torch.Tensor:
    """A shower-like blob of a few GeV (at a random place, or `at`) under 200 MeV of noise per voxel."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(s) for s in SHAPE), indexing="ij")
    out = rng.normal(0.0, 0.2, (n, *SHAPE))
    for i in range(n):
        cy, cx = at if at is not None else rng.uniform(8, 27, 2)
        out[i] += 0.6 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 4.0 - z / 6.0)
    return torch.from_numpy(out).float()


def embedding(norm: str, seed: int = 0) -> ObservationEmbedding:
    torch.manual_seed(seed)
    e = ObservationEmbedding(ObservationSpec("calorimeter", SHAPE, "cnn3d", "symlog", norm), 64)
    e.fit(noisy_images(64, seed=1))
    return e


def spread(e: torch.Tensor) -> float:
    """Spread across images of each output unit, against the output's size."""
    return float(e.std(0).mean() / e.abs().mean())


def test_normalised_features_differ_between_noisy_images_from_the_first_step() -> None:
    x = noisy_images(64)
    with torch.no_grad():
        plain = [embedding("none", s)(x) for s in range(3)]
        normed = [embedding("running", s)(x) for s in range(3)]  # a first training batch
    # Plain: about 0.2 (and 0.01 / 0.1 on real tau_decay_coarse images); normalised about 1.5.
    assert all(spread(p) < 0.4 for p in plain), [spread(p) for p in plain]
    assert all(spread(n) > 1.0 for n in normed), [spread(n) for n in normed]
    assert all(int((n.abs().amax(0) > 0).sum()) > 56 for n in normed)  # nearly every unit alive


def test_training_and_proposing_normalise_alike_and_traces_do_not_mix() -> None:
    e = embedding("running")
    with torch.no_grad():
        for k in range(5):  # statistics from a few training batches
            e(noisy_images(32, seed=7 + k))
        x = noisy_images(16)
        trained = e(x)  # updates the statistics with x, then normalises by them
        e.eval()
        torch.testing.assert_close(e(x), trained)
        torch.testing.assert_close(e(x[:1]), e(x)[:1])
        torch.testing.assert_close(e(x[3:4].expand(8, *SHAPE)), e(x[3:4]).expand(8, -1))
        e.train()
        assert e(x[:1]).shape == (1, 64)  # a rare trace type's minibatch of one trains too


@pytest.mark.parametrize("norm", ["running", "conv"])
def test_a_batch_of_one_kind_keeps_what_sets_it_apart(norm: str) -> None:
    """Minibatches hold one trace type (for the tau decay, nearly one channel). Normalising by
    the batch's own statistics after the last layer would give every such batch the same mean
    and erase the type; running statistics there keep it. In the convolutions ("conv") batch
    statistics are taken over every voxel, nearly all noise, so they erase nothing."""
    e = embedding(norm)
    with torch.no_grad():
        for k in range(20):
            e(noisy_images(32, seed=20 + k))
        left = e(noisy_images(32, seed=90, at=(17.0, 9.0))).mean(0)
        right = e(noisy_images(32, seed=91, at=(17.0, 25.0))).mean(0)
    assert float((left - right).abs().max()) > 0.5


@pytest.mark.parametrize("norm", ["none", "group", "conv", "batch"])
def test_in_training_a_trace_embeds_alike_whatever_its_batch(norm: str) -> None:
    """A minibatch holds one trace type, so a norm whose training output depends on the other
    traces of the batch lets the network read the type from the batch: "conv" did so on the tau
    decay (channel gain +0.83 nats with batch statistics, -0.79 proposing, `docs/ic/README.md`).
    "group" normalises each trace by its own statistics and depends on nothing else."""
    e = embedding(norm)
    x = noisy_images(8, seed=2)
    with torch.no_grad():
        alone = e(x)
        beside_others = e(torch.cat([x, noisy_images(24, seed=3, at=(17.0, 9.0))]))[:8]
    differs = float((alone - beside_others).abs().max())
    if norm in ("none", "group"):
        assert differs < 1e-5, differs
    else:
        assert differs > 0.05, differs


def test_group_norm_proposes_as_it_trains() -> None:
    e = embedding("group")
    x = noisy_images(16, seed=4)
    with torch.no_grad():
        trained = e(x)
        e.eval()
        torch.testing.assert_close(e(x), trained)
        torch.testing.assert_close(e(x[2:3]), trained[2:3])


def test_checkpoints_from_before_norm_load_without_it() -> None:
    new = NetworkConfig("tau_decay", [ObservationSpec("calorimeter", SHAPE, "cnn3d", "symlog", "running")])
    d = new.to_dict()
    assert d["observations"][0]["norm"] == "running"
    assert NetworkConfig.from_dict(d).observations[0].norm == "running"
    del d["observations"][0]["norm"]  # as a checkpoint written before the option existed
    old = NetworkConfig.from_dict(d).observations[0]
    assert old.norm == "none"
    modules = ObservationEmbedding(old, 8).modules()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in modules)


def test_conv_norm_proposes_one_trace_at_a_time_like_a_batch() -> None:
    """ "conv" trains its convolutions on batch statistics; proposing uses the running ones, so
    a trace's embedding never depends on the traces in flight beside it."""
    e = embedding("conv")
    with torch.no_grad():
        for k in range(5):
            e(noisy_images(32, seed=40 + k))
        e.eval()
        x = noisy_images(16)
        torch.testing.assert_close(e(x[:1]), e(x)[:1])
        torch.testing.assert_close(e(x[5:6]), e(x)[5:6])
        normed = e(x)
    assert spread(normed) > 1.0  # the last layer's running statistics spread the events apart
    e.train()
    assert e(x[:1]).shape == (1, 64)


class _Obs:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


class _Group:
    def __init__(self, **shapes: tuple[int, ...]) -> None:
        self.observations = {k: _Obs(v) for k, v in shapes.items()}


def test_a_norm_for_every_observation_applies_to_the_cnn_ones() -> None:
    """`probexec train --obs-norm conv`: the calorimeter image gets it, a scalar beside it (a
    feed-forward embedding, where a norm is an error) keeps none; a named override still wins."""
    groups = [_Group(calorimeter=SHAPE, energy=(1,))]
    specs = {s.name: s for s in observation_specs("tau_decay", groups, {ALL_OBSERVATIONS: {"norm": "conv"}})}
    assert specs["calorimeter"].norm == "conv" and specs["calorimeter"].embedding == "cnn3d"
    assert specs["energy"].norm == "none"
    named = {ALL_OBSERVATIONS: {"norm": "conv"}, "calorimeter": {"norm": "running"}}
    assert {s.name: s.norm for s in observation_specs("tau_decay", groups, named)}["calorimeter"] == "running"
    with pytest.raises(ValueError, match="unknown norm 'cnv'"):
        ObservationSpec("calorimeter", SHAPE, norm="cnv").resolved()


def _old_order_body(dims: int, norm: str) -> torch.nn.Sequential:
    """The CNN body as it was built before pooling moved ahead of the ReLU: conv, norm, ReLU,
    pool per layer, with plain torch layers (what older checkpoints were trained with)."""
    conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    pool = torch.nn.MaxPool3d if dims == 3 else torch.nn.MaxPool2d
    layers: list[torch.nn.Module] = []
    c_in = 1
    for c in (8, 16, 32):
        layers += [conv(c_in, c, 3, padding=1)]
        layers += [torch.nn.GroupNorm(min(4, c), c)] if norm == "group" else []
        layers += [torch.nn.ReLU(), pool(2)]
        c_in = c
    return torch.nn.Sequential(*layers, torch.nn.Flatten())


@pytest.mark.parametrize(("shape", "norm"), [(SHAPE, "none"), (SHAPE, "group"), ((24, 24), "none")])
def test_older_checkpoints_embed_alike_in_either_layout(shape: tuple[int, ...], norm: str) -> None:
    """A CNN embedding's state from before (ReLU ahead of pooling) loads into today's layers
    under the same keys and embeds every image as before, with the same gradients, whether the
    convolutions run channels-last (the CPU default) or in the standard layout."""
    from probexec.nn.embeddings import set_conv_layout

    torch.manual_seed(3)
    kind = "cnn3d" if len(shape) == 3 else "cnn2d"
    new = ObservationEmbedding(ObservationSpec("image", shape, kind, "none", norm), 16)
    old_body = _old_order_body(len(shape), norm)
    # The old body's state under the new body's keys: same names, no key left over either way.
    state = {f"net.0.{k}": v for k, v in old_body.state_dict().items()}
    assert set(state) == {k for k in new.state_dict() if k.startswith("net.0.")}
    new.load_state_dict({**new.state_dict(), **state}, strict=True)
    x = torch.randn(6, *shape) + 0.3
    ref = old_body(x.unsqueeze(1))
    ref.square().sum().backward()
    ref_grads = [p.grad.clone() for p in old_body.parameters()]
    body = new.net[0]
    for layout in ("contiguous", "channels_last", "auto"):
        set_conv_layout(new, layout)
        new.zero_grad(set_to_none=True)
        out = body(x.unsqueeze(1))
        out.square().sum().backward()
        assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5), layout
        for g, p in zip(ref_grads, body.parameters(), strict=True):
            assert p.grad is not None and p.grad.shape == g.shape
            torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-4 * float(g.abs().max()))
        # The parameters keep the standard layout: the copy into channels-last is per call.
        assert all(p.is_contiguous() for p in body.parameters())
    with pytest.raises(ValueError, match="unknown convolution layout 'nhwc'"):
        set_conv_layout(new, "nhwc")
