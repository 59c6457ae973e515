"""An RMH step's engine CPU on one simulator, with the small rows' log-densities from NumPy
(`distributions.fast_log_prob`) and from the torch-backed classes, alternating in one run.

    python bench/mcmc_step.py [--simulator tau_decay_coarse] [--steps 400] [--repeats 5]

Each repeat runs `--steps` single-site steps of one chain (SMC's move, here at β = 0.5) from
the same state and seed, once per path, and reads the main thread's CPU time
(`time.thread_time`: the simulator's own time and the waits for it are not in it), with the
part spent in `TraceBatch.log_prob`. The two paths make the same moves: the densities agree to
1e-12 (`tests/test_fast_log_prob.py`), and the acceptance rates printed are the check. On the
tau simulators the event is the demo's seed 6, on the others the simulator's default
observations. Prints a line per run, the medians and their ratio, and one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import probexec.trace as trace_module
from probexec.inference import remote_pool
from probexec.inference.rmh import _Chain
from probexec.simulators import get_simulator

PATHS = ("numpy", "torch")


def observations(pool: Any, simulator: str) -> dict[str, Any]:
    if simulator.startswith("tau_decay"):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "ic"))
        from defensive_probe import event

        image, _ = event(pool, 6)
        return {"calorimeter": image}
    return dict(get_simulator(simulator).default_observations)


def run(model: Any, obs: dict[str, Any], steps: int, path: str) -> dict[str, float]:
    """`steps` steps from a fixed start; the path is chosen by hiding the NumPy scorer."""
    original = trace_module.log_prob_rows
    if path == "torch":
        trace_module.log_prob_rows = lambda *a: None  # type: ignore[assignment]
    spent = [0.0]
    log_prob = trace_module.TraceBatch.log_prob

    def timed(self: Any) -> np.ndarray:
        t = time.thread_time()
        try:
            return log_prob(self)
        finally:
            spent[0] += time.thread_time() - t

    trace_module.TraceBatch.log_prob = timed  # type: ignore[method-assign]
    try:
        chain = _Chain(model, obs, np.random.default_rng(7), 0.1)
        state = chain.init()
        t = time.thread_time()
        for _ in range(steps):
            state = chain.step(state, 0.5)
        total = time.thread_time() - t
    finally:
        trace_module.log_prob_rows = original
        trace_module.TraceBatch.log_prob = log_prob  # type: ignore[method-assign]
    return {
        "step_ms": 1e3 * total / steps,
        "log_prob_ms": 1e3 * spent[0] / (steps + 1),
        "acceptance": chain.accepted / max(chain.proposed, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--simulator", default="tau_decay_coarse")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in PATHS}
    with remote_pool(args.simulator, workers=1) as pool:
        obs = observations(pool, args.simulator)
        model = pool.models[0]
        run(model, obs, 20, "numpy")  # warm-up: imports, the simulator's first traces
        for i in range(args.repeats):
            for path in PATHS if i % 2 == 0 else PATHS[::-1]:
                r = run(model, obs, args.steps, path)
                runs[path].append(r)
                print(
                    f"  {path:5s}: engine CPU {r['step_ms']:.3f} ms a step, log_prob {r['log_prob_ms']:.3f} ms, "
                    f"acceptance {r['acceptance']:.3f}",
                    flush=True,
                )
    med = {p: {k: statistics.median(r[k] for r in runs[p]) for k in runs[p][0]} for p in PATHS}
    ratio = med["torch"]["step_ms"] / med["numpy"]["step_ms"]
    print(
        f"medians of {args.repeats}: engine CPU {med['torch']['step_ms']:.3f} -> {med['numpy']['step_ms']:.3f} ms "
        f"a step ({ratio:.2f}x less), log_prob {med['torch']['log_prob_ms']:.3f} -> {med['numpy']['log_prob_ms']:.3f} ms",
        flush=True,
    )
    print(json.dumps({"args": vars(args), "runs": runs, "medians": med, "step_ratio": ratio}))


if __name__ == "__main__":
    main()
