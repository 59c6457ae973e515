"""Protocol benchmark: what a controlled draw costs next to the raw ZeroMQ floor, and what
streaming buys over per-draw control. All figures of one placement are measured in one run.

    python bench/protocol.py [--quick] [--placements same,split]

(1) raw ZeroMQ REQ/REP ipc round trip between a C++ echo server and pyzmq, ~100-byte message;
(2) the engine's cost per controlled draw: prior sampling of `many_draws` (100 controlled Normal
    draws per trace) per draw, i.e. decode + handler stack + NumPy draw + encode + record;
(3) GUM traces/s with per-draw control and with whole-trace streaming.

Placement: "same" pins the engine and the simulator to one core (they take turns; no cross-core
wake-up), "split" puts them on two cores. Ratios are only meaningful within one placement.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from contextlib import contextmanager

import numpy as np
import zmq

import probexec
from probexec.simulators import BIN_DIR


@contextmanager
def placement(engine_cpu: int, sim_cpu: int):
    """Children started inside inherit `sim_cpu`; the engine (this process) runs on `engine_cpu`."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {sim_cpu})
    try:
        yield lambda: os.sched_setaffinity(0, {engine_cpu})
    finally:
        os.sched_setaffinity(0, before)


def raw_round_trip(engine_cpu: int, sim_cpu: int, n: int) -> float:
    tmp = tempfile.mkdtemp(prefix="probexec-bench-")
    address = f"ipc://{tmp}/echo.sock"
    with placement(engine_cpu, sim_cpu) as pin_engine:
        proc = subprocess.Popen([str(BIN_DIR / "probexec-bench-echo"), address])
        pin_engine()
        ctx = zmq.Context()
        s = ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, 10000)
        s.connect(address)
        payload = bytes(100)
        for _ in range(200):  # warm-up
            s.send(payload)
            s.recv()
        t0 = time.perf_counter()
        for _ in range(n):
            s.send(payload)
            s.recv()
        dt = time.perf_counter() - t0
        s.send(b"x")
        s.recv()
        s.close()
        ctx.term()
        proc.wait(timeout=10)
    return dt / n * 1e6


def per_draw_cost(engine_cpu: int, sim_cpu: int, traces: int) -> dict:
    with placement(engine_cpu, sim_cpu) as pin_engine:
        model = probexec.RemoteModel("many_draws")
        pin_engine()
        try:
            model.prior(20, mode="per_draw", seed=0)  # warm-up (first-seen addresses, caches)
            t0 = time.perf_counter()
            batch = model.prior(traces, mode="per_draw", seed=1, progress=False)
            dt = time.perf_counter() - t0
        finally:
            model.close()
    draws = int((batch.kind == 0).sum())
    # 100 Sample round trips + the Run/RunResult round trip per trace.
    return {
        "traces": traces,
        "controlled_draws": draws,
        "us_per_controlled_draw": dt / draws * 1e6,
        "us_per_round_trip": dt / (draws + traces) * 1e6,
    }


def gum_rates(engine_cpu: int, sim_cpu: int, per_draw_traces: int, stream_traces: int) -> dict:
    with placement(engine_cpu, sim_cpu) as pin_engine:
        model = probexec.RemoteModel("gum")
        pin_engine()
        try:
            model.prior(50, mode="per_draw", seed=0)
            model.prior(2000, mode="stream", seed=0)
            t0 = time.perf_counter()
            model.prior(per_draw_traces, mode="per_draw", seed=1, observe={"obs": [8.0, 9.0]}, progress=False)
            per_draw = per_draw_traces / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            batch = model.prior(
                stream_traces, mode="stream", seed=2, observe={"obs": [8.0, 9.0]}, progress=False
            )
            batch.log_likelihood()  # part of the job: weights of every trace
            stream = stream_traces / (time.perf_counter() - t0)
        finally:
            model.close()
    return {
        "per_draw_traces_per_s": per_draw,
        "stream_traces_per_s": stream,
        "stream_over_per_draw": stream / per_draw,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    ap.add_argument("--placements", default="same,split")
    args = ap.parse_args()
    k = 0.1 if args.quick else 1.0
    cpus = sorted(os.sched_getaffinity(0))
    layouts = {"same": (cpus[0], cpus[0]), "split": (cpus[0], cpus[-1])}
    out: dict = {
        "machine": {
            "cpus_available": len(cpus),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "placements": {},
    }
    for name in args.placements.split(","):
        engine_cpu, sim_cpu = layouts[name]
        if name == "split" and engine_cpu == sim_cpu:
            continue
        raw = raw_round_trip(engine_cpu, sim_cpu, int(20000 * k))
        draw = per_draw_cost(engine_cpu, sim_cpu, int(300 * k))
        gum = gum_rates(engine_cpu, sim_cpu, int(3000 * k), int(300_000 * k))
        out["placements"][name] = {
            "engine_cpu": engine_cpu,
            "simulator_cpu": sim_cpu,
            "raw_zmq_round_trip_us": raw,
            "per_draw": draw,
            "per_draw_over_raw": draw["us_per_controlled_draw"] / raw,
            "gum": gum,
        }
    print(json.dumps(out, indent=2))
    for name, p in out["placements"].items():
        print(
            f"[{name}] raw ZeroMQ round trip {p['raw_zmq_round_trip_us']:.1f} us; "
            f"controlled draw {p['per_draw']['us_per_controlled_draw']:.1f} us "
            f"= {p['per_draw_over_raw']:.2f}x the floor (target <= 1.3x); "
            f"GUM {p['gum']['per_draw_traces_per_s']:.0f} traces/s per draw, "
            f"{p['gum']['stream_traces_per_s']:.0f} streamed = {p['gum']['stream_over_per_draw']:.0f}x (target >= 50x)"
        )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
