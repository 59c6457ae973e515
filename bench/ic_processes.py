"""IC throughput of a trained network over driver processes x traces in flight per process.

    python bench/ic_processes.py --network tau.pt --simulator tau_decay_coarse \\
        --processes 1 4 8 --per-process 32 64 --traces 3000 [--quorum 1 0.75] [--device cpu]

One driver process answers its simulators' messages and runs the network for all its traces in
flight; its Python, not the simulators, limits a tau decay to about a hundred traces a second.
This runs the same IC (one held-out event, the same seed) at each setting, side by side in one
run, and prints the traces per second over the whole call (process start, network loading and
simulator start-up included) and over the drivers' own time (the traces alone). "start-up s"
is when the last driver began driving, measured from the call; each run's JSON row has every
driver's timeline (booted, network_loaded, simulators_started, driving, driven, received).
"""

from __future__ import annotations

import argparse
import json

from probexec.cores import usable_cores
from probexec.inference.ic_drivers import ic_posterior_processes
from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior
from probexec.simulators import get_simulator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--network", required=True, help="a checkpoint from `probexec train`")
    ap.add_argument("--simulator", required=True)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--per-process", type=int, nargs="+", default=[16])
    ap.add_argument("--traces", type=int, default=1000)
    ap.add_argument("--device", default="cpu", help="where each driver runs the network")
    ap.add_argument("--seed", type=int, default=99, help="seed of the event conditioned on")
    ap.add_argument(
        "--quorum",
        type=float,
        nargs="+",
        default=[1.0],
        help="share of a driver's traces each round waits for (each value given, side by side)",
    )
    args = ap.parse_args()
    info = get_simulator(args.simulator)
    with remote_pool(args.simulator, workers=1) as pool:
        event = sample_prior(pool, 1, seed=args.seed, mode="stream", progress=False)
    observe = {o: event.values_of(o)[0] for o in info.observed}
    rows = []
    print(f"{args.simulator}, {usable_cores()} cores, network on {args.device}, {args.traces} traces each")
    print(
        f"{'processes':>9} {'in flight':>9} {'quorum':>6} {'traces/s':>9} {'driver traces/s':>15} "
        f"{'mean batch':>10} {'ESS/N':>7} {'start-up s':>10} {'call s':>7}"
    )
    for p in args.processes:
        for k in args.per_process:
            for q in args.quorum:
                post = ic_posterior_processes(
                    args.network,
                    args.simulator,
                    args.traces,
                    observe,
                    processes=p,
                    in_flight=k,
                    seed=1,
                    device=args.device,
                    quorum=q,
                )
                done = post.num_traces + post.dropped
                row = {
                    "processes": p,
                    "in_flight_per_process": k,
                    "quorum": q,
                    "traces": done,
                    "traces_per_s": done / post.seconds,
                    "traces_per_driver_s": done / post.stats["driver_seconds"],
                    "mean_batch": post.stats["mean_batch"],
                    "ess_over_n": post.ess / max(post.num_traces, 1),
                    "seconds": post.seconds,
                    "startup_seconds": post.stats["startup_seconds"],
                    "timeline": post.stats["timeline"],
                }
                rows.append(row)
                print(
                    f"{p:9d} {k:9d} {q:6.2f} {row['traces_per_s']:9.0f} {row['traces_per_driver_s']:15.0f} "
                    f"{row['mean_batch']:10.1f} {row['ess_over_n']:7.3f} {row['startup_seconds']:10.2f} {post.seconds:7.2f}",
                    flush=True,
                )
    print(json.dumps({"simulator": args.simulator, "device": args.device, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
