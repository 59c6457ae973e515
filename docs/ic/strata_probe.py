"""Stratified IC and stratified IS over the tau's channel on demo events, beside plain IC with as
many traces in all: each channel's log-evidence, ESS and probability (`strata/`).

    python docs/ic/strata_probe.py --network NET --events 6,1000002 -n 400 --out strata/events.jsonl

An event's seed is the simulator seed of `probexec demo --seed S` (and of `smc_reference.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from defensive_probe import SIMULATOR, event

from probexec.inference import Posterior, remote_pool, run_engine
from probexec.inference.ic import ic_posterior, stratified_ic
from probexec.nn import load_checkpoint
from probexec.simulators import TAU_CHANNELS, get_simulator

LATENTS = ["px", "py", "pz", "channel"]


def row(name: str, ev: int, seed: int, post: Posterior, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "run": name,
        "event": ev,
        "seed": seed,
        "traces": post.num_traces,
        "ess": post.ess,
        "log_evidence": post.log_evidence,
        "seconds": seconds,
    }
    if "strata" in post.stats:
        out["strata"] = {
            TAU_CHANNELS[int(float(k))]: {
                "log_evidence": v["log_evidence"],
                "ess": v.get("ess"),
                "p": v["probability"],
            }
            for k, v in post.stats["strata"].items()
        }
    else:
        probs = post["channel"].probabilities()
        out["channel"] = {TAU_CHANNELS[int(k)]: p for k, p in probs.items() if p > 1e-3}
    return out


def run(name: str, net: Any, pool: Any, n: int, obs: dict[str, Any], seed: int) -> Posterior:
    if name == "stratified IC":
        return stratified_ic(net, pool.models, n, obs, "channel", latents=LATENTS, seed=seed)
    if name == "stratified IS":
        return run_engine(pool, "is", n, obs, stratify="channel", latents=LATENTS, seed=seed, progress=False)
    return ic_posterior(net, pool.models, 10 * n, obs, latents=LATENTS, seed=seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--network", required=True)
    ap.add_argument("--events", default="6,1000002", help="the events' simulator seeds")
    ap.add_argument("-n", type=int, default=400, help="traces per channel; plain IC gets ten times as many")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    info = get_simulator(SIMULATOR)
    net, _ = load_checkpoint(args.network, simulator=SIMULATOR, observations=info.observed)
    n, seed = args.n, args.seed
    with remote_pool(SIMULATOR, workers=16) as pool, open(args.out, "a") as log:
        for ev in (int(s) for s in args.events.split(",")):
            image, _ = event(pool, ev)
            obs = {"calorimeter": image}
            for name in ("stratified IC", "stratified IS", "IC"):
                t0 = time.perf_counter()
                post = run(name, net, pool, n, obs, seed)
                r = row(name, ev, seed, post, time.perf_counter() - t0)
                log.write(json.dumps(r) + "\n")
                log.flush()
                print(
                    f"event {ev}, {name}: {r['traces']} traces, ESS {r['ess']:.1f}, log p(y) {r['log_evidence']:.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
