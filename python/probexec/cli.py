"""The `probexec` command line."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np


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
    if args.quiet:
        argv.append("--quiet")
    os.execv(exe, argv)
    return 0  # not reached


def _cmd_demo(args: argparse.Namespace) -> int:
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
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_serve)

    s = sub.add_parser("demo", help="a short end-to-end run on the GUM simulator")
    s.add_argument("--per-draw-traces", type=int, default=2000)
    s.add_argument("--stream-traces", type=int, default=200_000)
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
