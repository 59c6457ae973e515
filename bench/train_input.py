"""What offline training's input pipeline costs the training process: minibatches made in-process
(a `Prefetcher` thread, as on CPU) against a batch process (`TrainOptions.batch_process`, the
default on CUDA), side by side in one run on the same dataset and seed.

    python bench/train_input.py [--simulator hmm] [--traces 60000] [--batch-size 256]
                                [--read-workers 0] [--epochs 2] [--data DIR] [--device cpu]
                                [--step-ms 0]

Per path, from its start (processes started, shard readers too): seconds to the first batch;
batches and traces per second that the training process receives, over the whole run and from
the first batch on (`steady_traces_per_s`); that process's CPU milliseconds per batch, all its
threads (`proc_cpu_ms`: what a training loop competes with, for the GIL and for cores) and its
main thread alone (`main_cpu_ms`: taking batches, wrapping them as tensors); and the batch
process's own (`batcher_cpu_ms`; shard readers not counted). The consumer does nothing but take
batches (moving them to the device with `--device cuda`), or with `--step-ms` also holds the GIL
that long per batch in a Python loop, as a training loop launching kernels does: where an
in-process batch-making thread hurts. Without `--data` a dataset of `--traces` prior traces is
made first in a temporary directory (tau_decay_fixed_spots: `--traces 3000` takes half a minute
on 2 cores). Use a dataset bigger than `--buffer-traces`: the first batch waits for a full buffer.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from probexec.cores import usable_cores
from probexec.data import DatasetWriter, TraceDataset
from probexec.data.batch_process import PipelineConfig, Plan, epoch_minibatches, epoch_rng
from probexec.data.dataset import close_readers
from probexec.nn.batcher import BatchProcess, EpochFeed, PreparedBatch
from probexec.nn.training import Prefetcher, prepare
from probexec.remote import RemoteModel


def make_dataset(path: Path, simulator: str, traces: int, shard_traces: int) -> TraceDataset:
    t0 = time.perf_counter()
    with RemoteModel(simulator) as m, DatasetWriter(path, simulator) as w:
        for i in range(0, traces, shard_traces):
            w.write(m.stream(min(shard_traces, traces - i), seed=i))
    print(f"dataset: {traces} {simulator} traces in {time.perf_counter() - t0:.1f} s", flush=True)
    return TraceDataset(path)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (Linux /proc), nan elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _busy(ms: float) -> None:
    """Holds the GIL for `ms` milliseconds, as Python launching a training step's kernels does."""
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


