"""The calorimeter CNN embedding's layout and layer order, side by side in one run: the embedding's
forward and backward alone, then whole tau_decay training runs.

    python bench/conv_embedding.py [--device cpu|cuda] [--batch-sizes 16 64 256] [--data DIR]
        [--traces 3200] [--train-batch 64] [--repeats 3] [--threads N]

Four variants of the same weights:
- `relu-pool`: convolution, ReLU, max-pool per layer (the order before the twelfth session);
- `pool-relu`: max-pool before the ReLU (the same values, computed on an eighth of them);
and each in the standard (`contiguous`) layout or `channels_last` (`set_conv_layout`).

Part one times the embedding of `tau_decay_coarse`'s 20 x 35 x 35 image (forward, then backward
of the sum) at each batch size, the variants taking turns within each repeat. Part two trains
the full network with `probexec.nn.train` for `--traces` traces of `--data` (or of a dataset of
prior traces made first), from the same initial weights, once per variant and repeat, in turns,
and reports training traces per second. Prints a line per figure and one JSON object at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from probexec.cores import usable_cores
from probexec.data import DatasetWriter, TraceDataset
from probexec.nn import TrainOptions, train
from probexec.nn.embeddings import ObservationEmbedding, ObservationSpec, set_conv_layout
from probexec.nn.training import build_network
from probexec.remote import RemoteModel

SIMULATOR = "tau_decay_coarse"
SHAPE = (20, 35, 35)
VARIANTS = (
    ("relu-pool", "contiguous"),
    ("pool-relu", "contiguous"),
    ("relu-pool", "channels_last"),
    ("pool-relu", "channels_last"),
)


def relu_first(module: nn.Module) -> None:
    """Puts every CNN body in `module` back in the old order: ReLU ahead of the max-pool."""
    for m in list(module.modules()):
        if not isinstance(m, nn.Sequential):
            continue
        layers = list(m)
        for i in range(len(layers) - 1):
            if isinstance(layers[i], nn.MaxPool2d | nn.MaxPool3d) and isinstance(layers[i + 1], nn.ReLU):
                layers[i], layers[i + 1] = layers[i + 1], layers[i]
        for i, layer in enumerate(layers):
            m[i] = layer


def variant(module: nn.Module, order: str, layout: str) -> nn.Module:
    out = copy.deepcopy(module)
    if order == "relu-pool":
        relu_first(out)
    set_conv_layout(out, layout)
    return out


def name(order: str, layout: str) -> str:
    return f"{order} {layout}"


def time_embedding(device: torch.device, batch_sizes: list[int], repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    base = ObservationEmbedding(ObservationSpec("calorimeter", SHAPE, "cnn3d", "symlog"), 64).to(device)
    models = {name(o, lay): variant(base, o, lay) for o, lay in VARIANTS}
    out: dict[str, Any] = {}
    for bs in batch_sizes:
        x = torch.randn(bs, *SHAPE, device=device).abs()
        ref = models[name(*VARIANTS[0])](x).detach()
        for m in models.values():  # warm-up, and the same output from every variant
            y = m(x)
            y.sum().backward()
            assert torch.allclose(y, ref, rtol=1e-4, atol=1e-5)
        runs: dict[str, list[float]] = {k: [] for k in models}
        for _ in range(repeats):
            for k, m in models.items():
                m.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                m(x).sum().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                runs[k].append(time.perf_counter() - t0)
        row = {k: 1e3 * statistics.median(v) for k, v in runs.items()}
        base_ms = row[name(*VARIANTS[0])]
        for k, ms in row.items():
            print(f"embedding batch {bs:4d}  {k:26s} {ms:8.2f} ms  x{base_ms / ms:.2f}", flush=True)
        out[str(bs)] = {"ms": row, "speedup": {k: base_ms / ms for k, ms in row.items()}}
    return out


def make_dataset(root: Path, traces: int) -> TraceDataset:
    with RemoteModel(SIMULATOR) as m, DatasetWriter(root / "tau", SIMULATOR) as w:
        w.write(m.stream(traces, seed=0))
    return TraceDataset(root / "tau")


def time_training(
    dataset: TraceDataset, device: str, traces: int, batch: int, repeats: int, threads: int | None
) -> dict[str, Any]:
    sample = []
    for g in dataset.iter_groups():
        sample.append(g)
        if sum(len(s) for s in sample) >= 512:
            break
    torch.manual_seed(0)
    base = build_network(SIMULATOR, sample, [t.layout for t in dataset.trace_types().values()])
    runs: dict[str, list[float]] = {name(o, lay): [] for o, lay in VARIANTS}
    losses: dict[str, float] = {}
    for r in range(repeats):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        for o, lay in order:
            net = variant(base, o, lay)
            opts = TrainOptions(
                batch_size=batch,
                traces=traces,
                device=device,
                progress=False,
                threads=threads,
                conv_layout=lay,
                loss_read_every=1,
            )
            result = train(SIMULATOR, dataset=dataset, network=net, options=opts)
            runs[name(o, lay)].append(result.traces_per_second)
            losses[name(o, lay)] = result.final_loss
            print(
                f"training run {r + 1}  {name(o, lay):26s} {result.traces_per_second:8.1f} traces/s  "
                f"loss {result.final_loss:.4f}",
                flush=True,
            )
    med = {k: statistics.median(v) for k, v in runs.items()}
    base_rate = med[name(*VARIANTS[0])]
    for k, v in med.items():
        print(f"training median        {k:26s} {v:8.1f} traces/s  x{v / base_rate:.2f}", flush=True)
    return {
        "traces_per_s": runs,
        "median": med,
        "speedup": {k: v / base_rate for k, v in med.items()},
        "loss": losses,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", help=f"a {SIMULATOR} dataset (default: make one of --traces prior traces)")
    ap.add_argument("--traces", type=int, default=3200, help="training traces per run")
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--skip-training", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"device {device}, {usable_cores()} usable cores, {torch.get_num_threads()} torch threads", flush=True
    )
    results: dict[str, Any] = {
        "device": str(device),
        "cores": usable_cores(),
        "threads": torch.get_num_threads(),
    }
    results["embedding"] = time_embedding(device, args.batch_sizes, args.repeats)
    if not args.skip_training:
        with tempfile.TemporaryDirectory() as tmp:
            dataset = TraceDataset(Path(args.data)) if args.data else make_dataset(Path(tmp), args.traces)
            results["training"] = time_training(
                dataset, args.device, args.traces, args.train_batch, args.repeats, args.threads
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
