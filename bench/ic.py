"""Inference-compilation benchmark: training traces/s per model and device, and IC inference
traces/s with the LSTM steps of many traces batched against one trace at a time, side by side in
one run. Prints one line per figure and one JSON object at the end.

    python bench/ic.py [--quick] [--devices cpu cuda] [--ic-devices cpu cuda] [--tau-data DIR] [--in-flight 16]

Training runs offline on a small prior dataset made first (so simulator speed is not measured),
for a fixed number of traces after a warm-up; `wait` is the share of the training time spent
waiting for the next batch (the batch-making thread: reading shards, drawing the calorimeter
noise). On CUDA, `gpu_busy` is the mean of `nvidia-smi`'s utilisation sampled every 0.1 s
during the timed part. IC inference uses the network just trained; `batched` keeps `--in-flight`
traces in flight (one network step for all of them per round), `one_at_a_time` keeps one.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from probexec.data import DatasetWriter, TraceDataset
from probexec.inference.ic import ic_posterior
from probexec.inference.ic_drivers import ic_posterior_processes
from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior
from probexec.nn import TrainOptions, train
from probexec.simulators import get_simulator

MODELS = ("gum", "gum_marsaglia", "tau_decay")


class GpuSampler:
    """Polls `nvidia-smi` for the GPU's utilisation while a `with` block runs."""

    def __init__(self, period: float = 0.1) -> None:
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=True,
                ).stdout
                self.samples.append(float(out.strip().splitlines()[0]))
            except (OSError, subprocess.SubprocessError, ValueError, IndexError):
                return
            self._stop.wait(self.period)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100.0 if self.samples else None


def make_dataset(name: str, n: int, root: Path, workers: int) -> TraceDataset:
    path = root / name
    with DatasetWriter(path, name, shard_traces=1000) as writer, remote_pool(name, workers=workers) as pool:
        sample_prior(pool, n, seed=0, progress=False, sink=writer.add)
    return TraceDataset(path)


def bench_training(
    name: str, data: TraceDataset, device: str, traces: int, batch: int, net_out: Path, threads: int | None
) -> dict:
    def run(budget: int, output: Path | None, network: Any = None) -> Any:
        # A shuffle buffer of 16 batches: the default 20 000 traces would make a short timed run
        # mostly the reading of its first buffer (on tau, 38 % of the time was spent waiting).
        opts = TrainOptions(
            batch_size=batch,
            lr=1e-3,
            traces=budget,
            device=device,
            progress=False,
            checkpoint_every=10**9,
            buffer_traces=16 * batch,
            threads=threads,
        )
        return train(name, dataset=data, output=output, options=opts, network=network)

    warm = run(4 * batch, None)  # builds the network, first CUDA kernels, allocator
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    with GpuSampler() as gpu:
        res = run(traces, net_out, warm.network)
    busy = gpu.mean if device.startswith("cuda") else None
    params = sum(p.numel() for p in res.network.parameters())
    return {
        "traces": res.traces,
        "seconds": res.seconds,
        "traces_per_s": res.traces_per_second,
        "wait_fraction": res.wait_fraction,
        "gpu_busy": busy,
        "parameters": params,
        "batch_size": batch,
    }


