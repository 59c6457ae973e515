"""Does IC learn the tau channel once its image embedding has been taught to see it?

The supervised probe (`embedding_probe.py`) shows the 3D CNN can read the channel from a
`tau_decay_coarse` image (+0.36 nats over the channel frequencies in 1 000 steps), while IC
training from scratch gains nothing on it. This pretrains the IC network's own observation
embedding the probe's way (a linear head on it, regressing px, py and classifying the channel on
mixed batches of the dataset's traces, fresh noise on every image), then trains IC from there as
usual and scores it with `probexec evaluate`'s per-address gains on held-out traces.

This is the experiment as first run (its figures are `norm_experiment/pretrain_1000_then_1212.json`).
The same is now a training option, `probexec train --pretrain-embedding STEPS` (`probexec.nn.pretrain`),
which also standardises the regressed latents and holds out part of its pool to score itself.

    python docs/ic/pretrain_experiment.py --data /work/tauc/data --held /work/tauc/held \\
        --pretrain-steps 1000 --steps 1212 --json pretrain.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from embedding_probe import draw_images, frequency_nll, load
from torch import nn

from probexec.data import TraceDataset
from probexec.nn import TrainOptions, train
from probexec.nn.diagnostics import address_gains
from probexec.nn.training import build_network

LATENTS = ("channel", "px", "py", "pz")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--held", required=True)
    ap.add_argument("--pretrain-traces", type=int, default=40000)
    ap.add_argument("--pretrain-steps", type=int, default=1000, help="0: no pretraining (the baseline)")
    ap.add_argument("--steps", type=int, default=1212, help="IC training steps after pretraining")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-traces", type=int, default=1000)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    data, held = TraceDataset(Path(args.data)), TraceDataset(Path(args.held))

    sample = []
    for g in data.iter_groups():
        sample.append(g)
        if sum(len(s) for s in sample) >= 512:
            break
    net = build_network(data.simulator, sample, [t.layout for t in data.trace_types().values()])

    out: dict = {"pretrain_steps": args.pretrain_steps, "steps": args.steps, "batch_size": args.batch_size}
    t0 = time.perf_counter()
    if args.pretrain_steps:
        obs, xy_np, channel_np = load(args.data, args.pretrain_traces)
        n = len(xy_np)
        xy, channel = torch.from_numpy(xy_np).float(), torch.from_numpy(channel_np)
        rng = np.random.default_rng(0)
        head = nn.Linear(net.config.obs_dim, 2 + int(channel_np.max()) + 1)
        params = [*net.obs_embeddings.parameters(), *net.obs_combine.parameters(), *head.parameters()]
        opt = torch.optim.Adam(params, lr=1e-3)
        baseline = frequency_nll(channel_np, channel_np)
        ce_seen = []
        for step in range(args.pretrain_steps):
            idx = rng.integers(0, n, args.batch_size)
            pred = head(net.embed_observations({"calorimeter": draw_images(obs, idx, rng)}))
            ce = nn.functional.cross_entropy(pred[:, 2:], channel[idx])
            loss = ce + ((pred[:, :2] - xy[idx]) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            ce_seen.append(float(ce))
            if (step + 1) % 100 == 0:
                print(
                    f"pretrain step {step + 1}: channel -log q {np.mean(ce_seen[-100:]):.3f} "
                    f"(frequencies {baseline:.3f})",
                    flush=True,
                )
        out["pretrain_channel_nll_last_100"] = float(np.mean(ce_seen[-100:]))
        out["channel_nll_by_frequency"] = baseline
    out["pretrain_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    opts = TrainOptions(
        batch_size=args.batch_size,
        lr=1e-3,
        traces=args.steps * args.batch_size,
        threads=args.threads,
        seed=0,
        valid_every=10**9,
        checkpoint_every=10**9,
        progress=False,
    )
    result = train(data.simulator, dataset=data, options=opts, network=net)
    out["train_seconds"] = time.perf_counter() - t0
    report = address_gains(result.network, held, args.eval_traces, seed=0)
    out["gain_per_draw"] = {a.name: a.gain for a in report.addresses if a.name in LATENTS}
    out["proposal_nll_per_trace"] = report.proposal_nll_per_trace
    out["prior_nll_per_trace"] = report.prior_nll_per_trace
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
