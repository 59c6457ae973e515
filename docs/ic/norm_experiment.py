"""Does normalising the calorimeter CNN's features let IC learn from a noisy image?

Trains the tau proposal network on a `probexec prior` dataset with one embedding norm, for a
fixed number of steps, then scores it with `probexec evaluate`'s per-address gains on held-out
traces. Prints and writes (`--json`) the gains of the latents the image decides (channel, px,
py, pz) and the -log q per trace beside the prior's.

    probexec prior tau_decay_coarse -n 40000 -o /work/tauc/data --seed 1
    probexec prior tau_decay_coarse -n 3000 -o /work/tauc/held --seed 99
    python docs/ic/norm_experiment.py --data /work/tauc/data --held /work/tauc/held --norm conv --steps 1200

`--types-per-step K` sums K minibatches (K trace types) per optimizer step. `--network NET`
skips training and scores NET. With a norm that keeps running statistics, the gains are also
scored with the norm layers on each one-type group's own batch statistics, as in training: a
network that reads its trace type from the batch gains there and loses when proposing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from probexec.data import TraceDataset
from probexec.nn import TrainOptions, load_checkpoint, train
from probexec.nn.diagnostics import address_gains
from probexec.nn.embeddings import NORMS
from probexec.nn.network import ProposalLSTM

LATENTS = ("channel", "px", "py", "pz")


def gains_with_batch_statistics(net: ProposalLSTM, held: TraceDataset, traces: int, seed: int) -> dict:
    """The gains with every BatchNorm-like layer normalising by the scored group's own
    statistics (their running statistics left as they are), as in training."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    plain_eval = net.eval

    def eval_with_batch_statistics() -> ProposalLSTM:
        plain_eval()
        for m in norms:
            m.train()
        return net

    net.eval = eval_with_batch_statistics  # type: ignore[method-assign]
    try:
        report = address_gains(net, held, traces, seed=seed)
    finally:
        del net.eval
        for m, (mean, var, n) in zip(norms, saved, strict=True):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(n)
        net.eval()
    return {a.name: a.gain for a in report.addresses if a.name in LATENTS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="training dataset (probexec prior)")
    ap.add_argument("--held", required=True, help="held-out dataset of the same simulator")
    ap.add_argument("--norm", choices=NORMS, default="none")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument(
        "--types-per-step", type=int, default=1, help="minibatches (trace types) per optimizer step"
    )
    ap.add_argument("--network", help="score this checkpoint instead of training one")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-traces", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", help="checkpoint path (default: a temporary one)")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()

    data, held = TraceDataset(Path(args.data)), TraceDataset(Path(args.held))
    seconds = float("nan")
    if args.network:
        network, blob = load_checkpoint(args.network, simulator=held.simulator)
        args.norm = network.config.observations[0].norm
        args.steps = int(blob["train_state"].get("step", 0))
    else:
        out = Path(args.output or f"/tmp/norm_{args.norm}_{args.steps}.pt")
        opts = TrainOptions(
            batch_size=args.batch_size,
            lr=args.lr,
            traces=args.steps * args.batch_size * args.types_per_step,
            threads=args.threads,
            seed=args.seed,
            valid_every=10**9,
            checkpoint_every=10**9,
            types_per_step=args.types_per_step,
            config_overrides={"observations": {"calorimeter": {"norm": args.norm}}},
        )
        t0 = time.perf_counter()
        network = train(data.simulator, dataset=data, output=out, options=opts).network
        seconds = time.perf_counter() - t0
    torch.set_num_threads(args.threads)
    report = address_gains(network, held, args.eval_traces, seed=args.seed)
    gains = {a.name: a.gain for a in report.addresses if a.name in LATENTS}
    summary = {
        "norm": args.norm,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "types_per_step": args.types_per_step,
        "train_traces": data.num_traces,
        "train_seconds": seconds,
        "eval_traces": report.traces,
        "gain_per_draw": gains,
        "proposal_nll_per_trace": report.proposal_nll_per_trace,
        "prior_nll_per_trace": report.prior_nll_per_trace,
    }
    if args.norm in ("batch", "conv", "running"):
        summary["gain_per_draw_with_batch_statistics"] = gains_with_batch_statistics(
            network, held, args.eval_traces, args.seed
        )
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
