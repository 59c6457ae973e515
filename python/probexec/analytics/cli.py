"""`probexec analytics`: the report over trace files, datasets, posteriors or a simulator run.

    probexec analytics prior=traces/ rmh=post_rmh/ ic=post_ic/ -o report/ [--truth px=1.2 ...]
                       [--training-log ic/training.csv] [--sbc gum --sbc-engine is]

Wired into the main command line by `add_parser(subparsers)`; `python -m probexec.analytics` runs
it on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

HELP = "trace analytics and inference diagnostics as an HTML report with CSV tables"


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="[LABEL=]INPUT",
        help="trace file (.npz), directory of trace files, dataset directory (dataset.json), posterior "
        "directory, or sim:NAME:N[:SEED] to simulate N prior traces while analysing them",
    )
    p.add_argument("-o", "--output", required=True, help="report directory")
    p.add_argument(
        "--truth",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="true value of a latent (repeatable)",
    )
    p.add_argument("--truth-file", help="JSON object of true values by name")
    p.add_argument("--training-log", help="IC training log (CSV) to plot")
    p.add_argument(
        "--binary", help="simulator executable, to resolve file:line of addresses that arrived without one"
    )
    p.add_argument(
        "--sbc",
        metavar="SIM",
        help="also run simulation-based calibration on this simulator (a built-in's name or your own executable's path)",
    )
    p.add_argument("--sbc-engine", default="is")
    p.add_argument("--sbc-simulations", type=int, default=100)
    p.add_argument("--sbc-traces", type=int, default=1000, help="traces (is) or samples (rmh) per posterior")
    p.add_argument("--sbc-draws", type=int, default=99, help="posterior draws each truth is ranked among")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top-types", type=int, default=20)
    p.add_argument("--type-graphs", type=int, default=3, help="graphs of the most frequent trace types")
    p.add_argument("--histograms", type=int, default=12)
    p.add_argument("--reservoir", type=int, default=20_000, help="values kept per address for histograms")
    p.add_argument("--min-edge", type=float, default=0.0, help="leave out edges rarer than this per trace")
    p.add_argument("--workers", type=int, default=None, help="simulator processes for sim: inputs and --sbc")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true")
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("analytics", help=HELP, description=HELP)
    configure(p)
    p.set_defaults(func=run)
    return p


def _truth(args: argparse.Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    if args.truth_file:
        from pathlib import Path

        try:
            data = json.loads(Path(args.truth_file).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{args.truth_file}: not a readable JSON file ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{args.truth_file}: expected a JSON object of values by name")
        out.update({str(k): float(v) for k, v in data.items() if isinstance(v, int | float)})
    for item in args.truth:
        name, sep, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ValueError(f"--truth {item!r}: expected NAME=VALUE with a number")
    return out


def run(args: argparse.Namespace) -> int:
    from probexec.analytics.report import ReportOptions, analyse, write_report
    from probexec.analytics.sources import open_source

    opts = ReportOptions(
        top_types=args.top_types,
        type_graphs=args.type_graphs,
        histograms=args.histograms,
        min_edge_per_trace=args.min_edge,
        truth=_truth(args),
        training_log=args.training_log,
    )
    sources = [open_source(spec, workers=args.workers) for spec in args.inputs]
    labels = [s.label for s in sources]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise ValueError(f"two inputs are labelled {', '.join(sorted(dup))}: name them with LABEL=INPUT")
    analyses = [
        analyse(s, reservoir_capacity=args.reservoir, progress=not args.quiet, binary=args.binary)
        for s in sources
    ]
    if args.sbc:
        opts.sbc = _run_sbc(args)
    page = write_report(analyses, args.output, opts)
    if args.json:
        print((page.parent / "summary.json").read_text())
    elif not args.quiet:
        for a in analyses:
            print(
                f"{a.source.label}: {a.num_traces} traces, {len(a.addresses.by_id)} addresses, "
                f"{len(a.types.types)} trace types ({a.num_traces / max(a.seconds, 1e-9):.0f} traces/s)"
            )
        print(f"wrote {page}")
    return 0


def _run_sbc(args: argparse.Namespace) -> Any:
    from probexec.analytics.sbc import simulation_based_calibration
    from probexec.inference.pool import remote_pool
    from probexec.simulators import get_simulator

    info = get_simulator(args.sbc)
    options: dict[str, Any] = {}
    if args.sbc_engine == "rmh":
        options = {"chains": 1, "burn_in": 200}
    with remote_pool(args.sbc, workers=args.workers) as pool:
        return simulation_based_calibration(
            pool,
            args.sbc_engine,
            args.sbc_simulations,
            args.sbc_traces,
            latents=list(info.latents),
            observed=list(info.observed),
            num_draws=args.sbc_draws,
            seed=args.seed,
            progress=not args.quiet,
            **options,
        )


def main(argv: list[str] | None = None) -> int:
    p = configure(argparse.ArgumentParser(prog="probexec analytics", description=HELP))
    args = p.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(
            f"probexec analytics: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr
        )
        return 2 if isinstance(e, KeyError) else 1
