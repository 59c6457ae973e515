"""`probexec demo`: one simulated tau event inferred back by importance sampling (and by IC
with `--network`), or the small exact GUM model."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

from probexec.cli.common import adapt_options, add_adapt_arguments
from probexec.inference.defensive import check_defensive, check_mixture
from probexec.inference.ic_adapt import AdaptOptions

# What a prior-proposal ESS near 1 means on each tau variant: measured in docs/ic/README.md
# (`shower_noise.py`: the perfect-proposal test; `tau_decay_coarse`: the third H100 session).
_DEMO_TAU = {
    "tau_decay": (
        "  The ESS is tiny, for two reasons. 24 500 voxels make the likelihood sharp, so almost every\n"
        "  prior trace misses the observed event. And on this simulator each shower's spots are random\n"
        "  draws that no engine controls: replaying the event's own latents with fresh spots scores its\n"
        "  image with a spread of about 1 500 nats (docs/ic, shower_noise.py), so no proposal, learned or not,\n"
        "  gets past one trace here. `--model tau_decay_coarse` fixes the spots and sets a 200 MeV\n"
        "  resolution per voxel. The numbers above are that one trace, not a posterior."
    ),
    "tau_decay_fixed_spots": (
        "  The ESS is tiny. The spots are fixed, so the likelihood is a function of the latents, but\n"
        "  with a 5 MeV floor over 24 500 voxels it pins px to a few MeV, against a prior 4 GeV wide:\n"
        "  almost every prior trace misses the event. A learned proposal would have to be that precise.\n"
        "  The numbers above are that one trace, not a posterior."
    ),
    "tau_decay_coarse": (
        "  The ESS is small: few prior traces land near the event even at a 200 MeV resolution. A\n"
        "  learned proposal (`probexec train`, then `probexec posterior --engine ic`) steers more of them\n"
        "  there; more traces (`--traces`) also help. Read the figures above with their ESS in mind."
    ),
}


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.model not in _DEMO_TAU and args.network:
        raise ValueError(f"demo --network runs IC on a tau event: use it with --model {'|'.join(_DEMO_TAU)}")
    if args.defensive and not args.network:
        raise ValueError("demo --defensive mixes the prior into IC's proposal: give --network too")
    if args.adapt and not args.network:
        raise ValueError("demo --adapt fits a network's proposal to the event: give --network too")
    check_defensive(args.defensive, "--defensive")
    adapt = adapt_options(args)
    if adapt is not None:
        check_mixture(adapt.mix, args.defensive, "--adapt-mix")
    return _demo_tau(args) if args.model in _DEMO_TAU else _demo_gum(args)


def _noise_floor(simulator: str) -> float:
    """The variant's --noise-floor in GeV (the simulator's default, 5 MeV, when not set)."""
    from probexec.simulators import get_simulator

    opts = get_simulator(simulator).args
    return float(opts[opts.index("--noise-floor") + 1]) if "--noise-floor" in opts else 0.005


def _demo_tau(args: argparse.Namespace) -> int:
    """One simulated tau event is 'the observation'; importance sampling with the prior as proposal
    infers its channel and momentum; the posterior is printed next to the truth. With `--network`,
    IC with that network infers the same event with as many traces, for the ESS side by side."""
    from probexec.inference import importance_sampling, remote_pool
    from probexec.inference.prior import sample_prior
    from probexec.simulators import TAU_CHANNELS
    from probexec.trace import OBSERVE

    channels = TAU_CHANNELS
    sim = args.model
    net = None
    if args.network:  # refused before anything runs: another simulator, another image shape
        from probexec.nn import load_checkpoint
        from probexec.simulators import get_simulator

        net, _ = load_checkpoint(args.network, simulator=sim, observations=get_simulator(sim).observed)
    print(f"probexec demo: tau lepton decay seen by a 35x35x20 voxel calorimeter (C++ simulator '{sim}')")
    with remote_pool(sim, workers=args.workers) as pool:
        truth = sample_prior(pool, 1, seed=args.seed, mode="stream", progress=False)
        ids = np.array(truth.addresses.ids_named("calorimeter", OBSERVE), dtype=np.uint64)
        row = int(np.nonzero(np.isin(truth.address_id, ids))[0][0])
        image = truth.values[truth.value_offsets[row] : truth.value_offsets[row + 1]]
        deposited = float(
            truth.params[truth.param_offsets[row] : truth.param_offsets[row] + image.size].sum()
        )
        true = {k: float(truth.values_of(k)[0]) for k in ("px", "py", "pz", "channel", "visible_energy")}
        print(
            f"  the observation: one simulated event, tau -> {channels[int(true['channel'])]}, "
            f"p = ({true['px']:.2f}, {true['py']:.2f}, {true['pz']:.2f}) GeV, {deposited:.2f} GeV deposited, "
            f"{image.sum():.2f} GeV in the noisy image\n  (observation noise per voxel: N(deposit, deposit + floor^2), "
            f"floor {_noise_floor(sim):g} GeV, the simulator's --noise-floor)"
        )
        print(
            f"  importance sampling, prior as proposal, {args.traces} traces on {len(pool.models)} simulator processes ..."
        )
        post = importance_sampling(
            pool, args.traces, {"calorimeter": image}, seed=args.seed + 1, progress=True
        )
    _print_tau_posterior(post, true)
    if post.ess < 5 or (sim == "tau_decay_coarse" and post.ess < 0.05 * post.num_traces):
        print(_DEMO_TAU[sim])
    if net is not None:
        _demo_tau_ic(args, net, sim, image, true, post)
    return 0


def _demo_tau_ic(
    args: argparse.Namespace, net: Any, sim: str, image: np.ndarray, true: dict, prior: Any
) -> None:
    """IC on the demo's event with as many traces as the prior had, and with `--adapt`, IC from a
    copy of the network fitted to the event first; each ESS and evidence beside the prior's."""
    from probexec.inference import remote_pool
    from probexec.inference.ic import ic_posterior

    adapt = adapt_options(args)
    plan: list[tuple[str, AdaptOptions | None]] = [("IC", None)]
    if adapt is not None:
        plan.append(("adapted IC", adapt))
    mixed = f", {args.defensive:g} of them from the prior (--defensive)" if args.defensive else ""
    runs: list[tuple[str, Any]] = []
    with remote_pool(sim, workers=16) as pool:
        for label, options in plan:
            what = "inference compilation"
            if options is not None:
                trained = f", {options.mix:g} of them from the trained network" if options.mix else ""
                what += (
                    f" from a copy of the network adapted to the event first ({options.rounds} "
                    f"round{'' if options.rounds == 1 else 's'} of "
                    f"{options.traces} traces{trained})"
                )
            print(f"  {what} with {args.network}, {args.traces} traces{mixed}, 16 simulators in flight ...")
            ic = ic_posterior(
                net,
                pool.models,
                args.traces,
                {"calorimeter": image},
                latents=["px", "py", "pz", "channel"],
                seed=args.seed + 2 + len(runs),
                progress=True,
                defensive=args.defensive,
                adapt=options,
            )
            _print_tau_posterior(ic, true)
            runs.append((label, ic))
    for label, ic in runs:
        print(
            f"  at {args.traces} traces each: ESS {ic.ess:.1f} with {label} against {prior.ess:.1f} with the prior "
            f"({ic.ess / max(prior.ess, 1e-9):.2f}x)"
        )
    for label, ic in runs:
        ic_z, is_z = ic.log_evidence, prior.log_evidence  # never None for these two engines
        assert ic_z is not None and is_z is not None
        gap = ic_z - is_z
        print(
            f"  log p(y) estimated: {ic_z:.2f} by {label}, {is_z:.2f} by the prior"
            + (
                f"\n  the prior's is {gap:.1f} nats lower: its traces missed a part of the posterior that {label}'s "
                "reached, so its ESS overstates what it knows"
                if gap > 3
                else f"\n  {label}'s is {-gap:.1f} nats lower: its traces missed a part of the posterior that the "
                "prior's reached, so its ESS overstates what it knows"
                if gap < -3
                else ""
            )
        )


