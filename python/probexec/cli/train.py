"""`probexec train|evaluate`: a proposal network for inference compilation, and how much better
than the prior it scores held-out traces, address by address."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from probexec.cli.common import SIMULATOR_HELP, strict_json


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
    pools = remote_pool(info, workers=args.workers) if dataset is None else contextlib.nullcontext()
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


def add_parsers(sub: Any) -> None:
    """Adds `probexec train` and `evaluate`, with their options."""
    s = sub.add_parser("train", help="train a proposal network for inference compilation (--engine ic)")
    s.add_argument("simulator", help=SIMULATOR_HELP)
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
