"""Adapted IC on GUM from a weak network, over a grid of adaptation settings.

    python docs/ic/adapt_gum.py [--work /tmp/adapt_gum] [--seeds 6] [--mix 0 0.2 0.5] [--mix-only]

Trains a GUM network for two optimizer steps (200 traces of a 5 000-trace prior dataset, torch
seed 0): its plain IC on obs [8, 9] has ESS/N about 0.01. Then, for each setting of steps, lr and
ESS share, runs IC of 1 000 traces after 3 adaptation rounds of 200 at `--seeds` seeds, and prints
the final run's ESS/N and the last round's fitted loss (the weighted -log q; the exact posterior
N(7.25, 0.913) has entropy 1.33 nats, so a loss well below that is a q narrower than the
posterior, fitted to too few traces).

Then, at 20 steps of 1e-3 and ESS share 0.1, the same for each `--mix` share (of the later rounds'
and the final run's traces drawn from the weak network as trained), with the final run's mean and
std of mu against the exact posterior's. `--mix-only` skips the grid.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from probexec.data import DatasetWriter, TraceDataset
from probexec.inference.ic import ic_posterior
from probexec.inference.ic_adapt import AdaptOptions
from probexec.nn import TrainOptions, train
from probexec.remote import RemoteModel
from probexec.simulators import get_simulator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/adapt_gum")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--mix", type=float, nargs="+", default=[0.0, 0.2, 0.5])
    ap.add_argument("--mix-only", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    if not (work / "data" / "dataset.json").exists():
        with RemoteModel("gum") as m:
            DatasetWriter(work / "data", "gum").write(m.stream(5000, seed=0))
    torch.manual_seed(0)
    net = train(
        "gum",
        dataset=TraceDataset(work / "data"),
        output=work / "weak.pt",
        options=TrainOptions(traces=200, batch_size=100, lr=1e-3, progress=False),
    ).network
    obs = get_simulator("gum").default_observations
    models = [RemoteModel("gum") for _ in range(8)]
    try:
        plain = [ic_posterior(net, models, 1000, obs, seed=s).ess / 1000 for s in range(1, args.seeds + 1)]
        print(f"plain IC: ESS/N {np.round(plain, 3)}")
        print("| steps | lr | ESS share | ESS/N per seed | lowest | last round's loss |")
        grid = [] if args.mix_only else itertools.product((10, 20, 30), (3e-4, 1e-3, 3e-3), (0.1, 0.3))
        for steps, lr, share in grid:
            opts = AdaptOptions(rounds=3, traces=200, steps=steps, lr=lr, ess_share=share)
            posts = [
                ic_posterior(net, models, 1000, obs, seed=s, adapt=opts) for s in range(1, args.seeds + 1)
            ]
            ess = [p.ess / 1000 for p in posts]
            loss = [p.stats["adapt"]["rounds"][-1]["loss_after"] for p in posts]
            print(
                f"| {steps} | {lr:g} | {share:g} | {' '.join(f'{e:.2f}' for e in ess)} | {min(ess):.2f} | "
                f"{' '.join(f'{x:.2f}' for x in loss)} |",
                flush=True,
            )
        print("| mix | ESS/N per seed | lowest | mu mean per seed (exact 7.25) | mu std (exact 0.913) |")
        for mix in args.mix:
            opts = AdaptOptions(rounds=3, traces=200, steps=20, lr=1e-3, ess_share=0.1, mix=mix)
            posts = [
                ic_posterior(net, models, 1000, obs, seed=s, adapt=opts) for s in range(1, args.seeds + 1)
            ]
            ess = [p.ess / 1000 for p in posts]
            means, stds = [], []
            for p in posts:
                w = np.exp(p.log_weights - p.log_weights.max())
                mu = p.traces.values_of("mu")
                means.append(float(np.sum(w * mu) / w.sum()))
                stds.append(float(np.sqrt(np.sum(w * (mu - means[-1]) ** 2) / w.sum())))
            print(
                f"| {mix:g} | {' '.join(f'{e:.2f}' for e in ess)} | {min(ess):.2f} | "
                f"{' '.join(f'{x:.2f}' for x in means)} | {' '.join(f'{x:.2f}' for x in stds)} |",
                flush=True,
            )
    finally:
        for m in models:
            m.close()


if __name__ == "__main__":
    main()
