"""Where IC's importance weights on the tau decay spread, and whether a wider proposal helps.

    python docs/ic/weight_probe.py spread --network NET [--events 11] [--traces 2000]
    python docs/ic/weight_probe.py widen --network NET [--traces 2000] [--settings 1,1 1.5,1 2,1 1.5,1.5]

`spread`: for held-out prior events (seeds 1 000 000 on, channels π π⁰ ν, e ν ν, 3π ν, π ν), IC
with NET, then per event the spread (standard deviation over the traces) of the log-likelihood
log p(y | x) and of the proposal's part Σ (log p − log q) of the log weight, and how far the
traces' likelihood falls below that of the event's own latents. An ESS far below N with the
first spread much wider than the second says the proposal is not sharp enough where the image
decides, rather than that its draws are weighted badly.

`widen`: IC on the four events of `make_tau_ic.py` with every mixture component's scale times
a (its log scale plus log a) and the categorical logits divided by b, for each `a,b` setting;
prints ESS, the evidence estimate and P(true channel). A proposal too narrow for the posterior
would gain ESS when widened.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tau_ic

from probexec.inference.ic import ICDriver, ic_posterior
from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior
from probexec.nn import (
    load_checkpoint,
    proposals,
)

SIMULATOR = "tau_decay_coarse"
CHANNELS = (3, 0, 5, 2)  # pi pi0 nu, e nu nu, 3pi nu, pi nu


def spread(net: torch.nn.Module, pool, args: argparse.Namespace) -> None:
    done = 0
    for seed in range(1_000_000, 1_010_000):
        if done == args.events:
            break
        t = sample_prior(pool, 1, seed=seed, mode="stream", progress=False)
        channel = int(t.values_of("channel")[0])
        if channel not in CHANNELS:
            continue
        done += 1
        ll_true = float(t.log_likelihood()[0])  # the event's own latents, scored on its image
        driver = ICDriver(net, pool.models, {"calorimeter": t.values_of("calorimeter")[0]}, seed=0)
        batch, q_minus_p = driver.run(args.traces)
        ll = batch.log_likelihood()
        log_w = ll - q_minus_p
        w = np.exp(log_w - log_w.max())
        row = {
            "seed": seed,
            "channel": channel,
            "ess": float(w.sum() ** 2 / (w**2).sum()),
            "sd_log_likelihood": float(ll.std()),
            "sd_log_p_minus_log_q": float(q_minus_p.std()),
            "sd_log_weight": float(log_w.std()),
            "log_likelihood_true": ll_true,
            "log_likelihood_mean": float(ll.mean()),
            "log_likelihood_max": float(ll.max()),
            "within_5_of_true": int((ll > ll_true - 5).sum()),
        }
        print(json.dumps(row), flush=True)


def widen(net: torch.nn.Module, pool, args: argparse.Namespace) -> None:
    scale = {"mixture": 1.0, "categorical": 1.0}
    parts = proposals._MixtureHead._parts

    def wider_parts(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        log_w, means, log_scales = parts(self, raw)
        return log_w, means, log_scales + math.log(scale["mixture"])

    def tempered_logits(self, raw: Tensor) -> Tensor:
        r = raw.reshape(raw.shape[0], self.value_size, self.categories)
        return F.log_softmax(r / scale["categorical"], -1)

    proposals._MixtureHead._parts = wider_parts
    proposals.CategoricalHead._logits = tempered_logits
    channels = ["pi pi0 nu", "e nu nu", "3pi nu", "pi nu"]
    events = make_tau_ic.held_out_events(pool, argparse.Namespace(channels=channels, events=4))
    for k, ev in enumerate(events):
        for setting in args.settings:
            scale["mixture"], scale["categorical"] = (float(x) for x in setting.split(","))
            post = ic_posterior(
                net,
                pool.models,
                args.traces,
                {"calorimeter": ev["image"]},
                latents=make_tau_ic.LATENTS,
                seed=k,
            )
            lw = post.log_weights
            truth = int(ev["truth"]["channel"])
            row = {
                "event": k,
                "setting": setting,
                "ess": post.ess,
                "log_evidence": float(np.logaddexp.reduce(lw) - math.log(len(lw))),
                "p_true_channel": post["channel"].probabilities().get(truth, 0.0),
            }
            print(json.dumps(row), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["spread", "widen"])
    p.add_argument("--network", required=True)
    p.add_argument("--traces", type=int, default=2000)
    p.add_argument("--events", type=int, default=11, help="spread: held-out events")
    p.add_argument("--in-flight", type=int, default=16)
    p.add_argument("--settings", nargs="+", default=["1,1", "1.5,1", "2,1", "1.5,1.5"], help="widen: a,b")
    args = p.parse_args()
    torch.set_num_threads(1)
    net, _ = load_checkpoint(args.network, simulator=SIMULATOR, device="cpu")
    with remote_pool(SIMULATOR, workers=args.in_flight) as pool:
        (spread if args.mode == "spread" else widen)(net, pool, args)


if __name__ == "__main__":
    main()