@dataclass
class Start:
    """Clocks when a path starts (before its processes do)."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)
    main: float = field(default_factory=time.thread_time)


def consume(
    start: Start,
    epochs: Iterable[Iterable[PreparedBatch]],
    device: torch.device,
    step_ms: float,
    batcher_pid: int | None = None,
) -> dict[str, float]:
    noise = torch.Generator(device=device)
    first: float | None = None
    batches = traces = first_traces = 0
    for feed in epochs:
        for b in feed:
            if device.type != "cpu":
                b.on(device, noise)
            if step_ms:
                _busy(step_ms)
            batches += 1
            traces += len(b)
            if first is None:
                first, first_traces = time.perf_counter(), len(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    assert first is not None and batches > 1, "too few batches: make the dataset bigger"
    return {
        "first_batch_s": first - start.wall,
        "batches_per_s": batches / (end - start.wall),
        "traces_per_s": traces / (end - start.wall),
        "steady_traces_per_s": (traces - first_traces) / (end - first),
        "proc_cpu_ms": 1000 * (time.process_time() - start.cpu) / batches,
        "main_cpu_ms": 1000 * (time.thread_time() - start.main) / batches,
        "batcher_cpu_ms": 1000 * _cpu_seconds(batcher_pid) / batches if batcher_pid else float("nan"),
        "batches": batches,
    }


def in_process(config: PipelineConfig, epochs: int, device: torch.device, step_ms: float) -> dict[str, float]:
    """The CPU path of `train`: a pool of shard readers, batches made in a Prefetcher thread."""
    start = Start()
    pin = device.type == "cuda"
    readers = config.dataset.reader_pool(config.read_workers) if config.read_workers > 0 else None

    def feeds() -> Iterable[Prefetcher]:
        for e in range(epochs):
            rng, _ = epoch_rng(config.seed, e, config.rank)
            src = (prepare(b, rng, pin, config.draw_on_device) for b in epoch_minibatches(config, e, readers))
            fetch = Prefetcher(src, depth=6)
            try:
                yield fetch
            finally:
                fetch.close()

    try:
        return consume(start, feeds(), device, step_ms)
    finally:
        if readers is not None:
            close_readers(readers)


def batch_process(
    config: PipelineConfig, epochs: int, device: torch.device, step_ms: float
) -> dict[str, float]:
    """The CUDA path of `train`: a batch process (with its own readers) feeding pinned tensors."""
    start = Start()
    with BatchProcess(config, pin=device.type == "cuda") as bp:
        bp.plan(Plan(0, 0, epochs))
        return consume(start, (EpochFeed(bp, e) for e in range(epochs)), device, step_ms, bp.process.pid)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--simulator", default="hmm")
    p.add_argument("--traces", type=int, default=60_000, help="traces of the dataset made first")
    p.add_argument("--shard-traces", type=int, default=1000)
    p.add_argument("--data", help="an existing dataset directory instead")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--read-workers", type=int, default=0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--buffer-traces", type=int, default=20_000)
    p.add_argument("--device", default="cpu", help="cpu, or cuda: batches pinned and moved there")
    p.add_argument(
        "--draw-on-device", type=int, choices=[0, 1], default=None, help="default: 1 on cuda, 0 on cpu"
    )
    p.add_argument("--step-ms", type=float, default=0.0, help="Python work per batch in the consumer")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    device = torch.device(args.device)
    draw_on_device = bool(args.draw_on_device) if args.draw_on_device is not None else device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        ds = (
            TraceDataset(Path(args.data))
            if args.data
            else make_dataset(Path(tmp) / "data", args.simulator, args.traces, args.shard_traces)
        )
        config = PipelineConfig(
            ds,
            args.batch_size,
            args.seed,
            args.buffer_traces,
            draw_on_device=draw_on_device,
            read_workers=args.read_workers,
        )
        print(
            f"{ds.simulator}: {ds.num_traces} traces in {len(ds.shards)} shards, batch {args.batch_size}, "
            f"{args.read_workers} reader(s), {args.epochs} epoch(s), device {device}, "
            f"draw on device {draw_on_device}, step {args.step_ms} ms, {usable_cores()} cores",
            flush=True,
        )
        results: dict[str, Any] = {}
        for name, run in (("in_process", in_process), ("batch_process", batch_process)):
            results[name] = run(config, args.epochs, device, args.step_ms)
        cols = {
            "first_batch_s": "first_batch_s",
            "batches_per_s": "batches/s",
            "traces_per_s": "traces/s",
            "steady_traces_per_s": "steady_traces/s",
            "proc_cpu_ms": "proc_cpu_ms",
            "main_cpu_ms": "main_cpu_ms",
            "batcher_cpu_ms": "batcher_cpu_ms",
        }
        print(f"{'':14}" + "".join(f"{c:>16}" for c in cols.values()))
        for name, r in results.items():
            print(f"{name:14}" + "".join(f"{r[c]:16.3f}" for c in cols))
        a, b = results["in_process"], results["batch_process"]
        print(
            f"batch process / in-process: traces/s {b['traces_per_s'] / a['traces_per_s']:.2f}x "
            f"(from the first batch on {b['steady_traces_per_s'] / a['steady_traces_per_s']:.2f}x), "
            f"training-process CPU per batch {b['proc_cpu_ms'] / a['proc_cpu_ms']:.3f}x"
        )
        print(json.dumps({"simulator": ds.simulator, "traces": ds.num_traces, **vars(args), **results}))


if __name__ == "__main__":
    main()
