"""IC with and without a defensive share of prior traces, on the demo's tau events, side by side.

    python docs/ic/defensive_probe.py --network NET [--seeds 1 2 ... 9] [--traces 3000]
        [--defensive 0 0.1 0.3] [--repeats R] [--json OUT.jsonl]

Event S is `probexec demo --model tau_decay_coarse --seed S`'s: the first trace the simulator
draws itself with seed S, its noisy calorimeter image the observation. On each event this runs
importance sampling from the prior (seed S + 1, as the demo) and IC with each defensive share
(seed S + 2, as the demo's `--network`; with `--repeats R`, also seeds S + 2 + 1000 k for k < R),
all on one pool of 16 simulators, and prints per run the ESS, the posterior probability of the
true channel, the log-evidence estimate log mean(w), log mean(w) - mean(log w) (an estimate of
KL(proposal || posterior)) and the seconds. An ESS of a few traces is
itself noisy, so the summary compares the geometric means over repeats.

What it tests: with a share eps of traces from the prior and every trace weighted against
(1 - eps) q + eps p, no weight exceeds 1/eps times the likelihood. That should rescue the
events where the network's proposal misses the posterior (IC below IS), at the price of
eps of the traces on the events where it does not. The log-evidence estimates of all runs
of an event estimate the same number, which checks the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from probexec.inference import importance_sampling, remote_pool
from probexec.inference.ic import ic_posterior
from probexec.inference.prior import sample_prior
from probexec.inference.result import Posterior
from probexec.nn import load_checkpoint
from probexec.simulators import TAU_CHANNELS, get_simulator
from probexec.trace import OBSERVE

SIMULATOR = "tau_decay_coarse"


def event(pool: Any, seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """The demo's event for `seed`: its noisy image and its true latents."""
    truth = sample_prior(pool, 1, seed=seed, mode="stream", progress=False)
    ids = np.array(truth.addresses.ids_named("calorimeter", OBSERVE), dtype=np.uint64)
    row = int(np.nonzero(np.isin(truth.address_id, ids))[0][0])
    image = truth.values[truth.value_offsets[row] : truth.value_offsets[row + 1]]
    return image, {k: float(truth.values_of(k)[0]) for k in ("px", "py", "pz", "channel")}


def row(post: Posterior, run: str, seed: int, true: dict[str, float], seconds: float) -> dict[str, Any]:
    log_w = post.log_weights[np.isfinite(post.log_weights)]
    top = float(np.logaddexp.reduce(log_w))
    return {
        "seed": seed,
        "run": run,
        "channel": TAU_CHANNELS[int(true["channel"])],
        "traces": post.num_traces,
        "ess": post.ess,
        "p_true_channel": float(post["channel"].probabilities().get(true["channel"], 0.0)),
        "log_evidence": top - math.log(len(post.log_weights)),
        # log Z - mean log w estimates KL(proposal || posterior) (biased low at small N): a
        # proposal's distance from the posterior, far less noisy from run to run than the ESS.
        "kl": top - math.log(len(post.log_weights)) - float(np.mean(log_w)),
        "prior_traces": post.stats.get("prior_traces"),
        "seconds": seconds,
    }


def events_with_is(pool: Any, seeds: list[int], traces: int) -> Iterator[tuple[int, dict, dict, dict]]:
    """Per demo event: its seed, the observation, the true latents, and the row of importance
    sampling from the prior on it (seed S + 1, as the demo)."""
    for seed in seeds:
        image, true = event(pool, seed)
        obs = {"calorimeter": image}
        t0 = time.perf_counter()
        post = importance_sampling(pool, traces, obs, seed=seed + 1, progress=False)
        yield seed, obs, true, row(post, "is", seed, true, time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 10)))
    ap.add_argument("--traces", type=int, default=3000)
    ap.add_argument("--defensive", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    ap.add_argument("--repeats", type=int, default=1, help="IC runs per event and share, other seeds")
    ap.add_argument("--json", help="write the rows here, one JSON object a line")
    args = ap.parse_args()
    net, _ = load_checkpoint(
        args.network, simulator=SIMULATOR, observations=get_simulator(SIMULATOR).observed
    )
    rows: list[dict[str, Any]] = []
    with remote_pool(SIMULATOR, workers=16) as pool:
        for seed, obs, true, is_row in events_with_is(pool, args.seeds, args.traces):
            rows.append(is_row)
            for k in range(args.repeats):
                for eps in args.defensive:
                    t0 = time.perf_counter()
                    post = ic_posterior(
                        net, pool.models, args.traces, obs, latents=["px", "py", "pz", "channel"],
                        seed=seed + 2 + 1000 * k, defensive=eps,
                    )  # fmt: skip
                    rows.append(
                        {**row(post, f"ic {eps:g}", seed, true, time.perf_counter() - t0), "repeat": k}
                    )
            for r in rows[-1 - len(args.defensive) * args.repeats :]:
                print(json.dumps(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    runs = ["is", *(f"ic {eps:g}" for eps in args.defensive)]

    def gmean(values: list[float]) -> float:
        return math.exp(float(np.mean(np.log(values))))

    # Per event and run: the geometric mean ESS over the repeats (IS ran once).
    ess = {
        (seed, k): gmean([r["ess"] for r in rows if r["seed"] == seed and r["run"] == k])
        for seed in args.seeds
        for k in runs
    }
    print(f"\nESS of {args.traces}, geometric mean of {args.repeats} IC runs")
    print("| seed | channel | " + " | ".join(runs) + " |")
    for seed in args.seeds:
        channel = next(r["channel"] for r in rows if r["seed"] == seed)
        print(f"| {seed} | {channel} | " + " | ".join(f"{ess[seed, k]:.1f}" for k in runs) + " |")
    for k in runs[1:]:
        ratio = np.array([ess[seed, k] / ess[seed, "is"] for seed in args.seeds])
        print(
            f"{k}: median ESS ratio to IS {np.median(ratio):.2f}, lowest {ratio.min():.2f}, "
            f"higher than IS on {(ratio > 1).sum()} of {len(ratio)}, geometric mean ESS over the events "
            f"{gmean([ess[seed, k] for seed in args.seeds]):.1f} "
            f"(IS {gmean([ess[seed, 'is'] for seed in args.seeds]):.1f})"
        )


if __name__ == "__main__":
    main()
