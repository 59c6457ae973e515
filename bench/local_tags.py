"""Tags as round trips against tags sent with the next message (capability "local_tags").

    python bench/local_tags.py [--simulator tau_decay_coarse] [--network tau.pt] [--traces 400]

A tau trace sends 9 tags among its 24 messages; under PPX v1 each one waits for an empty reply.
With "local_tags" the simulator keeps them and sends them as rows of the next message's
DrawBatch. This runs the same work both ways, alternating, in one process: per-draw prior
sampling over a pool of simulators (the path IS and dataset making take when values are
controlled), and IC with all traces in flight batched (with --network, that network; else an
untrained one made from a few hundred prior traces: the messages are the same). It prints
traces/s, the engine's own CPU time per trace (what a driver process spends, and what limits IC
when the simulators have cores of their own), round trips per trace and the ratios, and checks
that both ways give the same traces.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from probexec.cores import usable_cores
from probexec.inference.ic import ic_posterior
from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior
from probexec.simulators import get_simulator
from probexec.trace import TraceBatch

SAMPLE, OBSERVE, TAG = 0, 1, 2
FLAG_CONTROLLED = 1


def round_trips(batch: TraceBatch, local_tags: bool) -> float:
    """Requests per trace: Run, every controlled sample, every observe, and tags unless local."""
    kind, flags = batch.kind, batch.flags
    n = np.count_nonzero((kind == SAMPLE) & (flags & FLAG_CONTROLLED).astype(bool))
    n += np.count_nonzero(kind == OBSERVE)
    if not local_tags:
        n += np.count_nonzero(kind == TAG)
    return 1 + n / batch.num_traces


def same_traces(a: TraceBatch, b: TraceBatch) -> bool:
    return all(
        np.array_equal(getattr(a, k), getattr(b, k))
        for k in ("address_id", "instance", "kind", "flags", "trace_offsets", "value_offsets", "values")
    )


def engine_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def untrained_network(simulator: str, traces: int = 300) -> Any:
    from probexec.data import DatasetWriter, TraceDataset
    from probexec.nn.training import build_network
    from probexec.remote import RemoteModel

    with tempfile.TemporaryDirectory() as d, RemoteModel(simulator) as m:
        with DatasetWriter(Path(d) / "data", simulator) as w:
            w.write(m.stream(traces, seed=7))
        groups = list(TraceDataset(Path(d) / "data").iter_groups())
        return build_network(simulator, groups)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--simulator", default="tau_decay_coarse")
    ap.add_argument("--network", help="a checkpoint for the simulator: also time IC")
    ap.add_argument("--traces", type=int, default=400)
    ap.add_argument("--in-flight", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2, help="alternations of the two ways")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    info = get_simulator(args.simulator)
    print(
        f"{args.simulator}, {usable_cores()} cores, {args.in_flight} simulators, {args.traces} traces a run"
    )
    rows: dict[str, dict[bool, list[float]]] = {}
    cpu: dict[str, dict[bool, list[float]]] = {}
    trips: dict[bool, float] = {}
    kept: dict[bool, TraceBatch] = {}
    observe = None
    if args.network:
        from probexec.nn import load_checkpoint

        net, _ = load_checkpoint(args.network, simulator=args.simulator)
    else:
        net = untrained_network(args.simulator)
    for _ in range(args.repeats):
        for local in (False, True):
            with remote_pool(args.simulator, workers=args.in_flight, local_tags=local) as pool:
                assert ("local_tags" in pool.models[0].capabilities) or not local
                sample_prior(pool, args.in_flight, seed=0, mode="per_draw", progress=False)  # warm-up
                t0, c0 = time.perf_counter(), engine_cpu()
                b = sample_prior(pool, args.traces, seed=1, mode="per_draw", progress=False)
                rows.setdefault("prior per draw", {}).setdefault(local, []).append(
                    args.traces / (time.perf_counter() - t0)
                )
                cpu.setdefault("prior per draw", {}).setdefault(local, []).append(
                    1e3 * (engine_cpu() - c0) / args.traces
                )
                trips[local] = round_trips(b, local)
                kept.setdefault(local, b)
                if observe is None:
                    event = sample_prior(pool, 1, seed=99, mode="stream", progress=False)
                    observe = {o: event.values_of(o)[0] for o in info.observed}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # an untrained network meets unseen addresses
                    ic_posterior(net, pool.models, args.in_flight, observe, seed=0)  # warm-up
                    c0 = engine_cpu()
                    post = ic_posterior(net, pool.models, args.traces, observe, seed=2)
                done = post.num_traces + post.dropped
                rows.setdefault("IC batched", {}).setdefault(local, []).append(done / post.seconds)
                cpu.setdefault("IC batched", {}).setdefault(local, []).append(
                    1e3 * (engine_cpu() - c0) / done
                )
    same = same_traces(kept[False], kept[True])
    print(f"round trips per trace: {trips[False]:.2f} with tag replies, {trips[True]:.2f} with local tags")
    print(f"same traces both ways (same seed): {same}")
    out: dict[str, Any] = {"simulator": args.simulator, "cores": usable_cores(), "round_trips": trips}
    for what, table, fmt in (("traces/s", rows, "6.0f"), ("engine CPU ms/trace", cpu, "6.2f")):
        print(f"{what:<20} {'tag replies':>22} {'local tags':>22} {'ratio':>6}")
        for work, by in table.items():
            a, b = by[False], by[True]
            ratio = float(np.median(b) / np.median(a))
            print(
                f"{work:<20} {' '.join(f'{x:{fmt}}' for x in a):>22} "
                f"{' '.join(f'{x:{fmt}}' for x in b):>22} {ratio:6.2f}"
            )
            out.setdefault(work, {})[what] = {"tag_replies": a, "local_tags": b, "ratio_of_medians": ratio}
    if not same:
        raise SystemExit("the two ways gave different traces")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
