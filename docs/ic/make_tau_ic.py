"""Tau decay inference compilation end to end: dataset, training, and IC against importance sampling
and RMH on held-out simulated events. Writes docs/ic/ (README.md there says what the figures show).

    python docs/ic/make_tau_ic.py --work /tmp/tauic [--traces 150000] [--device cpu] [--epochs 2]
    # the scale the issue asks for, on a GPU machine with 16 cores:
    python docs/ic/make_tau_ic.py --work /scratch/tauic --traces 1000000 --workers 16 --device cuda \\
        --batch-size 256 --epochs 2

1. Dataset: `--traces` prior traces, written by `--workers` simulators into WORK/data (the
   calorimeter image is stored as its sparse Normal mean and stddev). Skipped if it exists.
2. Network: trained on it, saved to WORK/tau.pt with its log WORK/tau.csv (an interrupted run
   resumes from the last checkpoint; skipped once finished).
3. Events: `--events` held-out events, simulated from seeds the dataset never used (1 000 000 + i),
   the first of each channel in `--channels` order so the comparison covers several decay modes.
4. For each event: IC with `--n` traces, importance sampling with the prior as proposal at the same
   number of traces, and RMH (4 chains). Per-latent means, 90 % credible intervals, channel
   probabilities and ESS/N go to WORK/summary.json; the posteriors against the truth to
   WORK/tau_posteriors.png; both, and the training curve, are copied to `--docs`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from probexec.data import DatasetWriter, TraceDataset
from probexec.inference import Posterior, run_engine
from probexec.inference.ic import ic_posterior
from probexec.inference.ic_drivers import ICDrivers
from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior
from probexec.nn import TrainOptions, load_checkpoint, train
from probexec.nn.training import ALL_OBSERVATIONS
from probexec.simulators import TAU_CHANNELS

MOMENTA = ["px", "py", "pz"]
LATENTS = [*MOMENTA, "channel"]


def make_dataset(work: Path, args: argparse.Namespace) -> TraceDataset:
    path = work / "data"
    if not (path / "dataset.json").exists():
        t0 = time.perf_counter()
        with (
            DatasetWriter(path, args.simulator, shard_traces=1000) as writer,
            remote_pool(args.simulator, workers=args.workers) as pool,
        ):
            sample_prior(pool, args.traces, seed=args.seed, progress=True, sink=writer.add)
        print(f"dataset: {args.traces} traces in {time.perf_counter() - t0:.0f} s")
    return TraceDataset(path)


def make_network(work: Path, data: TraceDataset, args: argparse.Namespace) -> Path:
    net, done = work / "tau.pt", work / "tau.done"
    if not done.exists():  # an interrupted run resumes from its last checkpoint
        # --init: go on from a network trained elsewhere (a new schedule, no pretraining).
        start = (
            load_checkpoint(args.init, simulator=args.simulator)[0]
            if args.init and not net.exists()
            else None
        )
        opts = TrainOptions(
            batch_size=args.batch_size, lr=args.lr, epochs=args.epochs, device=args.device, cosine=True,
            warmup_steps=200,
            threads=args.threads, seed=args.seed, valid_traces=1000, checkpoint_every=1000,
            config_overrides=(
                {"observations": {ALL_OBSERVATIONS: {"norm": args.obs_norm}}} if args.obs_norm else {}
            ),
            pretrain_steps=0 if args.init else args.pretrain_embedding,
            pretrain_latents=tuple(args.pretrain_latents.split(",")) if args.pretrain_latents else None,
            tensorboard=work / "tb",  # the same figures as tau.csv, for `tensorboard --logdir WORK/tb`
        )  # fmt: skip
        print(f"training starts at {time.time():.0f} (Unix time)", flush=True)
        res = train(
            args.simulator, dataset=data, output=net, options=opts, log_path=work / "tau.csv", resume=True,
            network=start,
        )  # fmt: skip
        print(f"training ends at {time.time():.0f} (Unix time)", flush=True)
        done.write_text(json.dumps({"traces": res.traces, "seconds": res.seconds}))
        print(
            f"trained {res.traces} traces in {res.seconds:.0f} s ({res.traces_per_second:.0f} traces/s, "
            f"waiting for data {100 * res.wait_fraction:.0f} %), loss {res.final_loss:.2f}, valid {res.valid_loss:.2f}"
        )
    return net


def held_out_events(pool: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The first event of each wanted channel among seeds 1 000 000, 1 000 001, ..."""
    want = [TAU_CHANNELS.index(c) for c in args.channels][: args.events]
    events: list[dict[str, Any]] = []
    for seed in range(1_000_000, 1_010_000):
        if not want:
            break
        t = sample_prior(pool, 1, seed=seed, mode="stream", progress=False)
        channel = int(t.values_of("channel")[0])
        if channel not in want:
            continue
        want.remove(channel)
        image = t.values_of("calorimeter")[0]
        truth = {k: float(t.values_of(k)[0]) for k in LATENTS}
        events.append({"seed": seed, "truth": truth, "image": image})
    return events


