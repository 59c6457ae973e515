"""A fresh simulator's first traces: what naming its new addresses (function, file:line) costs,
against a simulator told not to (`PROBEXEC_NO_ADDR2LINE=1`), side by side in one run.

    python bench/address_warmup.py [--simulator tau_decay_coarse] [--traces 10] [--pool 16] [--pool-traces 400]

Each new address is named once, by the simulator, through an addr2line co-process per module.
Part one times a fresh simulator's first traces one by one (prior traces, streamed). Part two
starts a fresh pool and times its first `--pool-traces` prior traces in per-draw mode, as IC and
RMH run them: with many simulators every one of them meets its new addresses at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior
from probexec.remote import RemoteModel

SETTINGS = {"named (addr2line)": None, "unnamed (PROBEXEC_NO_ADDR2LINE=1)": "1"}


@contextmanager
def environment(value: str | None) -> Iterator[None]:
    old = os.environ.pop("PROBEXEC_NO_ADDR2LINE", None)
    if value is not None:
        os.environ["PROBEXEC_NO_ADDR2LINE"] = value  # simulators inherit the engine's environment
    try:
        yield
    finally:
        os.environ.pop("PROBEXEC_NO_ADDR2LINE", None)
        if old is not None:
            os.environ["PROBEXEC_NO_ADDR2LINE"] = old


def first_traces(simulator: str, n: int) -> list[float]:
    with RemoteModel(simulator) as m:
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            m.stream(1, seed=i)
            out.append(1e3 * (time.perf_counter() - t0))
        return out


def fresh_pool(simulator: str, workers: int, traces: int) -> float:
    with remote_pool(simulator, workers=workers) as pool:
        t0 = time.perf_counter()
        sample_prior(pool, traces, seed=1, mode="per_draw", progress=False)
        return traces / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--simulator", default="tau_decay_coarse")
    ap.add_argument("--traces", type=int, default=10)
    ap.add_argument("--pool", type=int, default=16)
    ap.add_argument("--pool-traces", type=int, default=400)
    args = ap.parse_args()
    report: dict[str, Any] = {"simulator": args.simulator}
    for label, value in SETTINGS.items():
        with environment(value):
            ms = first_traces(args.simulator, args.traces)
            rate = fresh_pool(args.simulator, args.pool, args.pool_traces)
        report[label] = {"first_traces_ms": ms, "fresh_pool_traces_per_s": rate}
        print(
            f"{label}: first traces {', '.join(f'{t:.0f}' for t in ms)} ms; "
            f"a fresh pool of {args.pool}: {rate:.0f} traces/s over its first {args.pool_traces}",
            flush=True,
        )
    named, unnamed = (report[k] for k in SETTINGS)
    print(
        f"first {args.traces} traces: {sum(named['first_traces_ms']):.0f} ms named against "
        f"{sum(unnamed['first_traces_ms']):.0f} unnamed; fresh pool {named['fresh_pool_traces_per_s']:.0f} "
        f"against {unnamed['fresh_pool_traces_per_s']:.0f} traces/s "
        f"({named['fresh_pool_traces_per_s'] / unnamed['fresh_pool_traces_per_s']:.2f}x)"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
