"""The `probexec` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from probexec.cores import usable_cores
from probexec.inference.defensive import check_defensive, check_mixture
from probexec.inference.ic_adapt import AdaptOptions
from probexec.inference.strata import DEFAULT_KEEP_NATS, POOLED_ENGINES


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def strict_json(obj: Any) -> str:
    """One line of strict JSON: NaN and infinities (no validation set, an R-hat of chains that
    never mixed) become null, which every JSON parser reads; Python's NaN tokens are not JSON."""
    return json.dumps(_finite_or_none(obj), allow_nan=False)


def _cmd_simulators(args: argparse.Namespace) -> int:
    from probexec.simulators import SIMULATORS

    rows = [s for s in SIMULATORS.values() if args.all or not s.test_only]
    if args.json:
        print(
            json.dumps(
                {
                    s.name: {
                        "latents": list(s.latents),
                        "observed": {k: list(v) for k, v in s.observed.items()},
                        "description": s.description,
                    }
                    for s in rows
                },
                indent=2,
            )
        )
        return 0
    for s in rows:
        obs = ", ".join(f"{k}{list(v) if v else ''}" for k, v in s.observed.items())
        lat = (
            ", ".join(s.latents)
            if len(s.latents) <= 6
            else f"{s.latents[0]} … {s.latents[-1]} ({len(s.latents)})"
        )
        print(f"{s.name:16s} latents: {lat}\n{'':16s} observed: {obs}\n{'':16s} {s.description}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from probexec.simulators import get_simulator

    exe = str(get_simulator(args.simulator).path())
    argv = [exe, "--address", args.address, "--timeout", str(args.timeout)]
    if args.idle_timeout > 0:
        argv += ["--idle-timeout", str(args.idle_timeout)]
    if args.quiet:
        argv.append("--quiet")
    os.execv(exe, argv)
    return 0  # not reached


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
    adapt = _adapt_options(args)
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

    adapt = _adapt_options(args)
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


def _observations(args: argparse.Namespace, info: Any) -> dict[str, np.ndarray]:
    from probexec.conditioning import check_observations, load_observe_file, parse_observe_items

    observe: dict[str, Any] = dict(info.default_observations)
    if args.observe_file:
        observe.update(load_observe_file(args.observe_file))
    observe.update(parse_observe_items(args.observe or []))
    # Observations proper, and the latents: a named sample can be observed too.
    declared: dict[str, Any] = {**{name: None for name in info.latents}, **info.observed}
    return check_observations(observe, declared, info.name)


def _cmd_prior(args: argparse.Namespace) -> int:
    """Prior traces to a dataset directory (sharded, for training) or, for `-o FILE.npz`, to one
    trace file."""
    from pathlib import Path

    from probexec.data import DatasetWriter
    from probexec.inference.pool import remote_pool
    from probexec.inference.prior import sample_prior
    from probexec.simulators import get_simulator

    get_simulator(args.simulator)
    if args.n < 1:
        raise ValueError(f"-n must be at least 1, got {args.n}")
    out = Path(args.output)
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"simulator": args.simulator, "num_traces": args.n}
    with remote_pool(args.simulator, workers=args.workers) as pool:
        if out.suffix == ".npz":
            out.parent.mkdir(parents=True, exist_ok=True)
            batch = sample_prior(pool, args.n, seed=args.seed, progress=not args.quiet)
            batch.save(out)
            summary.update(file=str(out), bytes=out.stat().st_size, addresses=len(batch.addresses))
        else:
            with DatasetWriter(out, args.simulator, shard_traces=args.shard_traces) as writer:
                sample_prior(pool, args.n, seed=args.seed, progress=not args.quiet, sink=writer.add)
            st = writer.stats
            summary.update(
                dataset=str(out),
                shards=st.shards,
                bytes=st.bytes,
                bytes_per_trace=st.bytes_per_trace,
                write_traces_per_s=st.traces_per_second,
                addresses=len(pool.addresses),
            )
    secs = time.perf_counter() - t0
    summary["seconds"] = secs
    if out.suffix != ".npz":
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(strict_json(summary))
    else:
        where = (
            summary.get("file")
            or f"{out} ({summary['shards']} shards, {summary['bytes_per_trace']:.0f} bytes/trace)"
        )
        print(f"wrote {args.n} traces to {where} in {secs:.1f} s")
    return 0


