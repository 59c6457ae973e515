"""MCMC steps draw by draw against replay runs (`Run{mode: Replay}`: one exchange a step),
alternating in one run.

    python bench/replay_runs.py [--simulator tau_decay_coarse] [--steps 400] [--repeats 5] [--smc N]
                                [--fix channel=4]

Two simulator processes of the same build, one driven each way. Each repeat runs `--steps`
single-site steps of one chain (SMC's move, at β = 0.5) from the same state and seed on each, and
reads the wall time, the engine's CPU time (`time.process_time`: every thread of this process,
ZeroMQ's I/O thread included) and the simulator's (from `/proc`). Both chains start from the same
trace, but the two paths draw fresh sites from different streams (the engine's against the
simulator's), so the chains part where the structure changes; the acceptance rates are printed
beside them. With `--smc N` each repeat also
runs a whole SMC of N particles both ways and prints its seconds and simulator runs a second. On
the tau simulators the event is the demo's seed 6, on the others the simulator's default
observations; `--fix NAME=VALUE` observes a sample too, as one stratum of `--stratify` does. Prints a line per run, the medians and their ratios, and one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from probexec import RemoteModel
from probexec.inference.rmh import _Chain
from probexec.inference.smc import smc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mcmc_step import observations

PATHS = ("per_draw", "replay")


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steps(model: RemoteModel, obs: dict[str, Any], n: int, start: dict | None) -> dict[str, float]:
    chain = _Chain(model, obs, np.random.default_rng(7), 0.1)
    state = chain.init(start)
    assert model.pid is not None
    sim0, cpu0, wall0 = process_cpu(model.pid), time.process_time(), time.perf_counter()
    for _ in range(n):
        state = chain.step(state, 0.5)
    wall = time.perf_counter() - wall0
    return {
        "step_ms": 1e3 * wall / n,
        "engine_cpu_ms": 1e3 * (time.process_time() - cpu0) / n,
        "simulator_cpu_ms": 1e3 * (process_cpu(model.pid) - sim0) / n,
        "acceptance": chain.accepted / max(chain.proposed, 1),
    }


def whole_smc(model: RemoteModel, obs: dict[str, Any], particles: int) -> dict[str, float]:
    t = time.perf_counter()
    post = smc(model, particles, obs, seed=3, progress=False)
    seconds = time.perf_counter() - t
    runs = post.stats["simulator_runs"]
    return {
        "smc_seconds": seconds,
        "smc_runs_per_s": runs / seconds,
        "smc_stages": post.stats["stages"],
        "smc_log_evidence": post.stats["log_evidence"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--simulator", default="tau_decay_coarse")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="also observe this sample (as --stratify does)",
    )
    ap.add_argument(
        "--smc", type=int, default=0, metavar="N", help="also a whole SMC of N particles each way"
    )
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in PATHS}
    with (
        RemoteModel(args.simulator, replay_runs=False) as per_draw,
        RemoteModel(args.simulator, addresses=per_draw.addresses) as replay,
    ):
        models = {"per_draw": per_draw, "replay": replay}
        assert replay.supports_replay and not per_draw.supports_replay
        obs = observations(replay, args.simulator)
        for item in args.fix:
            name, value = item.split("=")
            obs[name] = [float(value)]
        # One start for both: the paths' fresh draws come from different streams.
        start = _Chain(per_draw, obs, np.random.default_rng(7), 0.1).init().values
        for m in models.values():
            steps(m, obs, 20, start)  # warm-up: imports, the simulator's first traces and addresses
        for i in range(args.repeats):
            for path in PATHS if i % 2 == 0 else PATHS[::-1]:
                r = steps(models[path], obs, args.steps, start)
                if args.smc:
                    r |= whole_smc(models[path], obs, args.smc)
                runs[path].append(r)
                line = (
                    f"  {path:8s}: {r['step_ms']:.3f} ms a step, engine CPU {r['engine_cpu_ms']:.3f} ms, "
                    f"simulator CPU {r['simulator_cpu_ms']:.3f} ms, acceptance {r['acceptance']:.3f}"
                )
                if args.smc:
                    line += f"; SMC {r['smc_seconds']:.1f} s, {r['smc_runs_per_s']:.0f} runs/s"
                print(line, flush=True)
    med = {p: {k: statistics.median(r[k] for r in runs[p]) for k in runs[p][0]} for p in PATHS}
    ratios = {
        k: med["per_draw"][k] / med["replay"][k]
        for k in ("step_ms", "engine_cpu_ms", "simulator_cpu_ms", "smc_seconds")
        if k in med["replay"] and med["replay"][k] > 0
    }
    a, b = med["per_draw"], med["replay"]
    print(
        f"medians of {args.repeats} ({args.simulator}): a step {a['step_ms']:.3f} -> {b['step_ms']:.3f} ms "
        f"({ratios['step_ms']:.2f}x), engine CPU {a['engine_cpu_ms']:.3f} -> {b['engine_cpu_ms']:.3f} ms, "
        f"simulator CPU {a['simulator_cpu_ms']:.3f} -> {b['simulator_cpu_ms']:.3f} ms"
        + (
            f"; SMC of {args.smc} {a['smc_seconds']:.1f} -> {b['smc_seconds']:.1f} s ({ratios['smc_seconds']:.2f}x)"
            if args.smc
            else ""
        ),
        flush=True,
    )
    print(json.dumps({"args": vars(args), "runs": runs, "medians": med, "ratios": ratios}))


if __name__ == "__main__":
    main()
