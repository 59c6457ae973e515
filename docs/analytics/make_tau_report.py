"""Regenerates the tau decay analytics report of docs/analytics/ (README.md there says what it shows).

    python docs/analytics/make_tau_report.py --work /tmp/tau [--prior-traces 100000] [--ic DIR --training-log CSV]

1. One simulated event is the observation: the first prior trace (seeds 0, 1, ...) that decays in
   the ρ channel (τ → π π⁰ ν), so its trace holds the Breit–Wigner rejection loop; its latents are
   the truth.
2. Posteriors for it: RMH (4 chains) and importance sampling with the prior as proposal; an IC
   posterior directory can be added with --ic.
3. `probexec analytics` over N prior traces simulated on the fly (a tau trace carries a 24 500-voxel
   image: they are analysed and dropped, never stored) and the posteriors.
4. The summary tables and a few figures are copied to docs/analytics/tau/.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from probexec.analytics import ReportOptions, analyse, open_source, write_report
from probexec.inference import run_engine
from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior
from probexec.inference.rmh import save_chain_states
from probexec.simulators import TAU_CHANNELS
from probexec.trace import OBSERVE

LATENTS = ["px", "py", "pz", "channel"]
RHO = TAU_CHANNELS.index("pi pi0 nu")


def observation(pool, work: Path) -> tuple[dict, dict]:
    for seed in range(1000):
        t = sample_prior(pool, 1, seed=seed, mode="stream", progress=False)
        if int(t.values_of("channel")[0]) == RHO:
            break
    ids = np.array(t.addresses.ids_named("calorimeter", OBSERVE), dtype=np.uint64)
    row = int(np.nonzero(np.isin(t.address_id, ids))[0][0])
    image = t.values[t.value_offsets[row] : t.value_offsets[row + 1]].copy()
    truth = {k: float(t.values_of(k)[0]) for k in [*LATENTS, "visible_energy", "missing_pt"]}
    truth["seed"] = seed
    np.savez(work / "observation.npz", calorimeter=image)
    (work / "truth.json").write_text(json.dumps(truth, indent=2))
    return {"calorimeter": image}, truth


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/tau_analytics")
    p.add_argument("--prior-traces", type=int, default=100_000)
    p.add_argument("--rmh-samples", type=int, default=2000)
    p.add_argument("--rmh-burn-in", type=int, default=500)
    p.add_argument("--is-traces", type=int, default=3000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ic", help="an IC posterior directory to add")
    p.add_argument("--training-log", help="the IC training log (CSV)")
    p.add_argument("--docs", default=str(Path(__file__).resolve().parent / "tau"))
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    with remote_pool("tau_decay", workers=args.workers) as pool:
        obs, truth = observation(pool, work)
        print(f"observation: seed {truth['seed']}, channel {TAU_CHANNELS[int(truth['channel'])]}")
        if not (work / "rmh" / "summary.json").exists():
            post = run_engine(
                pool, "rmh", args.rmh_samples, obs, chains=4, burn_in=args.rmh_burn_in, latents=LATENTS, seed=1,
                progress=True,
            )  # fmt: skip
            post.save(work / "rmh")
            save_chain_states(post.chain_states or [], work / "rmh" / "rmh_state.npz")
        if not (work / "is" / "summary.json").exists():
            run_engine(pool, "is", args.is_traces, obs, latents=LATENTS, seed=2, progress=True).save(
                work / "is"
            )

    sources = [open_source(f"prior=sim:tau_decay:{args.prior_traces}:7", workers=args.workers)]
    sources += [open_source(f"rmh={work / 'rmh'}"), open_source(f"is={work / 'is'}")]
    if args.ic:
        sources.append(open_source(f"ic={args.ic}"))
    analyses = [analyse(s, progress=True) for s in sources]
    opts = ReportOptions(
        truth={k: v for k, v in truth.items() if k in LATENTS}, training_log=args.training_log
    )
    page = write_report(analyses, work / "report", opts)
    print(f"wrote {page}")

    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    report = work / "report"
    for name in ["index.html", "summary.json", "csv/inputs.csv", "csv/addresses_prior.csv", "csv/trace_types_prior.csv",
                 "csv/trace_lengths_prior.csv", "csv/informative_rmh.csv", "csv/informative_is.csv",
                 "csv/mcmc_rmh.csv", "csv/weights_is.csv", "figures/lengths_prior.png",
                 "graphs/graph_prior_all.svg", "graphs/graph_prior_all.dot"]:  # fmt: skip
        src = report / name
        if src.exists():
            shutil.copy(src, docs / src.name)
    for pattern in ["figures/hist_px.png", "figures/hist_channel.png", "figures/hist_pz.png", "figures/acf_rmh.png",
                    "figures/weights_is.png", "graphs/graph_prior_type_*.svg", "figures/training.png"]:  # fmt: skip
        for src in sorted(report.glob(pattern))[:1]:
            shutil.copy(src, docs / src.name)
    if args.ic:
        for src in report.glob("csv/informative_ic.csv"):
            shutil.copy(src, docs / src.name)
    shutil.copy(work / "truth.json", docs / "truth.json")
    print(f"copied the summary to {docs}")


if __name__ == "__main__":
    main()
