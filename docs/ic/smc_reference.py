"""A reference posterior for the held-out tau events, by channel-stratified tempered SMC.

RMH is no gold standard on these events (its chains stay in the channel they start in) and
importance sampling from the prior keeps a handful of traces. This script runs, per event:

1. a pilot: `stratified_smc` over all ten channels with `--pilot-particles` particles each;
2. the reference: the channels whose pilot log-evidence is within `--keep-nats` of the best,
   again with `--particles` particles each, once per seed in `--seeds`. The spread between
   seeds is the reference's own error.

Channels left out after the pilot get probability 0; with `--keep-nats 15` they had less than
e^-15 of the best channel's evidence in the pilot, whose log-evidence errors are a few nats.

    python docs/ic/smc_reference.py --out docs/ic/smc_reference/reference.json

The events are those of `make_tau_ic.py` (the first event of each channel among seeds 1 000 000,
1 000 001, ...), from the same simulator.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior
from probexec.inference.smc import stratified_smc
from probexec.simulators import TAU_CHANNELS

LATENTS = ["channel", "px", "py", "pz"]


def describe(post: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"ess": post.ess, "seconds": post.seconds, "runs": post.stats["simulator_runs"]}
    for k in ("px", "py", "pz"):
        e = post[k]
        lo, hi = e.credible_interval(0.9)
        out[k] = {"mean": float(e.mean), "std": float(e.stddev), "ci90": [float(lo), float(hi)]}
    out["channel"] = {
        TAU_CHANNELS[int(float(c))]: s["probability"]
        for c, s in post.stats["strata"].items()
        if s["probability"] > 0
    }
    out["log_evidence"] = post.stats["log_evidence"]
    out["strata"] = {TAU_CHANNELS[int(float(c))]: s for c, s in post.stats["strata"].items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--simulator", default="tau_decay_coarse")
    ap.add_argument(
        "--seeds-events", default="1000000,1000002,1000003,1000017", help="the events' simulator seeds"
    )
    ap.add_argument("--pilot-particles", type=int, default=32)
    ap.add_argument("--particles", type=int, default=128)
    ap.add_argument("--moves", type=int, default=1, help="MH sweeps per particle and stage")
    ap.add_argument("--keep-nats", type=float, default=15.0)
    ap.add_argument("--seeds", default="1,2", help="one reference run per seed")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = json.loads(out_path.read_text()) if out_path.exists() else []
    done = {r["seed"] for r in results}
    with remote_pool(args.simulator, workers=args.workers) as pool:
        for ev in (int(s) for s in args.seeds_events.split(",")):
            if ev in done:
                continue
            t = sample_prior(pool, 1, seed=ev, mode="stream", progress=False)
            obs = {"calorimeter": t.values_of("calorimeter")[0]}
            truth = {k: float(t.values_of(k)[0]) for k in LATENTS}
            name = TAU_CHANNELS[int(truth["channel"])]
            print(
                f"event {ev}: tau -> {name}, p = {[round(truth[k], 2) for k in ('px', 'py', 'pz')]}",
                flush=True,
            )
            t0 = time.perf_counter()
            pilot = stratified_smc(
                pool,
                args.pilot_particles,
                obs,
                "channel",
                moves=args.moves,
                latents=LATENTS,
                seed=ev,
                progress=False,
            )
            lz = {float(c): s["log_evidence"] for c, s in pilot.stats["strata"].items()}
            best = max(lz.values())
            kept = sorted(c for c, v in lz.items() if v >= best - args.keep_nats)
            print(
                "  pilot log-evidence minus the best: "
                + ", ".join(
                    f"{TAU_CHANNELS[int(c)]} {v - best:.1f}"
                    for c, v in sorted(lz.items(), key=lambda kv: -kv[1])
                )
                + f" ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            runs = []
            for s in (int(x) for x in args.seeds.split(",")):
                post = stratified_smc(
                    pool,
                    args.particles,
                    obs,
                    "channel",
                    values=kept,
                    moves=args.moves,
                    latents=LATENTS,
                    seed=s,
                    progress=False,
                )
                d = describe(post) | {"seed": s}
                runs.append(d)
                print(
                    f"  seed {s}: P(true channel) {d['channel'].get(name, 0.0):.3f}, "
                    f"px {d['px']['mean']:.2f} ± {d['px']['std']:.2f}, py {d['py']['mean']:.2f} ± {d['py']['std']:.2f}, "
                    f"pz {d['pz']['mean']:.2f} ± {d['pz']['std']:.2f}, log Z {d['log_evidence']:.2f}, "
                    f"{d['runs']} runs, {d['seconds']:.0f} s",
                    flush=True,
                )
            results.append(
                {
                    "seed": ev,
                    "truth": truth,
                    "channel": name,
                    "pilot": describe(pilot) | {"particles": args.pilot_particles},
                    "kept": [TAU_CHANNELS[int(c)] for c in kept],
                    "runs": runs,
                    "settings": vars(args),
                }
            )
            out_path.write_text(json.dumps(results, indent=1, default=float))  # after each event: resumable
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
