"""What several commands share: strict JSON output, observations from the command line, and
the `--adapt` options of `posterior` and `demo`."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import numpy as np

from probexec.inference.ic_adapt import AdaptOptions

SIMULATOR_HELP = (
    "a built-in simulator's name (`probexec simulators`) or the path of your own simulator's executable "
    "(with a /, e.g. ./my_simulator)"
)


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


def observations(args: argparse.Namespace, info: Any) -> dict[str, np.ndarray]:
    """What to condition on: the simulator's default observations, then `--observe-file`, then
    each `--observe`, later ones winning; names and shapes checked before any simulator starts."""
    from probexec.conditioning import check_observations, load_observe_file, parse_observe_items

    observe: dict[str, Any] = dict(info.default_observations)
    if args.observe_file:
        observe.update(load_observe_file(args.observe_file))
    observe.update(parse_observe_items(args.observe or []))
    # Observations proper, and the latents: a named sample can be observed too.
    declared: dict[str, Any] = {**{name: None for name in info.latents}, **info.observed}
    return check_observations(observe, declared, info.name)


def adapt_options(args: argparse.Namespace) -> AdaptOptions | None:
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


def add_adapt_arguments(parser: argparse.ArgumentParser, scope: str) -> None:
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