def _cmd_posterior(args: argparse.Namespace) -> int:
    from probexec.inference.pool import PoolExhaustedError
    from probexec.inference.rmh import save_chain_states
    from probexec.simulators import get_simulator

    info = get_simulator(args.simulator)
    if args.n < 1:
        raise ValueError(f"-n must be at least 1, got {args.n}")
    if args.defensive and args.engine != "ic":
        raise ValueError(
            f"--defensive mixes the prior into a network's proposal: it is for --engine ic, not {args.engine}"
        )
    check_defensive(args.defensive, "--defensive")
    adapt = _adapt_options(args)  # checked before any simulator starts
    if adapt is not None:
        check_mixture(adapt.mix, args.defensive, "--adapt-mix")
    if args.events:
        return _posterior_events(args, info)
    observe = _observations(args, info)  # checked before any simulator starts
    try:
        with _posterior_runner(args, info, [observe], single=True) as run:
            posterior = run(observe, args.seed)
    except PoolExhaustedError as e:
        print(f"probexec: {e}", file=sys.stderr)
        return 1
    out = posterior.save(args.output)
    if args.engine == "rmh":
        save_chain_states(posterior.chain_states or [], out / "rmh_state.npz")
    _note_prior_fallbacks(args, posterior)
    return _report_posterior(args, posterior, out)


def _posterior_events(args: argparse.Namespace, info: Any) -> int:
    """`--events FILE`: one posterior per event, the simulators (and for IC the network and its
    driver processes) started once for all of them: amortised inference pays its start-up once."""
    from pathlib import Path

    from probexec.conditioning import load_events
    from probexec.inference.pool import PoolExhaustedError

    if args.resume:
        raise ValueError("--resume continues one event's RMH chains; it does not go with --events")
    events, truths = load_events(args.events, info.name, info.observed, list(info.latents))
    base = _observations(args, info)  # --observe and --observe-file hold for every event
    events = [{**base, **e} for e in events]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        with (
            _posterior_runner(args, info, events, single=False) as run,
            open(out / "events.jsonl", "w") as log,
        ):
            for i, (observe, truth) in enumerate(zip(events, truths, strict=True)):
                posterior = run(observe, None if args.seed is None else args.seed + i)
                where = posterior.save(out / f"event_{i:05d}")
                _note_prior_fallbacks(args, posterior)
                row = {"event": i, "truth": truth, "output": str(where), **posterior.summary()}
                log.write(strict_json(row) + "\n")
                log.flush()
                if args.json:
                    print(strict_json(row), flush=True)
                elif not args.quiet:
                    print(_event_line(i, args.engine, posterior, truth), flush=True)
    except PoolExhaustedError as e:
        print(f"probexec: {e}", file=sys.stderr)
        return 1
    if not args.json:
        secs = time.perf_counter() - t0
        print(f"{len(events)} events in {secs:.1f} s; wrote {out}/event_*/ and {out / 'events.jsonl'}")
    return 0


def _event_line(i: int, engine: str, posterior: Any, truth: dict[str, Any]) -> str:
    """One event's scalar latents as mean ± std, with the truth where the events file had it."""
    shown = []
    for name, s in posterior.summary()["latents"].items():
        if isinstance(s["mean"], float):
            t = truth.get(name)
            shown.append(
                f"{name} {s['mean']:.3g} ± {s['std']:.3g}"
                + (f" (truth {t:.3g})" if isinstance(t, float) else "")
            )
    return (
        f"event {i}: {engine} {posterior.num_traces} traces, ESS {posterior.ess:.0f}, {posterior.seconds:.1f} s; "
        + ", ".join(shown)
    )


@contextlib.contextmanager
def _posterior_runner(
    args: argparse.Namespace, info: Any, events: list[dict[str, np.ndarray]], single: bool
) -> Iterator[Callable[[dict[str, np.ndarray], int | None], Any]]:
    """`run(observe, seed) -> Posterior` for the chosen engine, with its simulators (for IC also the
    network, and driver processes) started on entering and stopped on leaving, so that every event
    run within shares them."""
    from probexec.inference import run_engine
    from probexec.inference.pool import remote_pool

    stratum = _stratum(args)
    if args.engine == "ic":
        strata = 1
        if stratum is not None:
            stratum = (stratum[0], _stratum_values(info, *stratum))
            strata = len(stratum[1] or [])
        # Strata are runs of their own: drivers started per run would start once per value.
        with _ic_runner(args, info, events, single and stratum is None, strata) as run:
            yield run if stratum is None else _stratified_runner(args, info, stratum, run)
        return
    options: dict[str, Any] = {"progress": not args.quiet, "latents": list(info.latents)}
    if args.engine == "rmh":
        workers = args.workers or min(args.chains, usable_cores())
        options.update(chains=args.chains, burn_in=args.burn_in, thinning=args.thinning, resume=args.resume)
    elif args.engine == "smc":
        workers = args.workers or usable_cores()
        options.update(moves=args.moves, ess_fraction=args.ess_fraction)
    else:
        workers = args.workers or usable_cores()
        options.update(likelihood_importance=args.likelihood_importance)
    if stratum is not None:
        options.update(stratify=stratum, stratify_pilot=args.stratify_pilot, stratify_keep=_keep_nats(args))
    with remote_pool(args.simulator, workers=workers) as pool:
        yield lambda observe, seed: run_engine(pool, args.engine, args.n, observe, seed=seed, **options)