def describe(post: Posterior) -> dict[str, Any]:
    n = post.num_traces
    out: dict[str, Any] = {
        "traces": n,
        "seconds": post.seconds,
        "traces_per_s": (n + post.dropped) / post.seconds if post.seconds > 0 else None,
        "ess": post.ess,
        "ess_over_n": post.ess / n if n else 0.0,
    }
    for k in MOMENTA:
        e = post[k]
        lo, hi = e.credible_interval(0.9)
        out[k] = {"mean": float(e.mean), "std": float(e.stddev), "ci90": [float(lo), float(hi)]}
    probs = post["channel"].probabilities()
    out["channel"] = {TAU_CHANNELS[int(c)]: float(p) for c, p in sorted(probs.items())}
    if post.stats.get("driver_seconds"):  # IC: the traces alone, without process start-up
        out["traces_per_driver_s"] = (n + post.dropped) / post.stats["driver_seconds"]
    for key in (
        "acceptance_rate",
        "r_hat",
        "chains",
        "prior_fallbacks",
        "network_steps",
        "mean_batch",
        "processes",
    ):
        if key in post.stats:
            out[key] = post.stats[key]
    return out


def in_process_ic(net: Any, pool: Any, obs: dict[str, Any], seed: int, args: argparse.Namespace) -> Posterior:
    """IC for one event, driven from this process on `--in-flight` of the pool's simulators."""
    return ic_posterior(
        net,
        pool.models[: args.in_flight],
        args.n,
        obs,
        latents=LATENTS,
        seed=seed,
        device=args.ic_device or args.device,
        progress=True,
    )


