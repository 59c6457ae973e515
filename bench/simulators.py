"""Physics simulators benchmark: events/s standalone (the C++ front end with no engine) and through
the engine (prior, streamed and per draw), mean and max draws per trace (rows, and the draws that
counted rows stand for), distinct addresses and trace types in N prior traces. One JSON object.

    python bench/simulators.py [--traces 10000] [SIMULATOR ...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time

import numpy as np

import probexec
from probexec.inference.prior import sample_prior


def standalone_rate(name: str, traces: int) -> dict:
    exe = probexec.get_simulator(name).path()
    r = subprocess.run(
        [str(exe), "--standalone", "--traces", str(traces), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    m = re.search(r"([\d.]+) draws/trace, ([\d.]+) traces/s", r.stderr)
    return (
        {"events_per_s": float(m.group(2)), "rows_per_event": float(m.group(1))}
        if m
        else {"stderr": r.stderr}
    )


def engine_figures(name: str, traces: int, per_draw_traces: int, chunk: int = 200) -> dict:
    """Streams `traces` prior traces chunk by chunk, keeping only statistics (a trace of the
    calorimeter simulators is ~0.6 MB, so 10 000 of them would not fit comfortably in memory)."""
    rows_all, draws_all, controlled_all = [], [], []
    addresses: set[int] = set()
    types: set[tuple[int, ...]] = set()
    with probexec.RemoteModel(name) as model:
        t0 = time.perf_counter()
        done = 0
        while done < traces:
            n = min(chunk, traces - done)
            batch = model.stream(n, seed=done + 1)
            done += n
            rows_all.append(np.diff(batch.trace_offsets))
            count = batch.count if batch.count is not None else np.ones(batch.num_rows, np.uint32)
            draws = np.zeros(batch.num_traces)
            np.add.at(draws, batch.row_trace, count)
            draws_all.append(draws)
            controlled = np.zeros(batch.num_traces)
            np.add.at(controlled, batch.row_trace, (batch.flags & 1) != 0)
            controlled_all.append(controlled)
            addresses.update(batch.address_id.tolist())
            types.update(batch.trace_types())
        stream_rate = traces / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        sample_prior(model, per_draw_traces, seed=1, mode="per_draw", progress=False)
        per_draw_rate = per_draw_traces / (time.perf_counter() - t0)
    rows, draws, controlled = (np.concatenate(x) for x in (rows_all, draws_all, controlled_all))
    return {
        "stream_events_per_s": stream_rate,
        "per_draw_events_per_s": per_draw_rate,
        "rows_per_trace_mean": float(rows.mean()),
        "rows_per_trace_max": int(rows.max()),
        "draws_per_trace_mean": float(draws.mean()),
        "draws_per_trace_max": int(draws.max()),
        "controlled_per_trace_mean": float(controlled.mean()),
        "controlled_per_trace_max": int(controlled.max()),
        "distinct_addresses": len(addresses),
        "trace_types": len(types),
        "traces": traces,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", type=int, default=10_000)
    ap.add_argument("--per-draw-traces", type=int, default=200)
    ap.add_argument("simulators", nargs="*", default=["tau_decay", "calorimeter"])
    args = ap.parse_args()
    out = {}
    for name in args.simulators:
        out[name] = {
            "standalone": standalone_rate(name, min(args.traces, 2000)),
            "engine": engine_figures(name, args.traces, args.per_draw_traces),
        }
        e = out[name]["engine"]
        print(
            f"{name}: standalone {out[name]['standalone'].get('events_per_s', float('nan')):.0f} events/s; "
            f"streamed {e['stream_events_per_s']:.0f} events/s, per draw {e['per_draw_events_per_s']:.0f} events/s; "
            f"draws/trace mean {e['draws_per_trace_mean']:.0f} max {e['draws_per_trace_max']} "
            f"(controlled mean {e['controlled_per_trace_mean']:.1f}); {e['distinct_addresses']} addresses, "
            f"{e['trace_types']} trace types in {e['traces']} traces",
            flush=True,
        )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
