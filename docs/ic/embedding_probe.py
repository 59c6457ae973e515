"""Can the calorimeter embedding read the latents from the image at all? A supervised probe.

    python docs/ic/embedding_probe.py --data DIR [--traces 16000] [--steps 600] [--variant ours|sum2d]

IC on `tau_decay_coarse` trained to a loss near the prior's, which leaves two explanations: the
3D CNN cannot see through 200 MeV of noise per voxel, or the image says little about the
latents one at a time. This trains the embedding (ours: the 3D CNN with symlog and
standardisation that IC uses; sum2d: the image summed over depth into a 2D CNN; commit f6fe78c
has a third, moments, for an option since removed) with a linear head to regress px, py and pz
(each standardised by its prior) and classify the channel, straight from (image, latent) pairs
of a dataset, with fresh noise on every draw. Least-squares fits bound what simple
sums of the image carry: on the energy-weighted centroid and total, and on the sums of E x /
depth and E y / depth (the visible transverse momenta, up to the sampling fraction), each of the
noise-free mean image and of a noisy one. Prints held-out RMSE (the prior's std is 1.155 for px
and py, 2.887 for pz), channel accuracy against the most frequent channel's share, and the
channel's -log q against the channel frequencies' (the gain: what the image can tell a proposal
about the channel), and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from probexec.data.dataset import TraceDataset
from probexec.data.layout import ObservationBlock
from probexec.nn.embeddings import ObservationEmbedding, ObservationSpec

SHAPE = (20, 35, 35)


def load_values(path: str, n: int, names: tuple[str, ...]) -> tuple[ObservationBlock, np.ndarray]:
    """The images (sparse mean and stddev) and the values of `names` of the first `n` traces
    whose trace type draws all of them; other trace types are skipped."""
    blocks, values, got = [], [], 0
    for g in TraceDataset(path).iter_groups():
        sites = [s.name for s in g.layout.sites]
        if not all(k in sites for k in names):
            continue
        blocks.append(g.observations["calorimeter"])
        values.append(g.values[:, g.layout.value_offsets[[sites.index(k) for k in names]]])
        got += len(g)
        if got >= n:
            break
    return ObservationBlock.concat(blocks), np.concatenate(values)


def load(path: str, n: int) -> tuple[ObservationBlock, np.ndarray, np.ndarray]:
    """The first `n` traces' images, (px, py, pz) and channel."""
    obs, values = load_values(path, n, ("px", "py", "pz", "channel"))
    return obs, values[:, :3], values[:, 3].astype(np.int64)


def save(out: dict, curve: list[dict], t0: float, path: str | None) -> None:
    """The run's figures and learning curve, as JSON at `path` (if given)."""
    out["curve"] = curve
    out["seconds"] = time.perf_counter() - t0
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=1)


