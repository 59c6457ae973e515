"""IC with and without adapting the network to each event first, on the demo's tau events, at
the same number of simulator traces.

    python docs/ic/adapt_probe.py --network NET [--seeds 1 2 ... 9] [--traces 3000]
        [--rounds 4] [--round-traces 250] [--steps 20] [--lr 3e-4] [--ess-share 0.1]
        [--mix 0 0.3 ...] [--no-plain] [--previous EARLIER.jsonl] [--repeats R] [--json OUT.jsonl]

The events, the figures per run and the IS baseline are `defensive_probe.py`'s. Plain IC draws
`--traces`; adapted IC (`ic_posterior(..., adapt=AdaptOptions(...))`) spends `--rounds` x
`--round-traces` of them on adapting a copy of the network and the rest on its posterior, so
both cost the simulators the same. Run k of an event uses seed S + 2 + 1000 k for both.

One adapted arm per `--mix` share (`AdaptOptions.mix`: the share of the later rounds' and the
final run's traces drawn from the network as trained); "adapted" is share 0. `--no-plain` skips
plain IC, and `--previous` adds the rows of an earlier run's arms not run now to the table: with
the same network, seeds and settings, IC's rows are the same (quorum 1 makes them reproducible).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from typing import Any

import numpy as np
from defensive_probe import SIMULATOR, events_with_is, row

from probexec.inference import remote_pool
from probexec.inference.ic import ic_posterior
from probexec.inference.ic_adapt import AdaptOptions
from probexec.nn import load_checkpoint
from probexec.simulators import get_simulator

LATENTS = ["px", "py", "pz", "channel"]


def arm_name(mix: float) -> str:
    return "adapted" if mix == 0 else f"adapted mix {mix:g}"


def gmean(values: list[float]) -> float:
    return math.exp(float(np.mean(np.log(values))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 10)))
    ap.add_argument("--traces", type=int, default=3000, help="simulator traces per run, adaptation included")
    ap.add_argument("--rounds", type=int, default=AdaptOptions.rounds)
    ap.add_argument("--round-traces", type=int, default=AdaptOptions.traces)
    ap.add_argument("--steps", type=int, default=AdaptOptions.steps)
    ap.add_argument("--lr", type=float, default=AdaptOptions.lr)
    ap.add_argument("--ess-share", type=float, default=AdaptOptions.ess_share)
    ap.add_argument("--mix", type=float, nargs="+", default=[0.0])
    ap.add_argument("--no-plain", action="store_true", help="run no plain IC (take it from --previous)")
    ap.add_argument("--previous", help="rows of an earlier run (--json) to show beside these")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", help="write the rows here, one JSON object a line")
    args = ap.parse_args()
    opts = AdaptOptions(args.rounds, args.round_traces, args.steps, args.lr, ess_share=args.ess_share)
    final = args.traces - opts.rounds * opts.traces
    arms: list[tuple[str, int, AdaptOptions | None]] = [] if args.no_plain else [("ic", args.traces, None)]
    arms += [(arm_name(m), final, dataclasses.replace(opts, mix=m)) for m in args.mix]
    if final < 1:
        raise SystemExit(
            f"--rounds x --round-traces ({opts.rounds * opts.traces}) leaves no traces of {args.traces}"
        )
    net, _ = load_checkpoint(
        args.network, simulator=SIMULATOR, observations=get_simulator(SIMULATOR).observed
    )
    rows: list[dict[str, Any]] = []
    with remote_pool(SIMULATOR, workers=16) as pool:
        for seed, obs, true, is_row in events_with_is(pool, args.seeds, args.traces):
            rows.append(is_row)
            print(json.dumps(rows[-1]), flush=True)
            for k in range(args.repeats):
                for run, n, adapt in arms:
                    t0 = time.perf_counter()
                    post = ic_posterior(
                        net, pool.models, n, obs, latents=LATENTS, seed=seed + 2 + 1000 * k, adapt=adapt
                    )
                    r = {**row(post, run, seed, true, time.perf_counter() - t0), "repeat": k}
                    if adapt is not None:
                        r["rounds"] = post.stats["adapt"]["rounds"]
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    if args.previous:
        done = {(r["seed"], r["run"], r.get("repeat")) for r in rows}
        with open(args.previous) as f:
            earlier = [json.loads(line) for line in f if line.strip()]
        rows += [
            r
            for r in earlier
            if r["seed"] in args.seeds and (r["seed"], r["run"], r.get("repeat")) not in done
        ]
    runs = ["is", "ic", *(arm_name(m) for m in sorted({0.0, *args.mix}))]
    runs = [k for k in runs if any(r["run"] == k for r in rows)]
    by = {(s, k): [r for r in rows if r["seed"] == s and r["run"] == k] for s in args.seeds for k in runs}
    print(f"\n{args.traces} traces a run; geometric mean ESS / mean KL estimate over {args.repeats} IC runs")
    print(
        "| seed | channel | "
        + " | ".join(f"{k} ESS" for k in runs)
        + " | "
        + " | ".join(f"{k} KL" for k in runs)
        + " |"
    )
    for s in args.seeds:
        ess = [gmean([r["ess"] for r in by[s, k]]) for k in runs]
        kl = [float(np.mean([r["kl"] for r in by[s, k]])) for k in runs]
        print(
            f"| {s} | {by[s, 'is'][0]['channel']} | "
            + " | ".join(f"{e:.1f}" for e in ess)
            + " | "
            + " | ".join(f"{x:.2f}" for x in kl)
            + " |"
        )
    for k in runs:
        print(
            f"{k}: geometric mean ESS over the events {gmean([gmean([r['ess'] for r in by[s, k]]) for s in args.seeds]):.1f}, "
            f"mean KL estimate {np.mean([r['kl'] for s in args.seeds for r in by[s, k]]):.2f}"
        )
    for k in runs[2:] if "ic" in runs else []:
        ratio = np.array(
            [gmean([r["ess"] for r in by[s, k]]) / gmean([r["ess"] for r in by[s, "ic"]]) for s in args.seeds]
        )
        print(
            f"{k} / ic ESS: median {np.median(ratio):.2f}, lowest {ratio.min():.2f}, above 1 on {(ratio > 1).sum()} of {len(ratio)}"
        )


if __name__ == "__main__":
    main()
