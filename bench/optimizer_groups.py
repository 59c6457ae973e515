"""The optimizer step with a parameter group per address (before) against one group (now), side by
side on the same tau decay network and gradients. Prints one line per figure, the ratios, and one
JSON object at the end.

    python bench/optimizer_groups.py [--simulator tau_decay_coarse] [--traces 3000] [--repeats 50] \
        [--train-simulator gum] [--train-traces 20000]

The network is built from a small prior dataset made first, so it holds every address those
traces meet (about 70 on the tau decay). Each parameter gets a fixed random gradient; the two
optimizers then step in turns (so a drift of the machine's speed falls on both alike) and the
median milliseconds per step are reported for each Adam implementation this machine has: on the
CPU torch's default (there a loop over the tensors) and the fused kernel; on CUDA the fused kernel,
with a synchronise after each step so the time includes the kernels. Small widths (`--hidden 8`)
leave only the per-group and per-parameter overhead.

Then whole training runs (`probexec.nn.train`, one epoch of `--train-traces` prior traces of
`--train-simulator`, batch 64) with the optimizer as it was (a group per address; torch's default
implementation on the CPU, fused on CUDA) and as `make_optimizer` makes it now, in turns, three
runs each; traces/s per run and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import probexec.nn.training as training
from probexec.data import DatasetWriter, TraceDataset, TypeGroup
from probexec.nn import TrainOptions, train
from probexec.nn.checkpoint import make_optimizer
from probexec.nn.network import ProposalLSTM
from probexec.nn.training import build_network
from probexec.remote import RemoteModel


def dataset(root: Path, simulator: str, traces: int) -> TraceDataset:
    with RemoteModel(simulator) as m, DatasetWriter(root, simulator) as w:
        w.write(m.stream(traces, seed=0))
    return TraceDataset(root)


def network(simulator: str, traces: int, config: dict[str, Any]) -> ProposalLSTM:
    with tempfile.TemporaryDirectory() as tmp:
        ds = dataset(Path(tmp) / "data", simulator, traces)
        sample: list[TypeGroup] = []
        for g in ds.iter_groups():
            sample.append(g)
            if sum(len(s) for s in sample) >= 256:
                break
        return build_network(simulator, sample, [t.layout for t in ds.trace_types().values()], **config)


def per_address(net: ProposalLSTM, fused: bool | None, lr: float = 1e-3) -> torch.optim.Adam:
    """The optimizer as it was: the shared parameters, then a group per address."""
    opt = torch.optim.Adam(net.shared_parameters(), lr=lr, fused=fused)
    for g in net.site_parameter_groups():
        opt.add_param_group({"params": g})
    return opt


def as_it_was(net: ProposalLSTM, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """`make_optimizer` before this change (a new address became a group of its own then; here
    the network has them all from the start)."""
    return per_address(net, True if next(net.parameters()).is_cuda else None, lr)


def training_runs(simulator: str, traces: int, device: torch.device, threads: int | None) -> dict[str, Any]:
    made = training.make_optimizer
    runs: dict[str, list[float]] = {"as_it_was": [], "now": []}
    with tempfile.TemporaryDirectory() as tmp:
        ds = dataset(Path(tmp) / "data", simulator, traces)
        opts = TrainOptions(
            batch_size=64, epochs=1, device=str(device), threads=threads, seed=0, progress=False
        )
        try:
            for _ in range(3):
                for name, make in (("as_it_was", as_it_was), ("now", made)):
                    training.make_optimizer = make
                    runs[name].append(train(simulator, dataset=ds, options=opts).traces_per_second)
        finally:
            training.make_optimizer = made
    ratio = statistics.median(runs["now"]) / statistics.median(runs["as_it_was"])
    return {**runs, "ratio": ratio}


def one_group(net: ProposalLSTM, fused: bool | None) -> torch.optim.Adam:
    opt = make_optimizer(net, 1e-3)
    assert len(opt.param_groups) == 1
    return torch.optim.Adam(opt.param_groups[0]["params"], lr=1e-3, fused=fused)


def time_steps(
    opts: dict[str, torch.optim.Optimizer], repeats: int, device: torch.device
) -> dict[str, float]:
    def one(o: torch.optim.Optimizer) -> float:
        t0 = time.perf_counter()
        o.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1000

    for o in opts.values():  # warm-up: state made, kernels loaded
        for _ in range(3):
            one(o)
    runs: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(repeats):
        for k, o in opts.items():
            runs[k].append(one(o))
    return {k: statistics.median(v) for k, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--simulator", default="tau_decay_coarse")
    ap.add_argument("--traces", type=int, default=3000, help="prior traces the addresses come from")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--hidden", type=int, help="LSTM width (default: the network's)")
    ap.add_argument("--train-simulator", default="gum")
    ap.add_argument("--train-traces", type=int, default=20000, help="0: no training runs")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    config = {"hidden": args.hidden} if args.hidden else {}
    net = network(args.simulator, args.traces, config).to(device)
    params = list(net.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    results: dict[str, Any] = {
        "simulator": args.simulator,
        "device": str(device),
        "addresses": len(net.sites),
        "parameters": len(params),
        "values": sum(p.numel() for p in params),
    }
    print(
        f"{args.simulator}: {len(net.sites)} addresses, {len(params)} parameter tensors, "
        f"{results['values']} values, on {device}"
    )
    impls = {"fused": True} if device.type == "cuda" else {"default": None, "fused": True}
    for name, fused in impls.items():
        ms = time_steps(
            {"per_address": per_address(net, fused), "one_group": one_group(net, fused)}, args.repeats, device
        )
        ratio = ms["per_address"] / ms["one_group"]
        results[name] = {**ms, "ratio": ratio}
        print(
            f"Adam {name}: a group per address ({len(net.sites) + 1} groups) {ms['per_address']:.2f} ms/step, "
            f"one group {ms['one_group']:.2f} ms/step, ratio {ratio:.2f}"
        )
    if args.train_traces:
        t = training_runs(args.train_simulator, args.train_traces, device, args.threads)
        results["training"] = {"simulator": args.train_simulator, **t}
        print(
            f"training {args.train_simulator}, batch 64: as it was {[round(x) for x in t['as_it_was']]} traces/s, "
            f"now {[round(x) for x in t['now']]} traces/s, ratio of medians {t['ratio']:.2f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
