"""Inference benchmark: traces/s of each engine on each test model, importance-sampling ESS/N,
RMH acceptance rates, and the speed-up of 2 simulator workers over 1 on a model made slow on
purpose (`slow`: GUM plus a 1 ms busy loop per trace). One run, one JSON object.

    python bench/inference.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

from probexec.inference import importance_sampling, remote_pool, rmh
from probexec.simulators import get_simulator

MODELS = ("gum", "gum_marsaglia", "hmm", "branching")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    k = 0.1 if args.quick else 1.0
    out: dict = {"engines": {}, "workers": {}}
    for name in MODELS:
        obs = get_simulator(name).default_observations
        with remote_pool(name, workers=1) as pool:
            n = int(100_000 * k)
            post = importance_sampling(pool, n, obs, seed=0, progress=False)
            is_rate = n / post.seconds
            m = int(4_000 * k)
            chain = rmh(pool, m, obs, chains=4, burn_in=int(500 * k), seed=0, progress=False)
            steps = 4 * int(500 * k) + m
        out["engines"][name] = {
            "is_traces_per_s": is_rate,
            "is_ess_over_n": post.ess / n,
            "rmh_steps_per_s": steps / chain.seconds,
            "rmh_acceptance_rate": chain.stats["acceptance_rate"],
            "rmh_r_hat": chain.stats["r_hat"],
        }
        print(
            f"{name:14s} IS {is_rate:9.0f} traces/s, ESS/N {post.ess / n:.4f}; "
            f"RMH {steps / chain.seconds:6.0f} steps/s, acceptance {chain.stats['acceptance_rate']:.3f}",
            flush=True,
        )
    obs = get_simulator("slow").default_observations
    n = int(4_000 * k) or 400
    for workers in (1, 2):
        with remote_pool("slow", workers=workers) as pool:
            t0 = time.perf_counter()
            importance_sampling(pool, n, obs, seed=0, progress=False)
            out["workers"][workers] = n / (time.perf_counter() - t0)
    out["workers"]["speedup_2_over_1"] = out["workers"][2] / out["workers"][1]
    print(
        f"slow model IS: 1 worker {out['workers'][1]:.0f} traces/s, 2 workers {out['workers'][2]:.0f} traces/s, "
        f"speed-up {out['workers']['speedup_2_over_1']:.2f}x"
    )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