def draw_images(obs: ObservationBlock, idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """The images of traces `idx`, each with fresh noise."""
    return torch.from_numpy(obs.take(idx).draw(rng))


def frequency_nll(train: np.ndarray, scored: np.ndarray) -> float:
    """-log of each scored channel's frequency in `train`, averaged (nats per trace): the baseline
    a proposal must beat; its gain over it is what the image tells on top. Counts start at one,
    so a channel missing from a small `train` costs a few nats, not 28."""
    counts = np.bincount(train, minlength=int(max(train.max(), scored.max())) + 1) + 1.0
    return float(-np.log(counts[scored] / counts.sum()).mean())


PRIOR_MEAN = np.array([0.0, 0.0, 45.0])
PRIOR_STD = np.array([4.0, 4.0, 10.0]) / 12**0.5  # Uniform(-2, 2), Uniform(-2, 2), Uniform(40, 50)


def _residual_std(f: np.ndarray, p: np.ndarray) -> list[float]:
    """Residual std of each latent after least squares on features `f` (fit on one half, scored
    on the other)."""
    f = np.concatenate([f, np.ones((len(f), 1))], 1)
    half = len(f) // 2
    coef, *_ = np.linalg.lstsq(f[:half], p[:half], rcond=None)
    return [float(v) for v in (p[half:] - f[half:] @ coef).std(0)]


def centroid_fit(images: np.ndarray, p: np.ndarray) -> list[float]:
    """Residual std of px, py, pz after a least-squares fit on the image's energy-weighted
    centroid and total."""
    w = images.astype(np.float64).sum(axis=1)
    pos = np.arange(SHAPE[2]) - SHAPE[2] // 2
    tot = w.sum((1, 2)) + 1e-9
    f = np.stack([(w.sum(1) * pos).sum(1) / tot, (w.sum(2) * pos).sum(1) / tot, tot], 1)
    return _residual_std(f, p)


def slope_fit(images: np.ndarray, p: np.ndarray) -> list[float]:
    """The same on the sums a physicist would form: a particle from the decay point deposits at
    transverse position depth x slope, so sum(E x / depth) and sum(E y / depth) estimate the
    visible transverse momenta (times the sampling fraction) and sum(E) the visible energy.
    Linear in the image, so noise in every one of the 24 500 voxels adds to them."""
    depth = 4.0 + (np.arange(SHAPE[0]) + 0.5) * 11.0 / SHAPE[0]
    pos = -3.0 + (np.arange(SHAPE[1]) + 0.5) * 6.0 / SHAPE[1]
    e = images.astype(np.float64)
    slope_a = (e * (pos[None, None, :, None] / depth[None, :, None, None])).sum((1, 2, 3))
    slope_b = (e * (pos[None, None, None, :] / depth[None, :, None, None])).sum((1, 2, 3))
    tot = e.sum((1, 2, 3))
    return _residual_std(np.stack([slope_a, slope_b, tot], 1), p)


class SumOverDepth(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c in (16, 32, 64):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 4 * 4, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.sum(1, keepdim=True) / (0.2 * SHAPE[0] ** 0.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a tau_decay dataset (`probexec prior ... -o DIR`)")
    ap.add_argument("--traces", type=int, default=16000, help="for training; 4 000 more are held out")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--variant", choices=["ours", "sum2d"], default="ours")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--channel-only", action="store_true", help="train on the channel alone (no px, py regression)"
    )
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    held = 4000
    obs, xy_np, channel_np = load(args.data, args.traces + held)
    n = len(xy_np)
    xy, channel = torch.from_numpy(xy_np).float(), torch.from_numpy(channel_np)
    rng = np.random.default_rng(0)

    def images(idx: np.ndarray) -> torch.Tensor:
        return draw_images(obs, idx, rng)

    test = np.arange(n - held, n)
    x_test = images(test)
    out: dict = {
        "variant": args.variant,
        "channel_only": args.channel_only,
        "train_traces": n - held,
        "held_out": held,
        "prior_std": 4 / 12**0.5,
    }
    clean = obs.loc.take(test).dense().reshape(held, *SHAPE)
    out["centroid_noise_free"] = centroid_fit(clean, xy_np[test])
    out["centroid_noisy"] = centroid_fit(x_test.numpy(), xy_np[test])
    out["slope_noise_free"] = slope_fit(clean, xy_np[test])
    out["slope_noisy"] = slope_fit(x_test.numpy(), xy_np[test])
    out["majority_channel_share"] = float(np.bincount(channel_np[test]).max() / held)
    out["channel_nll_by_frequency"] = frequency_nll(channel_np[: n - held], channel_np[test])
    print(f"{n - held} training traces, {held} held out; prior std of px, py 1.155, of pz 2.887")
    for key in ("centroid_noise_free", "centroid_noisy", "slope_noise_free", "slope_noisy"):
        r = out[key]
        print(f"{key:20s}: residual std px {r[0]:.3f} py {r[1]:.3f} pz {r[2]:.3f}")
    print(f"most frequent channel: {out['majority_channel_share']:.3f} of the held-out traces")

    if args.variant == "ours":
        ours = ObservationEmbedding(ObservationSpec("calorimeter", SHAPE, "cnn3d", "symlog"), 128)
        ours.fit(images(np.arange(256)))
        embed: nn.Module = ours
    else:
        embed = SumOverDepth(128)
    print(f"{args.variant}: {sum(p.numel() for p in embed.parameters())} parameters")
    head = nn.Linear(128, 3 + int(channel_np.max()) + 1)
    target = (xy - torch.from_numpy(PRIOR_MEAN).float()) / torch.from_numpy(PRIOR_STD).float()
    std = torch.from_numpy(PRIOR_STD).float()
    opt = torch.optim.Adam([*embed.parameters(), *head.parameters()], lr=1e-3)
    curve = []
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        if step % 100 == 0:
            with torch.no_grad():
                pred = torch.cat([head(embed(x_test[i : i + 500])) for i in range(0, held, 500)])
                rmse = ((pred[:, :3] - target[test]) ** 2).mean(0).sqrt() * std
                acc = float((pred[:, 3:].argmax(1) == channel[test]).float().mean())
                ce = float(nn.functional.cross_entropy(pred[:, 3:], channel[test]))
            curve.append(
                {
                    "step": step,
                    "rmse_px": float(rmse[0]),
                    "rmse_py": float(rmse[1]),
                    "rmse_pz": float(rmse[2]),
                    "channel_accuracy": acc,
                    "channel_nll": ce,
                    "channel_gain": out["channel_nll_by_frequency"] - ce,
                }
            )
            print(
                f"step {step:5d} ({time.perf_counter() - t0:5.0f} s): RMSE px {rmse[0]:.3f} py {rmse[1]:.3f} pz {rmse[2]:.3f}, "
                f"channel accuracy {acc:.3f}, -log q(channel) {ce:.3f} (gain {out['channel_nll_by_frequency'] - ce:+.3f})",
                flush=True,
            )
        idx = rng.integers(0, n - held, args.batch_size)
        pred = head(embed(images(idx)))
        loss = nn.functional.cross_entropy(pred[:, 3:], channel[idx])
        if not args.channel_only:
            loss = loss + ((pred[:, :3] - target[idx]) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    save(out, curve, t0, args.json)


if __name__ == "__main__":
    main()
