"""Stratified IC and stratified IS over the tau's channel on demo events, beside plain IC with as
many traces in all: each channel's log-evidence, ESS and probability (`strata/`).

    python docs/ic/strata_probe.py --network NET --events 6,1000002 -n 400 --out strata/events.jsonl
    python docs/ic/strata_probe.py --network NET --pilot 40 --seeds 1,2,3 --out strata/pilot.jsonl

With `--pilot P` the "+ pilot" runs start with P traces a channel and share the rest of their n
a channel out by `strata.pilot_shares` (`--stratify-pilot`); `--runs` picks the runs. SMC's
runs have n particles a channel, one sweep a stage:

    python docs/ic/strata_probe.py --network NET -n 128 --pilot 32 --runs "stratified SMC,stratified SMC + pilot" --out strata/smc.jsonl

    python docs/ic/strata_probe.py --table strata/*.jsonl   # log p(y) by event, run and seed

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
    if "simulator_runs" in post.stats:  # SMC: what its moves cost
        out["simulator_runs"] = post.stats["simulator_runs"]
    if "strata" in post.stats:
        out["strata"] = {
            TAU_CHANNELS[int(float(k))]: {
                "log_evidence": v["log_evidence"],
                "ess": v.get("ess"),
                "p": v["probability"],
            }
            for k, v in post.stats["strata"].items()
        }
        for k, v in post.stats["strata"].items():
            if "pilot_probability" in v:
                out["strata"][TAU_CHANNELS[int(float(k))]].update(
                    pilot_p=v["pilot_probability"],
                    pilot_log_evidence=v["pilot_log_evidence"],
                    traces=v["traces"],
                )
    else:
        probs = post["channel"].probabilities()
        out["channel"] = {TAU_CHANNELS[int(k)]: p for k, p in probs.items() if p > 1e-3}
    return out


RUNS = (
    "stratified IC",
    "stratified IS",
    "IC",
    "stratified IC + pilot",
    "stratified IS + pilot",
    "stratified SMC",
    "stratified SMC + pilot",
)


def run(name: str, net: Any, pool: Any, n: int, obs: dict[str, Any], seed: int, pilot: int) -> Posterior:
    p = pilot if name.endswith("+ pilot") else 0
    if name.startswith("stratified IC"):
        return stratified_ic(net, pool.models, n, obs, "channel", latents=LATENTS, seed=seed, pilot=p)
    if name.startswith(("stratified IS", "stratified SMC")):
        return run_engine(
            pool,
            "is" if name.startswith("stratified IS") else "smc",
            n,
            obs,
            stratify="channel",
            stratify_pilot=p,
            latents=LATENTS,
            seed=seed,
            progress=False,
        )
    return ic_posterior(net, pool.models, 10 * n, obs, latents=LATENTS, seed=seed)


def table(paths: list[str]) -> None:
    """The rows of `paths` as a Markdown table: per event and run, log p(y) and ESS by seed."""
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            runs.setdefault((r["event"], r["run"]), []).append(r)
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    print("| event | run | " + " | ".join(f"log p(y), seed {s}" for s in seeds) + " | mean | ESS by seed |")
    print("| --- | --- |" + " --- |" * (len(seeds) + 2))
    for (ev, name), rs in sorted(runs.items()):
        by_seed = {r["seed"]: r for r in rs}
        lz = [by_seed[s]["log_evidence"] if s in by_seed else None for s in seeds]
        shown = " | ".join(f"{x:.2f}" if x is not None else "" for x in lz)
        done = [x for x in lz if x is not None]
        ess = ", ".join(f"{by_seed[s]['ess']:.1f}" for s in seeds if s in by_seed)
        print(f"| {ev} | {name} | {shown} | {sum(done) / len(done):.2f} | {ess} |")


def main() -> None:
    if sys.argv[1:2] == ["--table"]:
        table(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--network", required=True)
    ap.add_argument("--events", default="6,1000002", help="the events' simulator seeds")
    ap.add_argument("-n", type=int, default=400, help="traces per channel; plain IC gets ten times as many")
    ap.add_argument("--seeds", default="1", help="the runs' seeds, each a repeat of every run")
    ap.add_argument("--pilot", type=int, default=0, help="traces a channel in the pilot runs' pilots")
    ap.add_argument(
        "--runs", default=None, help=f"comma-separated, of: {', '.join(RUNS)} (default: the first three, "
        "and the pilot runs with --pilot)"
    )  # fmt: skip
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    runs = args.runs.split(",") if args.runs else list(RUNS if args.pilot else RUNS[:3])
    if unknown := set(runs) - set(RUNS):
        ap.error(f"unknown runs {sorted(unknown)}")
    info = get_simulator(SIMULATOR)
    net, _ = load_checkpoint(args.network, simulator=SIMULATOR, observations=info.observed)
    n = args.n
    with remote_pool(SIMULATOR, workers=16) as pool, open(args.out, "a") as log:
        for ev, seed in ((int(e), int(s)) for e in args.events.split(",") for s in args.seeds.split(",")):
            image, _ = event(pool, ev)
            obs = {"calorimeter": image}
            for name in runs:
                t0 = time.perf_counter()
                post = run(name, net, pool, n, obs, seed, args.pilot)
                r = row(name, ev, seed, post, time.perf_counter() - t0)
                log.write(json.dumps(r) + "\n")
                log.flush()
                print(
                    f"event {ev}, {name}: {r['traces']} traces, ESS {r['ess']:.1f}, log p(y) {r['log_evidence']:.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