def _stratum(args: argparse.Namespace) -> tuple[str, list[float] | None] | None:
    """`--stratify NAME[=V1,V2,...]` as (name, values or None), refused where it cannot run."""
    if args.stratify_pilot:
        if not args.stratify:
            raise ValueError("--stratify-pilot is the pilot of a stratified run: give --stratify too")
        if args.engine not in POOLED_ENGINES:
            raise ValueError(
                f"--stratify-pilot pools each value's pilot with its later traces, which {args.engine} cannot: "
                f"use it with --engine {', '.join(POOLED_ENGINES)}"
            )
        if not 0 < args.stratify_pilot < args.n:
            raise ValueError(
                f"--stratify-pilot must be between 1 and -n ({args.n}) - 1, not {args.stratify_pilot}"
            )
    if args.stratify_keep is not None and not args.stratify_pilot:
        raise ValueError(
            "--stratify-keep says which values the pilot keeps in the running: give --stratify-pilot too"
        )
    if not _keep_nats(args) >= 0:
        raise ValueError(f"--stratify-keep is a number of nats, 0 or more; got {args.stratify_keep}")
    if not args.stratify:
        return None
    if args.engine == "rmh":
        raise ValueError(
            "--stratify weighs each value's run by its evidence, which rmh does not estimate: "
            "use it with --engine is, smc or ic"
        )
    if args.adapt:
        raise ValueError("--adapt is not done per stratum: leave out --adapt or --stratify")
    name, sep, text = args.stratify.partition("=")
    try:
        values = [float(v) for v in text.split(",")] if sep else None
    except ValueError:
        raise ValueError(f"--stratify NAME=V1,V2,...: cannot read {text!r} as numbers") from None
    return name.strip(), values


def _keep_nats(args: argparse.Namespace) -> float:
    return DEFAULT_KEEP_NATS if args.stratify_keep is None else args.stratify_keep


def _stratified_runner(
    args: argparse.Namespace,
    info: Any,
    stratum: tuple[str, list[float] | None],
    run: Callable[..., Any],
) -> Callable[[dict[str, np.ndarray], int | None], Any]:
    """`run` once per value of the stratum (every value its prior allows unless given), with
    that value observed, combined by evidence."""
    from probexec.inference.strata import stratified

    name, values = stratum
    return lambda observe, seed: stratified(
        lambda obs, s, n: run(dict(obs), s, n), observe, name, values, num_traces=args.n,
        pilot=args.stratify_pilot, keep_nats=_keep_nats(args), engine=args.engine, seed=seed,
        latents=list(info.latents),
    )  # fmt: skip


def _stratum_values(info: Any, name: str, values: list[float] | None) -> list[float]:
    """The values given, or every one the prior allows, read here from a simulator of our own:
    an IC run's simulators are in its driver processes, and how many values there are sizes them."""
    from probexec.inference.strata import stratum_values
    from probexec.remote import RemoteModel

    if values is not None:
        return values
    with RemoteModel(info.name) as model:
        return stratum_values(model, name)


def _adapt_options(args: argparse.Namespace) -> AdaptOptions | None:
    """`--adapt ROUNDS` and its settings as `AdaptOptions`, or None without it."""
    if not args.adapt:
        return None
    if getattr(args, "engine", "ic") != "ic":  # the demo has no --engine: its --adapt is IC's
        raise ValueError(
            f"--adapt fits a network's proposal to the event: it is for --engine ic, not {args.engine}"
        )
    return AdaptOptions(
        rounds=args.adapt,
        traces=args.adapt_traces,
        steps=args.adapt_steps,
        lr=args.adapt_lr,
        ess_share=args.adapt_ess_share,
        mix=args.adapt_mix,
    )