def _print_tau_posterior(post: Any, true: dict[str, float]) -> None:
    """ESS, the three most probable channels and the momenta's mean and std, next to the truth."""
    from probexec.simulators import TAU_CHANNELS as channels

    print(
        f"  {post.num_traces} traces in {post.seconds:.1f} s, ESS {post.ess:.1f} "
        f"(ESS/N {post.ess / post.num_traces:.2%})"
    )
    probs = post["channel"].probabilities()
    best = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
    print(
        "  channel posterior: "
        + ", ".join(f"P({channels[int(k)]}) = {p:.3f}" for k, p in best)
        + f"   (truth: {channels[int(true['channel'])]})"
    )
    for name in ("px", "py", "pz"):
        e = post[name]
        print(f"  {name}: posterior mean {e.mean:+.2f}, std {e.stddev:.2f}   (truth {true[name]:+.2f})")


def _demo_gum(args: argparse.Namespace) -> int:
    """Prior sampling of the GUM model through both paths, and the posterior mean it implies."""
    from probexec.remote import RemoteModel

    n_draw, n_stream = args.per_draw_traces, args.stream_traces
    observe = {"obs": [8.0, 9.0]}
    print("probexec demo: Gaussian with unknown mean (C++ simulator 'gum', driven over ZeroMQ ipc)")
    print("  model: mu ~ N(1, sqrt 5); obs ~ N(mu, sqrt 2) twice; observed [8, 9]")
    with RemoteModel("gum") as model:
        print(
            f"  started {model.address} (pid {model.pid}), protocol v{model.peer_version}, "
            f"capabilities: {', '.join(model.capabilities)}"
        )
        t0 = time.perf_counter()
        per_draw = model.prior(n_draw, observe=observe, seed=1, mode="per_draw")
        t_draw = time.perf_counter() - t0
        t0 = time.perf_counter()
        stream = model.prior(n_stream, observe=observe, seed=2, mode="stream")
        t_stream = time.perf_counter() - t0
    for label, batch, secs in (("per-draw", per_draw, t_draw), ("streaming", stream, t_stream)):
        mu = batch.values_of("mu")
        print(
            f"  {label:9s}: {batch.num_traces:7d} traces in {secs:6.2f} s = {batch.num_traces / secs:9.0f} traces/s;"
            f" prior mu mean {mu.mean():+.3f} (exact +1.000), std {mu.std():.3f} (exact {math.sqrt(5):.3f})"
        )
    mu = stream.values_of("mu")
    logw = stream.log_likelihood()
    w = np.exp(logw - logw.max())
    w /= w.sum()
    ess = 1.0 / np.sum(w**2)
    mean = float(np.sum(w * mu))
    std = float(np.sqrt(np.sum(w * (mu - mean) ** 2)))
    print(
        f"  importance sampling with the prior as proposal ({stream.num_traces} streamed traces, ESS {ess:.0f}):"
    )
    print(f"    posterior mu mean {mean:.3f} (exact 7.250), std {std:.3f} (exact 0.913)")
    first = stream.trace(0)
    print(
        f"  one trace: {first.length} variables, log prior {first.log_prior:.3f}, "
        f"log likelihood {first.log_likelihood:.3f}"
    )
    for v in first.variables:
        print(
            f"    {v.kind:8s} {v.name or '-':5s} id {v.address_id:016x} #{v.instance} value "
            f"{np.round(v.value.numpy(), 3).tolist() if v.value is not None else '-'} at {v.address}"
        )
    return 0


def add_parsers(sub: Any) -> None:
    """Adds `probexec demo` and its options."""
    s = sub.add_parser("demo", help="a short end-to-end run: tau decay inference (default) or the GUM model")
    s.add_argument(
        "--model",
        choices=[*_DEMO_TAU, "gum"],
        default="tau_decay",
        help="tau_decay (default); its variants with fixed shower spots, and with a 200 MeV detector "
        "resolution too, where the posterior is not one trace; or the small exact GUM model",
    )
    s.add_argument("--traces", type=int, default=3000, help="tau_decay*: importance sampling traces")
    s.add_argument(
        "--network",
        help="tau_decay*: also infer the event by IC with this network (`probexec train`), as many traces",
    )
    s.add_argument(
        "--defensive",
        type=float,
        default=0.0,
        metavar="EPS",
        help="with --network: draw this share of IC's traces from the prior (see `probexec posterior --defensive`)",
    )
    add_adapt_arguments(s, "with --network: ")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--per-draw-traces", type=int, default=2000, help="gum: traces per draw")
    s.add_argument("--stream-traces", type=int, default=200_000, help="gum: streamed traces")
    s.set_defaults(func=_cmd_demo)
