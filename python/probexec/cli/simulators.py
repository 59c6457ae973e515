"""`probexec simulators|serve|simulate|prior`: list the simulators (built-in, or describe your own), serve one, and run
them for events to plot or for a dataset of prior traces."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from probexec.cli.common import SIMULATOR_HELP, strict_json


def _cmd_simulators(args: argparse.Namespace) -> int:
    from probexec.simulators import SIMULATORS, get_simulator

    if args.executables:  # your own (what probexec reads off their prior traces), or built-ins by name
        rows = [get_simulator(e if e in SIMULATORS else _as_path(e)) for e in args.executables]
    else:
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


def _as_path(executable: str) -> str:
    """`my_simulator` in this folder as `./my_simulator`: here the argument can only be a file."""
    from probexec.own_simulator import is_executable_path

    return executable if is_executable_path(executable) else f"./{executable}"


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
    with remote_pool(info, workers=args.workers) as pool:
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


def _cmd_prior(args: argparse.Namespace) -> int:
    """Prior traces to a dataset directory (sharded, for training) or, for `-o FILE.npz`, to one
    trace file."""
    from pathlib import Path

    from probexec.data import DatasetWriter
    from probexec.inference.pool import remote_pool
    from probexec.inference.prior import sample_prior
    from probexec.simulators import get_simulator

    info = get_simulator(args.simulator)
    if args.n < 1:
        raise ValueError(f"-n must be at least 1, got {args.n}")
    out = Path(args.output)
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"simulator": info.name, "num_traces": args.n}
    with remote_pool(info, workers=args.workers) as pool:
        if out.suffix == ".npz":
            out.parent.mkdir(parents=True, exist_ok=True)
            batch = sample_prior(pool, args.n, seed=args.seed, progress=not args.quiet)
            batch.save(out)
            summary.update(file=str(out), bytes=out.stat().st_size, addresses=len(batch.addresses))
        else:
            with DatasetWriter(out, info.name, shard_traces=args.shard_traces) as writer:
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


def add_parsers(sub: Any) -> None:
    """Adds `probexec simulators`, `serve`, `simulate` and `prior`, with their options."""
    s = sub.add_parser(
        "simulators",
        help="list the built-in simulators with their latent and observed names; given executables of "
        "your own, what their prior traces name",
        description="Every command that takes a SIMULATOR takes a built-in's name or the path of your "
        "own simulator's executable (with a /, e.g. ./my_simulator). For an executable, its latents "
        "(named samples, then tags) and observations are read off its first prior traces, and its "
        "name is the model name its serve() call announces.",
    )
    s.add_argument(
        "executables",
        nargs="*",
        metavar="EXECUTABLE",
        help="describe these instead: your own simulators' executables, or built-ins by name",
    )
    s.add_argument("--json", action="store_true")
    s.add_argument("--all", action="store_true", help="include the test-only models")
    s.set_defaults(func=_cmd_simulators)

    s = sub.add_parser("serve", help="run a simulator's server in the foreground")
    s.add_argument("simulator", help=SIMULATOR_HELP)
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

    s = sub.add_parser(
        "simulate", help="simulate events (latents, tags, observations) into an .npz for plotting"
    )
    s.add_argument("simulator", help=SIMULATOR_HELP)
    s.add_argument("-n", type=int, required=True)
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("-o", "--output", required=True, help="FILE.npz")
    s.add_argument("--workers", type=int, default=None)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_simulate)

    s = sub.add_parser("prior", help="write a dataset of prior traces")
    s.add_argument("simulator", help=SIMULATOR_HELP)
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
