"""The IC driver's cost per trace with one network against two mixed (`ICDriver(mix=...)`, what
`--adapt-mix` runs), side by side in one run.

    python bench/ic_mix.py --network NET [--simulator tau_decay_coarse] [--in-flight 32]
        [--traces 1600] [--share 0.3] [--repeats 3]

IC on one prior event (seed 99) of the simulator on one pool of `--in-flight` simulators, warmed
by 400 traces. Each repeat runs the plain driver and the mixed one (the second network a copy of
the first: the cost does not depend on its weights), alternating which goes first. Reported: the
driver's own CPU time per trace (`time.process_time`: the simulators are processes of their
own), traces per second and the ESS.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from typing import Any

from probexec.inference.ic import _posterior, _run_driver
from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior
from probexec.nn import load_checkpoint
from probexec.simulators import get_simulator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--network", required=True, help="a checkpoint from `probexec train`")
    ap.add_argument("--simulator", default="tau_decay_coarse")
    ap.add_argument("--in-flight", type=int, default=32)
    ap.add_argument("--traces", type=int, default=1600)
    ap.add_argument("--share", type=float, default=0.3, help="the second network's share of the traces")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    net, _ = load_checkpoint(args.network, simulator=args.simulator, device="cpu")
    other = copy.deepcopy(net)
    info = get_simulator(args.simulator)
    runs: dict[str, list[dict[str, Any]]] = {"one network": [], f"mixed {args.share:g}": []}
    with remote_pool(args.simulator, workers=args.in_flight) as pool:
        event = sample_prior(pool, 1, seed=99, mode="stream", progress=False)
        observe = {o: event.values_of(o)[0] for o in info.observed}
        _run_driver(net, pool.models, 400, observe, 1, "cpu", False)
        for k in range(args.repeats):
            names = list(runs) if k % 2 == 0 else list(runs)[::-1]
            for name in names:
                mix = None if name == "one network" else (other, args.share)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                batch, q, stats = _run_driver(
                    net, pool.models, args.traces, observe, 2 + k, "cpu", False, mix=mix
                )
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                post = _posterior(batch, q, stats, None, wall)
                runs[name].append(
                    {
                        "driver_cpu_ms": 1e3 * cpu / args.traces,
                        "traces_per_s": args.traces / wall,
                        "ess": post.ess,
                    }
                )
                r = runs[name][-1]
                print(
                    f"{name:>14}: driver CPU {r['driver_cpu_ms']:.2f} ms a trace, {r['traces_per_s']:.0f} traces/s, "
                    f"ESS {r['ess']:.1f}",
                    flush=True,
                )
    medians = {name: statistics.median(r["driver_cpu_ms"] for r in rs) for name, rs in runs.items()}
    plain, mixed = medians.values()
    print(
        f"medians of {args.repeats}: driver CPU {plain:.2f} -> {mixed:.2f} ms a trace ({mixed / plain:.2f}x)"
    )
    print(json.dumps({"args": vars(args), "runs": runs, "medians": medians}))


if __name__ == "__main__":
    main()