def bench_inference(
    name: str,
    net_path: Path,
    device: str,
    n: int,
    in_flight: int,
    profile: str | None = None,
    processes: Sequence[int] = (),
    per_process: Sequence[int] = (),
) -> dict:
    from probexec.nn import load_checkpoint

    info = get_simulator(name)
    net, _ = load_checkpoint(net_path, simulator=name, device=device)
    out: dict[str, Any] = {}
    with remote_pool(name, workers=in_flight) as pool:
        obs = sample_prior(pool, 1, seed=99, mode="stream", progress=False)
        observe = {o: obs.values_of(o)[0] for o in info.observed}
        for label, k, m in (("batched", in_flight, n), ("one_at_a_time", 1, max(n // 4, 20))):
            ic_posterior(net, pool.models[:k], min(k, m), observe, seed=1, device=device)  # warm-up
            prof = cProfile.Profile() if profile and label == "batched" else None
            if prof is not None:
                prof.enable()
            post = ic_posterior(net, pool.models[:k], m, observe, seed=2, device=device)
            if prof is not None:
                prof.disable()
                prof.dump_stats(f"{profile}-{name}-{device}.prof")
            done = post.num_traces + post.dropped
            out[label] = {
                "traces": done,
                "traces_per_s": done / post.seconds,
                "mean_batch": post.stats.get("mean_batch"),
                "ess_over_n": post.ess / max(post.num_traces, 1),
            }
    out["speedup"] = out["batched"]["traces_per_s"] / out["one_at_a_time"]["traces_per_s"]
    out["processes"] = []
    for p in processes:
        # 5x the traces, because starting the processes (torch, the network, their simulators)
        # takes seconds; that is timed too, and the drivers' own time is reported beside it.
        for k in per_process or [-(-in_flight // p)]:
            post = ic_posterior_processes(
                net_path, name, 5 * n, observe, processes=p, in_flight=k, seed=3, device=device
            )
            done = post.num_traces + post.dropped
            out["processes"].append(
                {
                    "processes": p,
                    "in_flight_per_process": k,
                    "traces": done,
                    "traces_per_s": done / post.seconds,
                    "traces_per_driver_s": done / post.stats["driver_seconds"],
                    "mean_batch": post.stats.get("mean_batch"),
                    "ess_over_n": post.ess / max(post.num_traces, 1),
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--devices", nargs="+", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--tau-data", help="an existing tau_decay dataset (else a small one is simulated)")
    ap.add_argument("--workers", type=int, default=2, help="simulators making the datasets")
    ap.add_argument("--tau-traces", type=int, default=3000, help="size of the tau dataset made first")
    ap.add_argument("--tau-batch", type=int, nargs="+", default=[256], help="tau batch sizes on GPU")
    ap.add_argument("--in-flight", type=int, default=16)
    ap.add_argument(
        "--ic-devices", nargs="+", help="devices IC inference runs on (default: the last of --devices)"
    )
    ap.add_argument(
        "--ic-processes",
        type=int,
        nargs="+",
        default=[],
        help="also run IC over N driver processes (each N given), --in-flight split between them",
    )
    ap.add_argument(
        "--ic-per-process",
        type=int,
        nargs="+",
        default=[],
        help="with --ic-processes: traces in flight per driver process instead (each value given)",
    )
    ap.add_argument(
        "--profile-ic", help="write a cProfile of each batched IC run to PREFIX-MODEL-DEVICE.prof"
    )
    ap.add_argument("--threads", type=int, help="CPU threads for training (default: half the cores)")
    args = ap.parse_args()
    k = 0.1 if args.quick else 1.0
    root = Path(tempfile.mkdtemp(prefix="probexec-bench-ic-"))
    out: dict[str, Any] = {"training": {}, "inference": {}, "torch": torch.__version__}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    try:
        for name in args.models:
            tau = name == "tau_decay"
            if tau and args.tau_data:
                data = TraceDataset(args.tau_data)
            else:
                data = make_dataset(
                    name, int((args.tau_traces if tau else 20_000) * k) or 500, root, args.workers
                )
            out["training"][name] = {}
            for device in args.devices:
                cpu_tau = tau and device == "cpu"
                batches = [64] if cpu_tau else args.tau_batch if tau else [128]
                for batch in batches:
                    traces = int((4_000 if cpu_tau else 200 * batch if tau else 60_000) * k)
                    r = bench_training(
                        name, data, device, traces, batch, root / f"{name}-{device}.pt", args.threads
                    )
                    out["training"][name][device if batch == batches[0] else f"{device}/batch{batch}"] = r
                    busy = f", GPU busy {100 * r['gpu_busy']:.0f} %" if r["gpu_busy"] is not None else ""
                    print(
                        f"train {name:14s} {device:5s} {r['traces_per_s']:9.0f} traces/s (batch {batch}, "
                        f"{r['parameters'] / 1e6:.2f} M parameters, waiting for data {100 * r['wait_fraction']:.0f} %{busy})",
                        flush=True,
                    )
            n = int((2000 if not tau else 400) * k) or 50
            out["inference"][name] = {}
            for device in args.ic_devices or args.devices[-1:]:
                net = root / f"{name}-{args.devices[-1]}.pt"  # the network trained last, on any device
                r = bench_inference(
                    name,
                    net,
                    device,
                    n,
                    args.in_flight,
                    args.profile_ic,
                    args.ic_processes,
                    args.ic_per_process,
                )
                out["inference"][name][device] = r
                print(
                    f"IC    {name:14s} {device:5s} batched ({args.in_flight} in flight) "
                    f"{r['batched']['traces_per_s']:7.0f} traces/s, one at a time "
                    f"{r['one_at_a_time']['traces_per_s']:7.0f} traces/s: {r['speedup']:.1f}x",
                    flush=True,
                )
                for q in r["processes"]:
                    print(
                        f"IC    {name:14s} {device:5s} {q['processes']} driver processes x "
                        f"{q['in_flight_per_process']} in flight {q['traces_per_s']:7.0f} traces/s "
                        f"({q['traces_per_driver_s']:.0f} over the drivers' own time, mean batch "
                        f"{q['mean_batch']:.0f}, ESS/N {q['ess_over_n']:.3f})",
                        flush=True,
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
