"""Training forward pass of the proposal network, one site at a time against grouped by head kind:
aten ops and milliseconds per training step on tau_decay minibatches, side by side in one run.
Prints one line per figure, the ratios, and one JSON object at the end.

    python bench/network_ops.py [--traces 2000] [--batch-sizes 8 64] [--per-type 2] [--repeats 5]

A small tau_decay prior dataset is made first; every figure uses the same minibatches: two of
each trace type the dataset holds enough of (9 to 33 controlled draws), so a mean weighs every
type alike, where training weighs them by frequency (13 draws is the commonest type). Ops are the
`aten::` events torch.profiler records (nested ones included), forward (observation embedding and
log q) and backward apart, also per trace type; the optimizer step, the same for both, is left
out. `step_ms` is forward plus backward of the whole loss; `log_q_ms` the same with the
observation embedding computed beforehand (the conv net over the calorimeter image, which
dominates the CPU time at batch 64 and is the same for both), so it isolates what grouping
changes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from probexec.data import DatasetWriter, TraceDataset, TypeGroup, minibatches
from probexec.nn.network import ProposalLSTM
from probexec.nn.training import PreparedBatch, build_network, prepare
from probexec.remote import RemoteModel

MODES = ("per_site", "grouped")


def make_dataset(root: Path, traces: int) -> TraceDataset:
    with RemoteModel("tau_decay") as m, DatasetWriter(root / "tau", "tau_decay") as w:
        w.write(m.stream(traces, seed=0))
    return TraceDataset(root / "tau")


def log_q_of(net: ProposalLSTM, mode: str) -> Callable[..., torch.Tensor]:
    return net.log_q if mode == "grouped" else net.log_q_per_site


def aten_ops(fn: Callable[[], Any]) -> tuple[int, Any]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = fn()
    return sum(e.name.startswith("aten::") for e in prof.events()), out


def count_ops(net: ProposalLSTM, mode: str, batch: PreparedBatch) -> tuple[int, int]:
    """aten ops of one training step's forward and of its backward."""
    log_q = log_q_of(net, mode)
    layout = batch.group.layout
    net.zero_grad(set_to_none=True)
    fwd, loss = aten_ops(
        lambda: -log_q(layout, batch.values, batch.params, net.embed_observations(batch.observations)).mean()
    )
    bwd, _ = aten_ops(loss.backward)
    return fwd, bwd


def time_steps(net: ProposalLSTM, batches: list[PreparedBatch], repeats: int) -> dict[str, dict[str, float]]:
    """Median milliseconds per step over the batches, per mode: `step_ms` the whole loss,
    `log_q_ms` log q on the observation embedding made beforehand. The modes take turns within
    each repeat, so a drift of the machine's speed falls on both alike."""
    with torch.no_grad():
        embedded = [net.embed_observations(b.observations) for b in batches]

    def one_pass(mode: str, whole: bool) -> float:
        log_q = log_q_of(net, mode)
        t0 = time.perf_counter()
        for b, emb in zip(batches, embedded, strict=True):
            net.zero_grad(set_to_none=True)
            obs_emb = net.embed_observations(b.observations) if whole else emb
            (-log_q(b.group.layout, b.values, b.params, obs_emb).mean()).backward()
        return (time.perf_counter() - t0) * 1000 / len(batches)

    figures: dict[str, dict[str, float]] = {m: {} for m in MODES}
    for figure, whole in (("step_ms", True), ("log_q_ms", False)):
        for mode in MODES:
            one_pass(mode, whole)  # warm-up: plans, allocator
        runs: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(repeats):
            for mode in MODES:
                runs[mode].append(one_pass(mode, whole))
        for mode in MODES:
            figures[mode][figure] = statistics.median(runs[mode])
    return figures


def pick_batches(groups: list[TypeGroup], size: int, per_type: int, seed: int) -> list[PreparedBatch]:
    """Up to `per_type` full minibatches of every trace type with enough traces, fewest sites first."""
    rng = np.random.default_rng(seed)
    by_type: dict[str, list[TypeGroup]] = {}
    for g in minibatches(groups, size, rng=rng):
        if len(g) == size:
            by_type.setdefault(g.layout.key, []).append(g)
    picked = sorted((g for cut in by_type.values() for g in cut[:per_type]), key=lambda g: len(g.layout))
    return [prepare(g, rng) for g in picked]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=2000, help="prior traces in the dataset")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--per-type", type=int, default=2, help="minibatches per trace type and batch size")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over the minibatches")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        groups = list(make_dataset(Path(tmp), args.traces).iter_groups())
    net = build_network("tau_decay", groups)
    for bs in args.batch_sizes:
        batches = pick_batches(groups, bs, args.per_type, seed=bs)
        sizes = sorted({len(b.group.layout) for b in batches})
        row: dict[str, Any] = {"minibatches": len(batches), "sites": sizes}
        ops: dict[str, dict[int, list[tuple[int, int]]]] = {}
        times = time_steps(net, batches, args.repeats)  # warms the plans too
        for mode in MODES:
            step_ms, log_q_ms = times[mode]["step_ms"], times[mode]["log_q_ms"]
            ops[mode] = {}
            for b in batches:
                ops[mode].setdefault(len(b.group.layout), []).append(count_ops(net, mode, b))
            every = [o for per_size in ops[mode].values() for o in per_size]
            fwd = statistics.mean(f for f, _ in every)
            bwd = statistics.mean(b for _, b in every)
            row[mode] = {
                "forward_ops": fwd,
                "backward_ops": bwd,
                "ops": fwd + bwd,
                "step_ms": step_ms,
                "log_q_ms": log_q_ms,
            }
            print(
                f"batch {bs:3d} {mode:9s} ops/step {fwd + bwd:7.0f} (forward {fwd:6.0f}, "
                f"backward {bwd:6.0f})  step {step_ms:7.2f} ms  log q {log_q_ms:7.2f} ms",
                flush=True,
            )
        a, b = row["per_site"], row["grouped"]
        row["ratio"] = {k: a[k] / b[k] for k in ("forward_ops", "backward_ops", "ops", "step_ms", "log_q_ms")}
        r = row["ratio"]
        print(
            f"batch {bs:3d} per_site/grouped: ops x{r['ops']:.1f} (forward x{r['forward_ops']:.1f}, "
            f"backward x{r['backward_ops']:.1f})  step ms x{r['step_ms']:.2f}  log q ms x{r['log_q_ms']:.2f}",
            flush=True,
        )
        row["ops_by_sites"] = {}
        for n in sizes:
            one = {m: statistics.mean(f + b for f, b in ops[m][n]) for m in MODES}
            row["ops_by_sites"][n] = one
            print(
                f"batch {bs:3d} {n:2d} sites: ops/step per_site {one['per_site']:6.0f}  "
                f"grouped {one['grouped']:5.0f}  x{one['per_site'] / one['grouped']:.1f}",
                flush=True,
            )
        results[f"batch_{bs}"] = row
    print(json.dumps({"threads": torch.get_num_threads(), "traces": args.traces, **results}))


if __name__ == "__main__":
    main()
