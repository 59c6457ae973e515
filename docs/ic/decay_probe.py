"""How much does the image tell about the first decay's angles, given the true momenta? A probe.

    python docs/ic/decay_probe.py --data DIR [--traces 16000] [--steps 1500] [--inputs image+momenta|image|momenta]
        [--network NET] [--held DIR]

IC's held-out -log q is scored with each trace's own earlier values fed to the LSTM, so when it
proposes `decay1/cos_theta` and `decay1/phi` it already knows the true channel and momenta.
There it gains only 0.3-0.6 nats a draw over the isotropic prior (fifteenth session). Given
the tau's momentum, the first split's angles set where its products hit the calorimeter, so the
image might fix them far more sharply. This trains our 3D CNN embedding (fresh, or IC's trained
one with `--network`) beside the true
channel (one-hot) and (px, py, pz), or either alone, with a small head that predicts each angle
as a categorical over equal bins, and reports its held-out -log density per draw against the
prior's (log 2 and log 2 pi): what a proposal at that address could gain. Binning caps the gain
at log(bins); with 32 bins, 3.47 nats. `momenta` alone should gain nothing, as the prior draws
the angles independently of the momenta; it checks the probe.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from embedding_probe import PRIOR_MEAN, PRIOR_STD, SHAPE, draw_images, load_values, save
from torch import nn

from probexec.data.layout import ObservationBlock
from probexec.nn import load_checkpoint
from probexec.nn.embeddings import ObservationEmbedding, ObservationSpec

ANGLES = ("decay1/cos_theta", "decay1/phi")
RANGES = ((-1.0, 1.0), (0.0, 2 * math.pi))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a tau_decay dataset (`probexec prior ... -o DIR`)")
    ap.add_argument("--traces", type=int, default=16000, help="for training; up to 4 000 more are held out")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--inputs", choices=["image+momenta", "image", "momenta"], default="image+momenta")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--network", help="start from this IC network's trained calorimeter embedding")
    ap.add_argument("--held", help="score on 4 000 traces of this dataset instead (one IC never trained on)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    held = 4000
    names = ("px", "py", "pz", "channel", *ANGLES)
    if args.held:
        train_obs, train_values = load_values(args.data, args.traces, names)
        held_obs, held_values = load_values(args.held, held, names)
        held = min(held, len(held_values))
        obs = ObservationBlock.concat(
            [train_obs.take(np.arange(args.traces)), held_obs.take(np.arange(held))]
        )
        values = np.concatenate([train_values[: args.traces], held_values[:held]])
    else:
        obs, values = load_values(args.data, args.traces + held, names)
    p_np, channel_np, angles_np = values[:, :3], values[:, 3].astype(np.int64), values[:, 4:]
    n = len(p_np)
    channels = int(channel_np.max()) + 1
    known = torch.cat(
        [
            torch.from_numpy((p_np - PRIOR_MEAN) / PRIOR_STD).float(),
            nn.functional.one_hot(torch.from_numpy(channel_np), channels).float(),
        ],
        1,
    )
    # Each angle's bin; the prior is uniform, so every bin is equally likely under it.
    bins = torch.stack(
        [
            torch.from_numpy(((angles_np[:, i] - lo) / (hi - lo) * args.bins).astype(np.int64)).clamp(
                0, args.bins - 1
            )
            for i, (lo, hi) in enumerate(RANGES)
        ],
        1,
    )
    log_width = torch.tensor([math.log((hi - lo) / args.bins) for lo, hi in RANGES])
    prior_nll = torch.tensor([math.log(hi - lo) for lo, hi in RANGES])
    rng = np.random.default_rng(0)
    use_image = args.inputs != "momenta"
    use_known = args.inputs != "image"
    if args.network:
        embed = load_checkpoint(args.network, observations={"calorimeter": SHAPE})[0].obs_embeddings[
            "calorimeter"
        ]
    else:
        embed = ObservationEmbedding(ObservationSpec("calorimeter", SHAPE, "cnn3d", "symlog"), 128)
        if use_image:
            embed.fit(torch.from_numpy(obs.take(np.arange(256)).draw(rng)))
    dim = embed.net[-2].out_features
    width = (dim if use_image else 0) + (known.shape[1] if use_known else 0)
    head = nn.Sequential(nn.Linear(width, 256), nn.ReLU(), nn.Linear(256, 2 * args.bins))
    params = [*head.parameters(), *(embed.parameters() if use_image else [])]
    opt = torch.optim.Adam(params, lr=1e-3)
    test = np.arange(n - held, n)
    x_test = torch.from_numpy(obs.take(test).draw(rng)) if use_image else None

    def logits(idx: np.ndarray, images: torch.Tensor | None) -> torch.Tensor:
        parts = ([embed(images)] if images is not None else []) + ([known[idx]] if use_known else [])
        return head(torch.cat(parts, 1)).reshape(len(idx), 2, args.bins)

    def nll(lg: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        """-log density per draw of each angle (nats), from the bin's probability."""
        ce = nn.functional.cross_entropy(lg.transpose(1, 2), bins[idx], reduction="none").mean(0)
        return ce + log_width

    out: dict = {
        "inputs": args.inputs,
        "network": args.network,
        "held": args.held,
        "train_traces": n - held,
        "held_out": held,
        "bins": args.bins,
    }
    out["prior_nll"] = dict(zip(ANGLES, prior_nll.tolist(), strict=True))
    curve = []
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        if step % 100 == 0:
            with torch.no_grad():
                parts = []
                for i in range(0, held, 500):
                    idx = test[i : i + 500]
                    imgs = x_test[i : i + 500] if x_test is not None else None
                    parts.append(nll(logits(idx, imgs), idx) * len(idx))
                held_nll = torch.stack(parts).sum(0) / held
            gain = prior_nll - held_nll
            curve.append({"step": step, **{f"gain {a}": float(g) for a, g in zip(ANGLES, gain, strict=True)}})
            print(
                f"step {step:5d} ({time.perf_counter() - t0:5.0f} s): gain per draw over the prior "
                f"cos_theta {gain[0]:+.3f}, phi {gain[1]:+.3f} nats",
                flush=True,
            )
        idx = rng.integers(0, n - held, args.batch_size)
        loss = nll(logits(idx, draw_images(obs, idx, rng) if use_image else None), idx).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    save(out, curve, t0, args.json)


if __name__ == "__main__":
    main()