def infer(work: Path, net_path: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    net, _ = load_checkpoint(net_path, simulator=args.simulator, device=args.ic_device or args.device)
    plain = None
    if args.baseline_network:
        plain, _ = load_checkpoint(
            args.baseline_network, simulator=args.simulator, device=args.ic_device or args.device
        )
    results = []
    with (
        remote_pool(args.simulator, workers=max(args.in_flight, args.workers)) as pool,
        contextlib.ExitStack() as stack,
    ):
        drivers = None
        if (
            args.ic_processes > 1
        ):  # drivers in processes of their own, each with its simulators, kept for every event
            drivers = stack.enter_context(
                ICDrivers(
                    net_path,
                    args.simulator,
                    processes=args.ic_processes,
                    in_flight=-(-args.in_flight // args.ic_processes),
                    device=args.ic_device or args.device,
                )
            )
        events = held_out_events(pool, args)
        for k, ev in enumerate(events):
            obs = {"calorimeter": ev["image"]}
            name = TAU_CHANNELS[int(ev["truth"]["channel"])]
            print(
                f"event {k}: seed {ev['seed']}, tau -> {name}, p = {[round(ev['truth'][m], 2) for m in MOMENTA]}"
            )
            d = work / "events" / str(k)
            if drivers is not None:
                ic = drivers.posterior(args.n, obs, latents=LATENTS, seed=k, progress=True)
            else:
                ic = in_process_ic(net, pool, obs, k, args)
            posts = {"ic": ic}
            if plain is not None:  # the same IC with a network trained another way
                posts["ic_plain"] = in_process_ic(plain, pool, obs, k, args)
            posts |= {
                "is": run_engine(pool, "is", args.n, obs, latents=LATENTS, seed=k, progress=True),
                "rmh": run_engine(
                    pool,
                    "rmh",
                    args.rmh_samples,
                    obs,
                    chains=4,
                    burn_in=args.rmh_burn_in,
                    latents=LATENTS,
                    seed=k,
                    progress=True,
                ),
            }
            samples = {}
            for eng, p in posts.items():
                p.save(d / eng)
                for m in LATENTS:
                    samples[f"{eng}/{m}"] = p[m].values
                samples[f"{eng}/weights"] = p[MOMENTA[0]].weights
            np.savez(d / "samples.npz", **samples)
            res = {"seed": ev["seed"], "truth": ev["truth"], "channel": name}
            res.update({eng: describe(p) for eng, p in posts.items()})
            results.append(res)
            for eng in posts:
                r = res[eng]
                print(
                    f"  {eng:3s} ESS/N {r['ess_over_n']:.3f}  px {r['px']['mean']:6.2f}  py {r['py']['mean']:6.2f}  "
                    f"pz {r['pz']['mean']:6.2f}  P(true channel) {r['channel'].get(name, 0.0):.2f}  "
                    f"{r['traces_per_s']:.0f} traces/s"
                    + (
                        f" ({r['traces_per_driver_s']:.0f} in the drivers)"
                        if "traces_per_driver_s" in r
                        else ""
                    ),
                    flush=True,
                )
    return results


def refresh(work: Path, results: list[dict[str, Any]]) -> None:
    """Quantities recomputed from each event's saved samples (also for a finished run, with
    --figures-only): the IC proposal itself (the unweighted IC draws: what the network learned,
    whatever the weights do) and the RMH effective sample size over the chains."""
    from probexec.inference.rmh import mcmc_ess

    for i, res in enumerate(results):
        s = np.load(work / "events" / str(i) / "samples.npz")
        for eng in ("ic", "ic_plain"):
            if f"{eng}/channel" not in s:
                continue
            prop: dict[str, Any] = {}
            for k in MOMENTA:
                v = s[f"{eng}/{k}"]
                prop[k] = {
                    "mean": float(v.mean()),
                    "std": float(v.std()),
                    "ci90": np.quantile(v, [0.05, 0.95]).tolist(),
                }
            ch = s[f"{eng}/channel"].astype(int)
            prop["channel"] = {TAU_CHANNELS[c]: float(np.mean(ch == c)) for c in sorted(set(ch.tolist()))}
            res[f"{eng}_proposal"] = prop
        chains = int(res["rmh"].get("chains", 4))
        ess = [mcmc_ess(s[f"rmh/{k}"].reshape(chains, -1)) for k in LATENTS]
        res["rmh"]["ess"] = float(min(e for e in ess if np.isfinite(e)))
        res["rmh"]["ess_over_n"] = res["rmh"]["ess"] / res["rmh"]["traces"]


def plot(work: Path, results: list[dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"ic": "tab:blue", "ic_plain": "tab:purple", "is": "tab:orange", "rmh": "tab:green"}
    colours = {e: c for e, c in colours.items() if e in results[0]}
    fig, axes = plt.subplots(len(results), 4, figsize=(16, 2.8 * len(results)), squeeze=False)
    for i, res in enumerate(results):
        s = np.load(work / "events" / str(i) / "samples.npz")
        for j, k in enumerate(MOMENTA):
            ax = axes[i, j]
            vals = np.concatenate([s[f"{e}/{k}"] for e in colours])
            lo, hi = np.quantile(vals, [0.001, 0.999])
            pad = 0.1 * (hi - lo) + 1e-3
            bins = np.linspace(min(lo, res["truth"][k]) - pad, max(hi, res["truth"][k]) + pad, 40)
            for eng, c in colours.items():
                ax.hist(s[f"{eng}/{k}"], bins=bins, weights=s[f"{eng}/weights"], density=True, histtype="step", color=c, lw=1.5,
                        label=f"{eng} (ESS {res[eng]['ess']:.1f} of {res[eng]['traces']})" if j == 0 else eng)  # fmt: skip
            ax.hist(s[f"ic/{k}"], bins=bins, density=True, histtype="step", color=colours["ic"], ls=":", lw=1.2,
                    label="ic proposal (unweighted)")  # fmt: skip
            ax.axvline(res["truth"][k], color="k", ls="--", lw=1, label="truth")
            ax.set_xlabel(f"{k} [GeV]")
            if j == 0:
                ax.set_ylabel(f"event {i}: {res['channel']}")
                ax.legend(fontsize=7)
        ax = axes[i, 3]
        x = np.arange(len(TAU_CHANNELS))
        width = 0.8 / (len(colours) + 1)
        for j, (eng, c) in enumerate(colours.items()):
            p = [res[eng]["channel"].get(ch, 0.0) for ch in TAU_CHANNELS]
            ax.bar(x - 0.4 + (j + 0.5) * width, p, width=width, color=c, label=eng)
        p = [res["ic_proposal"]["channel"].get(ch, 0.0) for ch in TAU_CHANNELS]
        ax.bar(x + 0.4 - 0.5 * width, p, width=width, color="none", edgecolor=colours["ic"], hatch="///",
               label="ic proposal")  # fmt: skip
        if i == 0:
            ax.legend(fontsize=7)
        ax.axvline(res["truth"]["channel"], color="k", ls="--", lw=1)
        ax.set_xticks(x, TAU_CHANNELS, rotation=60, fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("P(channel)")
    fig.tight_layout()
    out = work / "tau_posteriors.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_training(work: Path) -> Path | None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = work / "tau.csv"
    if not log.exists():
        return None
    rows = list(csv.DictReader(log.open()))
    traces = np.array([float(r["traces"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(traces, loss, lw=0.8, label="training loss")
    valid = [(float(r["traces"]), float(r["valid_loss"])) for r in rows if r["valid_loss"] not in ("", "nan")]
    if valid:
        ax.plot(*zip(*valid, strict=True), "o-", ms=3, label="validation loss")
    ax.set_xlabel("training traces")
    ax.set_ylabel("-log q (per trace)")
    ax.legend()
    fig.tight_layout()
    out = work / "tau_training.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/tauic")
    p.add_argument(
        "--simulator",
        default="tau_decay",
        choices=["tau_decay", "tau_decay_fixed_spots", "tau_decay_coarse"],
    )
    p.add_argument("--traces", type=int, default=150_000, help="prior traces in the dataset")
    p.add_argument("--workers", type=int, default=2, help="simulators making the dataset")
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--obs-norm", help="the CNN embedding's norm (probexec train --obs-norm); default the simulator's"
    )
    p.add_argument(
        "--pretrain-embedding",
        type=int,
        default=1000,
        metavar="STEPS",
        help="pretrain the image embedding on the latents first (probexec train --pretrain-embedding; 0: no)",
    )
    p.add_argument(
        "--pretrain-latents", default="channel,px,py", help="comma-separated; empty: every common one"
    )
    p.add_argument("--threads", type=int, help="CPU threads for training (default: half the cores)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--events", type=int, default=4)
    p.add_argument("--channels", nargs="+", default=["pi pi0 nu", "pi nu", "3pi nu", "e nu nu", "pi 2pi0 nu"])
    p.add_argument("--n", type=int, default=1000, help="IC and IS traces per event")
    p.add_argument("--in-flight", type=int, default=16, help="IC traces in flight")
    p.add_argument("--ic-processes", type=int, default=1, help="IC driver processes (--in-flight split)")
    p.add_argument("--ic-device", help="the device IC runs the network on (default: --device)")
    p.add_argument(
        "--network", help="a network trained apart (`probexec train`): no training here, --data only counted"
    )
    p.add_argument(
        "--init",
        help="train on from this network's weights (probexec train --init), e.g. one trained on the CPU",
    )
    p.add_argument(
        "--baseline-network",
        help="also run IC with this network (shown as ic_plain), e.g. one not pretrained",
    )
    p.add_argument("--rmh-samples", type=int, default=2000)
    p.add_argument("--rmh-burn-in", type=int, default=500)
    p.add_argument("--docs", default=str(Path(__file__).resolve().parent))
    p.add_argument(
        "--figures-only", action="store_true", help="redo summary extras and figures of a finished run"
    )
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    if args.figures_only:
        summary = json.loads((work / "summary.json").read_text())
        results = summary["events"]
    else:
        data = make_dataset(work, args)
        net = Path(args.network) if args.network else make_network(work, data, args)
        results = infer(work, net, args)
        settings = {k: v for k, v in vars(args).items() if k not in ("work", "docs", "figures_only")}
        settings["traces"] = data.num_traces  # the dataset's own count (it may have been made apart)
        summary = {"settings": settings, "events": results}
    refresh(work, results)
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    figures = [plot(work, results), plot_training(work)]
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    for f in [work / "summary.json", *figures]:
        if f is not None:
            dest = docs / (f.name if f.name.startswith("tau_") else f"tau_{f.name}")
            if dest.resolve() != f.resolve():
                shutil.copy(f, dest)
    print(f"wrote {work / 'summary.json'} and the figures; copied to {docs}")


if __name__ == "__main__":
    main()