@contextlib.contextmanager
def _ic_runner(
    args: argparse.Namespace, info: Any, events: list[dict[str, np.ndarray]], single: bool, strata: int = 1
) -> Iterator[Callable[[dict[str, np.ndarray], int | None], Any]]:
    """Importance sampling with a trained proposal network, many simulators in flight: in this
    process, or over driver processes (`--processes`). `strata`: runs of `-n` traces per event
    (`--stratify`), which `--processes auto` counts."""
    from probexec.inference.ic import ic_posterior
    from probexec.inference.ic_drivers import ICDrivers, auto_processes, ic_posterior_processes
    from probexec.inference.pool import remote_pool
    from probexec.nn import load_checkpoint

    if not args.network:
        raise ValueError("--engine ic needs --network NET (made by `probexec train`)")
    if args.processes == "auto":
        adapt = _adapt_options(args)
        per_event = args.n + (adapt.rounds * adapt.traces if adapt is not None else 0)
        processes = auto_processes(per_event * strata * len(events), usable_cores())
    else:
        processes = int(args.processes) if args.processes.isdigit() else 0
        if processes < 1:
            raise ValueError(
                f"--processes is a number of driver processes (1 or more) or 'auto', not {args.processes!r}"
            )
    shapes = {name: np.shape(v) for name, v in events[0].items()}
    shapes.update({n: s for n, s in info.observed.items() if n in events[0]})
    device = args.device or "cpu"
    # Loaded here also when driver processes load their own copy: a mismatch is reported once.
    net, _ = load_checkpoint(args.network, simulator=info.name, observations=shapes, device=device)
    in_flight = args.workers or (16 if processes == 1 else 32 * processes)
    per_driver = -(-in_flight // processes)
    common = {
        "latents": list(info.latents),
        "progress": not args.quiet,
        "quorum": args.quorum,
        "defensive": args.defensive,
        "adapt": _adapt_options(args),
    }
    if processes > 1 and single:  # one event: its start-up is part of its call (and its timeline)
        yield lambda observe, seed: ic_posterior_processes(
            args.network, info.name, args.n, observe, processes=processes, in_flight=per_driver,
            seed=seed, device=device, **common,
        )  # fmt: skip
    elif processes > 1:
        del net  # each driver has its own copy
        with ICDrivers(
            args.network, info.name, processes=processes, in_flight=per_driver, device=device
        ) as d:
            yield lambda observe, seed, n=args.n: d.posterior(n, observe, seed=seed, **common)
    else:
        with remote_pool(info.name, workers=in_flight) as pool:
            yield lambda observe, seed, n=args.n: ic_posterior(
                net, pool.models, n, observe, seed=seed, device=device, **common
            )


def _note_prior_fallbacks(args: argparse.Namespace, posterior: Any) -> None:
    if posterior.stats.get("prior_fallbacks") and not args.quiet:
        print(
            f"note: {posterior.stats['prior_fallbacks']} draws at addresses the network has not seen were drawn from the prior: "
            + ", ".join(posterior.stats["unknown_addresses"][:10]),
            file=sys.stderr,
        )


def _report_posterior(args: argparse.Namespace, posterior: Any, out: Any) -> int:
    summary = posterior.summary()
    if args.json:
        print(strict_json(summary))
    else:
        evidence = summary.get("log_evidence")
        print(
            f"{args.engine}: {summary['num_traces']} traces, ESS {summary['ess']:.0f}, {summary['seconds']:.1f} s"
            + (f", log p(y) {evidence:.3f}" if evidence is not None else "")
        )
        for name, s in summary["latents"].items():
            mean, std = (f"{v:.6g}" if isinstance(v, float) else v for v in (s["mean"], s["std"]))
            print(f"  {name}: mean {mean}, std {std}")
        for line in _strata_lines(summary):
            print(line)
        print(f"wrote {out}")
    return 0


def _strata_lines(summary: dict[str, Any]) -> list[str]:
    """A stratified run's values as a table, most probable first: what each value's run found
    is what a user of `--stratify` looks at first."""
    strata = summary.get("strata")
    if not strata:
        return []
    pilot = "pilot_probability" in next(iter(strata.values()))
    lines = [
        f"  {summary['stratum']:>10} {'P':>9} {'log p(y, value)':>16} {'ESS':>8} {'traces':>7}"
        + (f" {'pilot P':>9}" if pilot else "")
    ]
    for value, s in sorted(strata.items(), key=lambda kv: -kv[1].get("probability", 0.0)):
        lines.append(
            f"  {value:>10} {s.get('probability', 0.0):9.4f} {s.get('log_evidence', -math.inf):16.3f}"
            f" {s.get('ess', 0.0):8.1f} {s.get('traces', 0):7d}"
            + (f" {s.get('pilot_probability', 0.0):9.4f}" if pilot else "")
            + (f"  ({s['error']})" if "error" in s else "")
        )
    return lines


def _cmd_train(args: argparse.Namespace) -> int:
    """Trains a proposal network offline (--data) or online (fresh traces from simulators)."""
    from pathlib import Path

    from probexec.data import TraceDataset
    from probexec.inference.pool import remote_pool
    from probexec.nn import TrainOptions, train
    from probexec.nn.training import ALL_OBSERVATIONS, init_distributed
    from probexec.simulators import get_simulator

    info = get_simulator(args.simulator)
    device = args.device or "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: this torch has no CUDA device")
    rank, world = init_distributed(device)
    if world > 1 and device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    dataset = TraceDataset(Path(args.data), on_corrupt=args.on_corrupt) if args.data else None
    if dataset is not None and dataset.simulator != info.name:
        raise ValueError(f"{args.data} holds traces of {dataset.simulator!r}, not {info.name!r}")
    valid = TraceDataset(Path(args.valid), on_corrupt=args.on_corrupt) if args.valid else None
    out = Path(args.output)
    start = _initial_network(args, info.name, dataset, out, device, rank) if args.init else None
    overrides: dict = {k: v for k, v in (("hidden", args.hidden), ("obs_dim", args.obs_dim)) if v is not None}
    if args.obs_norm is not None:
        overrides["observations"] = {ALL_OBSERVATIONS: {"norm": args.obs_norm}}
    options = TrainOptions(
        batch_size=args.batch_size,
        lr=args.lr,
        epochs=args.epochs,
        traces=args.traces,
        device=device,
        seed=args.seed,
        cosine=args.cosine,
        progress=not args.quiet,
        config_overrides=overrides,
        threads=args.threads,
        read_workers=args.read_workers,
        batch_process=args.batch_process,
        types_per_step=args.types_per_step,
        pretrain_steps=args.pretrain_embedding,
        pretrain_latents=tuple(n for n in args.pretrain_latents.split(",") if n)
        if args.pretrain_latents
        else None,
        pretrain_traces=args.pretrain_traces,
        conv_layout=args.conv_layout,
        tensorboard=args.tensorboard,
    )
    log = Path(args.log) if args.log else out.with_suffix(".csv")
    if dataset is None and args.traces is None:
        raise ValueError("online training (no --data) needs --traces")
    # Online training draws from a simulator pool; offline needs none.
    pools = remote_pool(info.name, workers=args.workers) if dataset is None else contextlib.nullcontext()
    with pools as pool:
        result = train(
            info.name,
            dataset=dataset,
            pool=pool,
            output=out,
            options=options,
            valid=valid,
            network=start,
            resume=args.resume,
            log_path=log,
        )
    if rank != 0:
        return 0
    summary = {
        "simulator": info.name,
        "network": str(out),
        "init": args.init,
        "log": str(log),
        "tensorboard": args.tensorboard,
        "steps": result.steps,
        "traces": result.traces,
        "loss": result.final_loss,
        "valid_loss": result.valid_loss,
        "traces_per_s": result.traces_per_second,
        "wait_fraction": result.wait_fraction,
        "seconds": result.seconds,
        "world_size": world,
        "addresses": len(result.network.sites),
        "parameters": sum(p.numel() for p in result.network.parameters()),
        "pretrain": result.pretrain,
    }
    if args.json:
        print(strict_json(summary))
    else:
        print(
            f"trained on {result.traces} traces in {result.seconds:.1f} s ({result.traces_per_second:.0f} traces/s, "
            f"{100 * result.wait_fraction:.0f}% waiting for data); loss {result.final_loss:.4f}; wrote {out}"
        )
        if result.pretrain:
            from probexec.nn.pretrain import PretrainReport

            print(PretrainReport.from_dict(result.pretrain).summary())
    return 0


