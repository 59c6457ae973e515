"""Does normalising the calorimeter CNN's features let IC learn from a noisy image?

Trains the tau proposal network on a `probexec prior` dataset with one embedding norm, for a
fixed number of steps, then scores it with `probexec evaluate`'s per-address gains on held-out
traces. Prints and writes (`--json`) the gains of the latents the image decides (channel, px,
py, pz) and the -log q per trace beside the prior's.

    probexec prior tau_decay_coarse -n 40000 -o /work/tauc/data --seed 1
    probexec prior tau_decay_coarse -n 3000 -o /work/tauc/held --seed 99
    python docs/ic/norm_experiment.py --data /work/tauc/data --held /work/tauc/held --norm conv --steps 1200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from probexec.data import TraceDataset
from probexec.nn import TrainOptions, train
from probexec.nn.diagnostics import address_gains
from probexec.nn.embeddings import NORMS

LATENTS = ("channel", "px", "py", "pz")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="training dataset (probexec prior)")
    ap.add_argument("--held", required=True, help="held-out dataset of the same simulator")
    ap.add_argument("--norm", choices=NORMS, default="none")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-traces", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", help="checkpoint path (default: a temporary one)")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()

    data, held = TraceDataset(Path(args.data)), TraceDataset(Path(args.held))
    out = Path(args.output or f"/tmp/norm_{args.norm}_{args.steps}.pt")
    opts = TrainOptions(
        batch_size=args.batch_size,
        lr=args.lr,
        traces=args.steps * args.batch_size,
        threads=args.threads,
        seed=args.seed,
        valid_every=10**9,
        checkpoint_every=10**9,
        config_overrides={"observations": {"calorimeter": {"norm": args.norm}}},
    )
    t0 = time.perf_counter()
    result = train(data.simulator, dataset=data, output=out, options=opts)
    seconds = time.perf_counter() - t0
    report = address_gains(result.network, held, args.eval_traces, seed=args.seed)
    gains = {a.name: a.gain for a in report.addresses if a.name in LATENTS}
    summary = {
        "norm": args.norm,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "train_seconds": seconds,
        "eval_traces": report.traces,
        "gain_per_draw": gains,
        "proposal_nll_per_trace": report.proposal_nll_per_trace,
        "prior_nll_per_trace": report.prior_nll_per_trace,
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
