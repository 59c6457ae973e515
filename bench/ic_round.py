"""One IC round's per-address layers: the row-vector `index_select` form against the column-vector
advanced-indexing form it replaced, side by side in one run, as one layer and in whole IC runs.

    python bench/ic_round.py [--network NET] [--simulator tau_decay_coarse] [--traces 800]
        [--in-flight 16 32] [--rows 8 16 32 64]

An IC round gathers each row's weights by its address (`probexec.nn.stacked`). Part one times
the first head layer alone (71 addresses of 128 x 128, as in the tau network) at each number of
rows. Part two runs IC on one prior event of the simulator with each form in turn (each twice,
alternating), and reports traces per second and the driver's own CPU time per trace
(`time.process_time` of this process: the simulators are processes of their own). Without
`--network` an untrained network is built from 300 prior traces: the layers' cost does not depend
on their weights, though the addresses a trace visits do.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import probexec.nn.stacked as stacked
from probexec.data import DatasetWriter, TraceDataset
from probexec.inference.ic import ic_posterior
from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior
from probexec.nn import load_checkpoint
from probexec.nn.training import build_network
from probexec.simulators import get_simulator


def column_linear(weight: Tensor, bias: Tensor, rows: Tensor, x: Tensor) -> Tensor:
    """The earlier form: weights stacked [S, out, in], gathered by advanced indexing, times x as
    a column."""
    return torch.baddbmm(bias[rows].unsqueeze(-1), weight[rows], x.unsqueeze(-1)).squeeze(-1)


def column_tables(layers: Sequence[Tensor]) -> Tensor:
    return torch.stack(list(layers))


FORMS: dict[str, tuple[Callable[..., Tensor], Callable[[Sequence[Tensor]], Tensor]]] = {
    "column, advanced indexing": (column_linear, column_tables),
    "row, index_select": (stacked._gathered_linear, stacked._transposed),
}


def use(form: str) -> None:
    stacked._gathered_linear, stacked._transposed = FORMS[form]


def time_call(fn: Callable[[], Any], repeats: int = 400) -> float:
    for _ in range(20):
        fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def layer_figures(rows_list: Sequence[int], sites: int = 71, hidden: int = 128) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    layers = [torch.randn(hidden, hidden, generator=gen) for _ in range(sites)]
    bias = torch.randn(sites, hidden, generator=gen)
    out = []
    for r in rows_list:
        rows = torch.randint(0, sites, (r,), generator=gen)
        x = torch.randn(r, hidden, generator=gen)
        row: dict[str, Any] = {"rows": r}
        results = []
        for form, (linear, tables) in FORMS.items():
            w = tables(layers)
            row[form] = 1e6 * time_call(lambda linear=linear, w=w, rows=rows, x=x: linear(w, bias, rows, x))
            results.append(linear(w, bias, rows, x))
        torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-4)
        out.append(row)
    return out


def untrained_network(simulator: str, root: Path) -> Any:
    with DatasetWriter(root / "data", simulator) as writer, remote_pool(simulator, workers=2) as pool:
        sample_prior(pool, 300, seed=0, progress=False, sink=writer.add)
    return build_network(simulator, list(TraceDataset(root / "data").iter_groups()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--network", help="a checkpoint from `probexec train` (default: untrained)")
    ap.add_argument("--simulator", default="tau_decay_coarse")
    ap.add_argument("--traces", type=int, default=800)
    ap.add_argument("--in-flight", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--rows", type=int, nargs="+", default=[8, 16, 32, 64])
    args = ap.parse_args()
    torch.set_num_threads(1)
    report: dict[str, Any] = {"layer_us": layer_figures(args.rows), "ic": []}
    names = list(FORMS)
    print("first head layer, 71 addresses of 128 x 128, one thread (microseconds per round):")
    for row in report["layer_us"]:
        a, b = row[names[0]], row[names[1]]
        print(f"  {row['rows']:3d} rows: {names[0]} {a:7.0f}, {names[1]} {b:7.0f}: {a / b:4.1f}x")
    with tempfile.TemporaryDirectory() as tmp:
        if args.network:
            net, _ = load_checkpoint(args.network, simulator=args.simulator, device="cpu")
        else:
            net = untrained_network(args.simulator, Path(tmp))
        info = get_simulator(args.simulator)
        for k in args.in_flight:
            with remote_pool(args.simulator, workers=k) as pool:
                event = sample_prior(pool, 1, seed=99, mode="stream", progress=False)
                observe = {o: event.values_of(o)[0] for o in info.observed}
                ic_posterior(net, pool.models, args.traces // 2, observe, seed=1)  # simulators warm
                for rep in range(2):
                    for form in names if rep == 0 else names[::-1]:
                        use(form)
                        cpu0, wall0 = time.process_time(), time.perf_counter()
                        post = ic_posterior(net, pool.models, args.traces, observe, seed=2)
                        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                        r = {
                            "form": form,
                            "in_flight": k,
                            "traces_per_s": args.traces / wall,
                            "driver_cpu_ms_per_trace": 1e3 * cpu / args.traces,
                            "mean_batch": post.stats["mean_batch"],
                            "ess": post.ess,
                        }
                        report["ic"].append(r)
                        print(
                            f"IC {args.simulator}, {k} in flight, {form}: {r['traces_per_s']:5.0f} traces/s, "
                            f"driver CPU {r['driver_cpu_ms_per_trace']:5.2f} ms a trace, mean batch "
                            f"{r['mean_batch']:4.1f}, ESS {r['ess']:.1f}",
                            flush=True,
                        )
        use(names[1])
    print(json.dumps(report))


if __name__ == "__main__":
    main()