def _initial_network(
    args: argparse.Namespace, simulator: str, dataset: Any, out: Any, device: str, rank: int = 0
) -> Any:
    """`train --init NET`: NET's weights, observation scaling and address layers, to go on
    training with a new optimizer and schedule (unlike --resume, which continues NET's own run
    where it stopped). What would change NET's shape, or overwrite it, is refused. Under
    torchrun every rank loads NET and only the first warns."""
    from pathlib import Path

    from probexec.nn import load_checkpoint

    init = Path(args.init)
    if args.resume:
        raise ValueError(
            "--init starts a new run from a network's weights; --resume continues the run at -o: give one"
        )
    clash = [
        flag
        for flag, value in (
            ("--hidden", args.hidden),
            ("--obs-dim", args.obs_dim),
            ("--obs-norm", args.obs_norm),
            ("--pretrain-embedding", args.pretrain_embedding or None),
        )
        if value is not None
    ]
    if clash:
        raise ValueError(f"--init takes the network's shape from {init}; drop {', '.join(clash)}")
    if init.exists() and out.exists() and init.resolve() == out.resolve():
        raise ValueError(f"-o {out} is the --init network: training would overwrite it; give another -o")
    shapes = {k: tuple(v["shape"]) for k, v in dataset.observations.items()} if dataset is not None else None
    net, _ = load_checkpoint(init, simulator=simulator, observations=shapes, device=device)
    if dataset is not None:
        keys = {site.key for t in dataset.trace_types().values() for site in t.layout.sites}
        known = len(keys & set(net.sites))
        if known < len(keys) and rank == 0:
            # Address ids follow the simulator's functions and code offsets, so a simulator built
            # from other code (or by another compiler) names its draws anew.
            print(
                f"warning: {init} has layers for {known} of the {len(keys)} addresses in {args.data}; "
                "the others start untrained",
                file=sys.stderr,
            )
    return net


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """Per address, how much better than the prior a network scores held-out prior traces."""
    import json

    import torch

    from probexec.data import TraceDataset
    from probexec.nn import load_checkpoint
    from probexec.nn.diagnostics import address_gains, format_report

    data = TraceDataset(args.data, on_corrupt=args.on_corrupt)
    net, _ = load_checkpoint(
        args.network,
        simulator=data.simulator,
        observations={k: tuple(v["shape"]) for k, v in data.observations.items()},
        device=args.device,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    report = address_gains(net, data, args.traces, seed=args.seed, device=args.device)
    if report.traces == 0:
        print(
            f"error: none of the traces in {args.data} are of a type the network has layers for",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(format_report(report, args.top))
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    """Events for plotting: every named quantity per event (latents, tags, observations; for an
    observation also its noiseless mean), NaN where an event lacks it."""
    from pathlib import Path

    from probexec.inference.pool import remote_pool
    from probexec.inference.prior import sample_prior
    from probexec.simulators import get_simulator
    from probexec.trace import OBSERVE

    info = get_simulator(args.simulator)
    if args.n < 1:
        raise ValueError(f"-n must be at least 1, got {args.n}")
    t0 = time.perf_counter()
    with remote_pool(args.simulator, workers=args.workers) as pool:
        batch = sample_prior(pool, args.n, seed=args.seed, progress=not args.quiet)
    arrays: dict[str, np.ndarray] = {}
    for name in batch.addresses.names():
        arrays[name] = batch.values_of(name)
        if name in batch.addresses.names(kind=OBSERVE):
            arrays[f"{name}__mean"] = batch.means_of(name)
    shapes = {name: list(shape) for name, shape in info.observed.items()}
    arrays["__meta__"] = np.array(
        json.dumps({"simulator": info.name, "seed": args.seed, "observed_shapes": shapes})
    )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    secs = time.perf_counter() - t0
    print(
        f"wrote {batch.num_traces} events of {info.name} to {out} ({secs:.1f} s, {batch.num_traces / secs:.0f} events/s)"
    )
    return 0


def _add_adapt_arguments(parser: argparse.ArgumentParser, scope: str) -> None:
    """`--adapt` and its settings, for `posterior` and `demo` alike; `scope` begins each help line."""
    parser.add_argument(
        "--adapt",
        type=int,
        default=0,
        metavar="ROUNDS",
        help=f"{scope}before the posterior's traces, adapt a copy of the network to each event over this many "
        "rounds of --adapt-traces IC traces, each followed by --adapt-steps gradient steps on the "
        "weighted traces of the rounds so far (default 0: none). The weights stay exact; the rounds' traces "
        "are spent on the adaptation and not part of the posterior",
    )
    parser.add_argument(
        "--adapt-traces", type=int, default=AdaptOptions.traces, help=f"{scope}traces per adaptation round"
    )
    parser.add_argument(
        "--adapt-steps",
        type=int,
        default=AdaptOptions.steps,
        help=f"{scope}Adam steps after each adaptation round",
    )
    parser.add_argument(
        "--adapt-lr", type=float, default=AdaptOptions.lr, help=f"{scope}the adaptation's learning rate"
    )
    parser.add_argument(
        "--adapt-ess-share",
        type=float,
        default=AdaptOptions.ess_share,
        help=f"{scope}the fit's weights (every round's traces so far) are tempered, w^beta with the largest "
        "beta <= 1 that keeps their ESS at this share of those traces, so that rounds with an ESS of a few "
        "do not pull the proposal onto those few traces",
    )
    parser.add_argument(
        "--adapt-mix",
        type=float,
        default=AdaptOptions.mix,
        metavar="SHARE",
        help=f"{scope}from the second adaptation round on, this share of the traces comes from the network as "
        "trained, and every trace is weighted against the mixture of it and the adapted one, so that a fit "
        "that narrowed the proposal loses no part of the posterior the trained network reaches "
        f"(default {AdaptOptions.mix:g})",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="probexec", description="Bayesian inference inside C++ simulators")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulators", help="list the built-in simulators with their latent and observed names")
    s.add_argument("--json", action="store_true")
    s.add_argument("--all", action="store_true", help="include the test-only models")
    s.set_defaults(func=_cmd_simulators)

    s = sub.add_parser("serve", help="run a built-in simulator's server in the foreground")
    s.add_argument("simulator")
    s.add_argument("--address", required=True, help="ipc://PATH or tcp://HOST:PORT to bind")
    s.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the engine inside a trace"
    )
    s.add_argument(
        "--idle-timeout",
        type=float,
        default=0.0,
        help="exit after this many seconds with no request between traces, so a server whose "
        "engine died does not hold its cores (0, the default: wait for ever)",
    )
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_serve)

    s = sub.add_parser("prior", help="write a dataset of prior traces")
    s.add_argument("simulator")
    s.add_argument("-n", type=int, required=True, help="number of traces")
    s.add_argument("-o", "--output", required=True, help="output directory")
    s.add_argument("--workers", type=int, default=None, help="simulator processes (default: one per core)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument(
        "--shard-traces",
        type=int,
        default=1000,
        help="dataset: traces per shard file (0: one shard per simulator chunk)",
    )
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_prior)

    s = sub.add_parser("posterior", help="posterior inference on a built-in simulator")
    s.add_argument("simulator")
    s.add_argument("--engine", choices=["is", "rmh", "smc", "ic"], default="is")
    s.add_argument("--network", help="ic: the proposal network (from `probexec train`)")
    s.add_argument("--device", default=None, help="ic: cpu or cuda")
    s.add_argument(
        "--processes",
        default="auto",
        help="ic: driver processes, each with its share of --workers simulators (one driver's Python "
        "runs on one core); auto (default): one per 4 usable cores, at most 8, each with at least "
        "1 000 of the traces",
    )
    s.add_argument(
        "--quorum",
        type=float,
        default=1.0,
        help="ic: the share of a driver's traces in flight each network round waits for (default 1: "
        "all, so a seed fixes the result); below 1, simulators still computing join the next round",
    )
    s.add_argument(
        "--defensive",
        type=float,
        default=0.0,
        metavar="EPS",
        help="ic: draw this share of the traces from the prior and weight every trace against the "
        "mixture (1-EPS) q + EPS p, so that no trace weighs more than 1/EPS times its likelihood and "
        "an event the network reads badly costs at most about 1/EPS times the variance of sampling "
        "from the prior (default 0: plain IC; e.g. 0.1)",
    )
    _add_adapt_arguments(s, "ic: ")
    s.add_argument(
        "-n",
        type=int,
        required=True,
        help="traces (is, ic), kept samples over all chains (rmh) or particles (smc)",
    )
    s.add_argument(
        "--observe", action="append", metavar="NAME=VALUE", help="e.g. obs=8,9 or obs=[8,9] (repeatable)"
    )
    s.add_argument("--observe-file", help=".npz or .json of observations by name")
    s.add_argument(
        "--events",
        metavar="FILE.npz",
        help="one posterior per event of FILE (as `probexec simulate` writes: each observation with "
        "the events on its first axis), the simulators and any IC drivers started once: -o DIR gets "
        "DIR/event_NNNNN/ per event and DIR/events.jsonl (with each event's true latents if FILE has "
        "them); event i gets seed --seed + i",
    )
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--chains", type=int, default=4)
    s.add_argument("--burn-in", type=int, default=500)
    s.add_argument("--thinning", type=int, default=1)
    s.add_argument("--resume", help="continue RMH chains from a previous output directory")
    s.add_argument("--likelihood-importance", type=float, default=1.0)
    s.add_argument(
        "--moves",
        type=int,
        default=5,
        help="smc: MH sweeps per particle and stage (a sweep: one step per controlled draw)",
    )
    s.add_argument(
        "--ess-fraction",
        type=float,
        default=0.5,
        help="smc: each stage's temperature keeps this share of the particles' ESS",
    )
    s.add_argument(
        "--stratify",
        metavar="NAME[=V1,V2,...]",
        help="is, smc, ic: one run per value of this discrete latent (by default every value its prior "
        "allows), with that value observed, the runs weighted by their evidence; -n traces (particles) per "
        "value. IC's network steps through the given value, so what it proposes after it is conditioned on it",
    )
    s.add_argument(
        "--stratify-pilot",
        type=int,
        default=0,
        metavar="P",
        help="is, smc, ic with --stratify: P traces (particles) per value first, then the rest of the -n per "
        "value shared out, half in proportion to each value's probability as the pilot estimates it, half "
        "evenly over the values within --stratify-keep nats of the best (values further out get no more)",
    )
    s.add_argument(
        "--stratify-keep",
        type=float,
        default=None,
        metavar="NATS",
        help=f"with --stratify-pilot: the values whose pilot log-evidence is within NATS of the best share "
        f"the even half of the traces (default {DEFAULT_KEEP_NATS:g})",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=None,
        help="simulator processes (ic: traces in flight, default 16 for one driver, 32 per driver)",
    )
    s.add_argument("-o", "--output", required=True)
    s.add_argument(
        "--json", action="store_true", help="print one JSON object (with --events: a line per event)"
    )
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_posterior)

    s = sub.add_parser("train", help="train a proposal network for inference compilation (--engine ic)")
    s.add_argument("simulator")
    s.add_argument("--data", help="dataset directory from `probexec prior` (omit to train online)")
    s.add_argument("-o", "--output", required=True, help="network checkpoint file (NET.pt)")
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    s.add_argument("--epochs", type=int, default=None, help="passes over --data (default 1)")
    s.add_argument("--traces", type=int, default=None, help="stop after this many training traces")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument(
        "--types-per-step",
        type=int,
        default=1,
        metavar="K",
        help="sum the losses of K minibatches (each one trace type) per optimizer step",
    )
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--cosine", action="store_true", help="decay the learning rate over the run")
    s.add_argument("--valid", help="validation dataset directory")
    s.add_argument("--resume", action="store_true", help="continue from the checkpoint at -o")
    s.add_argument(
        "--init",
        metavar="NET",
        help="start from the weights of network NET (same simulator) with a new optimizer and learning-rate "
        "schedule, e.g. to train a CPU-trained network further on a GPU; NET itself is left as it is",
    )
    s.add_argument("--log", help="CSV training log (default: NET.csv)")
    s.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also log loss, validation loss, learning rate, traces/s and waiting per step as "
        "TensorBoard event files in DIR (`tensorboard --logdir DIR`; TensorBoard is not needed to train)",
    )
    s.add_argument(
        "--on-corrupt", choices=["stop", "skip"], default="stop", help="a damaged shard: stop or skip it"
    )
    s.add_argument("--workers", type=int, default=None, help="online: simulator processes")
    s.add_argument("--hidden", type=int, default=None, help="LSTM width (default 128)")
    s.add_argument("--obs-dim", type=int, default=None, help="observation embedding width (default 64)")
    s.add_argument(
        "--obs-norm",
        default=None,
        metavar="NORM",
        help="normalise CNN observation features: none, batch, running, conv (batch statistics in the "
        "convolutions, running ones after the last layer) or group (each trace by its own statistics); "
        "default: the simulator's (none)",
    )
    s.add_argument(
        "--pretrain-embedding",
        type=int,
        default=0,
        metavar="STEPS",
        help="first train the observation embedding for STEPS steps to predict the traces' latents "
        "from the observations, on minibatches mixed across trace types (a new network only)",
    )
    s.add_argument(
        "--pretrain-latents",
        default=None,
        metavar="NAMES",
        help="comma-separated address names to pretrain on (default: the named addresses every trace draws)",
    )
    s.add_argument(
        "--pretrain-traces", type=int, default=40_000, help="traces gathered for pretraining (default 40000)"
    )
    s.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    s.add_argument(
        "--conv-layout",
        choices=["auto", "contiguous", "channels_last"],
        default="auto",
        help="memory layout of the CNN embeddings' convolutions (auto: channels-last on the CPU); "
        "speed only, the results are the same",
    )
    s.add_argument(
        "--read-workers",
        type=int,
        default=None,
        help="processes reading dataset shards (default: 0 on CPU, up to 8 on CUDA)",
    )
    s.add_argument(
        "--batch-process",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make minibatches in a process of their own (default: on CUDA only)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser(
        "evaluate",
        help="per address: how much better than the prior a trained network scores held-out traces",
    )
    s.add_argument("network", help="a checkpoint from `probexec train`")
    s.add_argument("--data", required=True, help="held-out prior traces (`probexec prior ... -o DIR`)")
    s.add_argument("--traces", type=int, default=2000)
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--top", type=int, default=None, help="show only the N addresses gaining most")
    s.add_argument("--seed", type=int, default=0, help="for the observations' noise")
    s.add_argument(
        "--on-corrupt", choices=["stop", "skip"], default="stop", help="a damaged shard: stop or skip it"
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser(
        "simulate", help="simulate events (latents, tags, observations) into an .npz for plotting"
    )
    s.add_argument("simulator")
    s.add_argument("-n", type=int, required=True)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("-o", "--output", required=True, help="FILE.npz")
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_simulate)

    from probexec.analytics.cli import add_parser as add_analytics_parser

    add_analytics_parser(sub)

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
    _add_adapt_arguments(s, "with --network: ")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--per-draw-traces", type=int, default=2000, help="gum: traces per draw")
    s.add_argument("--stream-traces", type=int, default=200_000, help="gum: streamed traces")
    s.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyError as e:
        print(f"probexec: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except Exception as e:
        from probexec.errors import ProbexecError

        if isinstance(e, ProbexecError | FileNotFoundError | ValueError):
            print(f"probexec: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
