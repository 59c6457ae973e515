"""`probexec posterior`: one engine (is, rmh, smc, ic) on an event, or on every event of a file
with the simulators (and IC's driver processes) started once; optionally stratified over a
discrete latent."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from probexec.cli.common import SIMULATOR_HELP, adapt_options, add_adapt_arguments, observations, strict_json
from probexec.cores import usable_cores
from probexec.inference.defensive import check_defensive, check_mixture
from probexec.inference.strata import DEFAULT_KEEP_NATS, POOLED_ENGINES


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
    adapt = adapt_options(args)  # checked before any simulator starts
    if adapt is not None:
        check_mixture(adapt.mix, args.defensive, "--adapt-mix")
    if args.events:
        return _posterior_events(args, info)
    observe = observations(args, info)  # checked before any simulator starts
    if info.observed and not observe and not args.quiet:
        print(
            f"note: nothing is observed, so this posterior is the prior; {info.name} observes "
            f"{', '.join(info.observed)} (--observe NAME=VALUE, --observe-file, --events)",
            file=sys.stderr,
        )
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
    base = observations(args, info)  # --observe and --observe-file hold for every event
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
    with remote_pool(info, workers=workers) as pool:
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
    with RemoteModel(info) as model:
        return stratum_values(model, name)


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
        adapt = adapt_options(args)
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
        "adapt": adapt_options(args),
    }
    if processes > 1 and single:  # one event: its start-up is part of its call (and its timeline)
        yield lambda observe, seed: ic_posterior_processes(
            args.network, info, args.n, observe, processes=processes, in_flight=per_driver,
            seed=seed, device=device, **common,
        )  # fmt: skip
    elif processes > 1:
        del net  # each driver has its own copy
        with ICDrivers(args.network, info, processes=processes, in_flight=per_driver, device=device) as d:
            yield lambda observe, seed, n=args.n: d.posterior(n, observe, seed=seed, **common)
    else:
        with remote_pool(info, workers=in_flight) as pool:
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


def add_parsers(sub: Any) -> None:
    """Adds `probexec posterior` and its options."""
    s = sub.add_parser(
        "posterior", help="posterior inference on a simulator: a built-in, or your own executable"
    )
    s.add_argument("simulator", help=SIMULATOR_HELP)
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
    add_adapt_arguments(s, "ic: ")
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
