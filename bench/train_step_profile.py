"""Where a training step's time goes, on the device that trains: the CPU's time per step, the
GPU's kernel time per step, kernel launches, and every call that makes the CPU wait for the GPU.

    python bench/train_step_profile.py --data DIR [--simulator tau_decay_coarse] [--device cuda]
        [--batch-size 512] [--steps 40] [--warmup-steps 20] [--trace OUT.json]

It trains with `probexec.nn.train` as `probexec train` does (the batch process on CUDA, the loss
read every `log_every` steps), first `--warmup-steps` steps to warm the kernels and the
allocator, then `--steps` more from the warmed network under `torch.profiler`. The steps are cut
at the optimizer's `step` calls. Figures are medians over the steps between the first and the
last cut, so the profile's start-up and tail are left out:
- `cpu_ms`: wall time between successive optimizer steps on the training thread;
- `gpu_ms`: CUDA kernel time (and memcpy/memset) that started in that span; `gpu_busy` its
  share of the span, where `nvidia-smi` reads whether any kernel runs, so this is a lower bound
  on what it shows;
- `launches`: `cudaLaunchKernel` and the like per step;
- `syncs`: calls that block the CPU until the GPU has caught up (`cudaStreamSynchronize`,
  `cudaDeviceSynchronize`, `cudaEventSynchronize`, and synchronous `cudaMemcpy`), by name and
  count over the window, and `torch.cuda.set_sync_debug_mode`'s warnings with the Python line
  that made them.
Also the CPU-side ops with the most self time. On the CPU the GPU columns are empty; the rest
still says where a CPU step goes. Prints lines and one JSON object at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from probexec.cores import usable_cores
from probexec.data import TraceDataset
from probexec.nn import TrainOptions, train

STEP_MARK = "Optimizer.step#"
SYNC_CALLS = (
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpy",  # the synchronous one; cudaMemcpyAsync does not wait
)
LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")


def _events(prof: Any) -> list[Any]:
    return list(prof.events())


def step_marks(events: list[Any]) -> list[float]:
    """Start times (µs) of the optimizer's step calls on the CPU, in order."""
    return sorted(e.time_range.start for e in events if e.name.startswith(STEP_MARK))


def _device_kind(e: Any) -> str:
    return str(getattr(e, "device_type", "")).rsplit(".", 1)[-1]


def analyse(events: list[Any]) -> dict[str, Any]:
    """Per-step figures between the first and the last optimizer step of the profile."""
    marks = step_marks(events)
    if len(marks) < 3:
        raise SystemExit(f"the profile holds {len(marks)} optimizer steps; ask for more --steps")
    lo, hi = marks[0], marks[-1]
    spans = list(itertools.pairwise(marks))
    cpu_ms = [(b - a) / 1e3 for a, b in spans]
    gpu = [e for e in events if _device_kind(e) == "CUDA"]
    gpu_ms = []
    for a, b in spans:
        gpu_ms.append(sum(e.time_range.elapsed_us() for e in gpu if a <= e.time_range.start < b) / 1e3)
    inside = [e for e in events if lo <= e.time_range.start < hi]
    names = Counter(e.name for e in inside)
    launches = sum(names[n] for n in LAUNCHES)
    syncs = {n: names[n] for n in SYNC_CALLS if names[n]}
    steps = len(spans)
    cpu_ops: Counter[str] = Counter()
    for e in inside:
        if _device_kind(e) == "CPU" and e.name.startswith("aten::"):
            cpu_ops[e.name] += e.self_cpu_time_total
    return {
        "steps": steps,
        "cpu_ms": statistics.median(cpu_ms),
        "cpu_ms_mean": statistics.fmean(cpu_ms),
        "gpu_ms": statistics.median(gpu_ms) if gpu else None,
        "gpu_busy": sum(gpu_ms) / sum(cpu_ms) if gpu else None,
        "launches_per_step": launches / steps,
        "syncs": syncs,
        "aten_ops_per_step": sum(v for k, v in names.items() if k.startswith("aten::")) / steps,
        "top_self_cpu_ms_per_step": {k: v / 1e3 / steps for k, v in cpu_ops.most_common(15)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a dataset from `probexec prior`")
    ap.add_argument("--simulator", default="tau_decay_coarse")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=40, help="profiled optimizer steps")
    ap.add_argument("--warmup-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (CPU training)")
    ap.add_argument("--conv-layout", default="auto")
    ap.add_argument("--trace", help="also write the profile as a Chrome trace (chrome://tracing, Perfetto)")
    args = ap.parse_args()
    data = TraceDataset(Path(args.data))
    cuda = args.device.startswith("cuda")

    def options(steps: int) -> TrainOptions:
        return TrainOptions(
            batch_size=args.batch_size,
            traces=steps * args.batch_size,
            device=args.device,
            progress=False,
            threads=args.threads,
            checkpoint_every=10**9,
            buffer_traces=max(16 * args.batch_size, 20_000),
            conv_layout=args.conv_layout,
        )

    print(f"device {args.device}, {usable_cores()} usable cores, batch {args.batch_size}", flush=True)
    warm = train(args.simulator, dataset=data, options=options(args.warmup_steps))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync_warnings: Counter[str] = Counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with profile(activities=activities) as prof:
                res = train(args.simulator, dataset=data, options=options(args.steps), network=warm.network)
                if cuda:
                    torch.cuda.synchronize()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message):
            sync_warnings[f"{Path(w.filename).name}:{w.lineno}: {w.message}"] += 1
    figures = analyse(_events(prof))
    figures["sync_warnings"] = dict(sync_warnings)
    figures["traces_per_s"] = res.traces_per_second
    figures["wait_fraction"] = res.wait_fraction
    if args.trace:
        prof.export_chrome_trace(args.trace)
    gpu = (
        f"  GPU {figures['gpu_ms']:.2f} ms (busy {100 * figures['gpu_busy']:.0f} %)"
        if figures["gpu_ms"] is not None
        else ""
    )
    print(
        f"{figures['steps']} steps: CPU {figures['cpu_ms']:.2f} ms a step{gpu}, "
        f"{figures['launches_per_step']:.0f} kernel launches and {figures['aten_ops_per_step']:.0f} aten ops a step, "
        f"{res.traces_per_second:.0f} traces/s, waiting for data {100 * res.wait_fraction:.1f} %",
        flush=True,
    )
    print(f"calls that wait for the GPU over the window: {figures['syncs'] or 'none'}", flush=True)
    for line, n in sync_warnings.most_common(10):
        print(f"  sync x{n}: {line}", flush=True)
    for op, ms in figures["top_self_cpu_ms_per_step"].items():
        print(f"  {ms:8.3f} ms/step self CPU  {op}", flush=True)
    print(json.dumps({"args": vars(args), **figures}))


if __name__ == "__main__":
    main()
