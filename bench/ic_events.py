"""IC over many events: driver processes started afresh for each event against kept for all of
them (`ICDrivers`), side by side in one run.

    python bench/ic_events.py --network NET [--simulator tau_decay_coarse] [--events 4] \\
        [--traces 500] [--processes 2] [--in-flight 16] [--repeats 2]

The events are prior events of the simulator (seeds 1000, 1001, ...). Each repeat runs every
event both ways, alternating which way goes first, so a drift of the machine's speed falls on
both alike: "fresh" calls `ic_posterior_processes` per event (the drivers import torch, load the
network and start their simulators each time); "kept" starts one `ICDrivers` and calls its
`posterior` per event, its start-up counted in its total. It prints the seconds for all events,
events per minute and traces per second each way, and their ratio; then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from probexec.inference.ic_drivers import ICDrivers, ic_posterior_processes
from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior
from probexec.simulators import get_simulator


def fresh(args: argparse.Namespace, events: list[dict[str, Any]]) -> float:
    t0 = time.perf_counter()
    for k, obs in enumerate(events):
        ic_posterior_processes(
            args.network, args.simulator, args.traces, obs, processes=args.processes,
            in_flight=args.in_flight, seed=k,
        )  # fmt: skip
    return time.perf_counter() - t0


def kept(args: argparse.Namespace, events: list[dict[str, Any]]) -> float:
    t0 = time.perf_counter()
    with ICDrivers(
        args.network, args.simulator, processes=args.processes, in_flight=args.in_flight
    ) as drivers:
        for k, obs in enumerate(events):
            drivers.posterior(args.traces, obs, seed=k)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", required=True, help="a checkpoint from `probexec train`")
    ap.add_argument("--simulator", default="tau_decay_coarse")
    ap.add_argument("--events", type=int, default=4)
    ap.add_argument("--traces", type=int, default=500, help="IC traces per event")
    ap.add_argument("--processes", type=int, default=2, help="driver processes")
    ap.add_argument("--in-flight", type=int, default=16, help="simulators per driver")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    info = get_simulator(args.simulator)
    with remote_pool(args.simulator, workers=1) as pool:
        events = []
        for k in range(args.events):
            ev = sample_prior(pool, 1, seed=1000 + k, mode="stream", progress=False)
            events.append({o: ev.values_of(o)[0] for o in info.observed})
    runs: dict[str, list[float]] = {"fresh": [], "kept": []}
    ways = {"fresh": fresh, "kept": kept}
    for r in range(args.repeats):
        for way in ("fresh", "kept") if r % 2 == 0 else ("kept", "fresh"):
            secs = ways[way](args, events)
            runs[way].append(secs)
            print(
                f"repeat {r} {way:5s}: {args.events} events x {args.traces} traces in {secs:6.1f} s, "
                f"{60 * args.events / secs:5.1f} events/min, {args.events * args.traces / secs:5.0f} traces/s",
                flush=True,
            )
    med = {w: statistics.median(v) for w, v in runs.items()}
    print(
        f"median: fresh {med['fresh']:.1f} s, kept {med['kept']:.1f} s for {args.events} events: "
        f"kept drivers {med['fresh'] / med['kept']:.2f}x faster"
    )
    print(json.dumps({"args": vars(args), "seconds": runs, "median_seconds": med}))


if __name__ == "__main__":
    main()
