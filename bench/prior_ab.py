"""Prior traces per second and the simulators' CPU a trace, streamed and per draw, for two builds
of probexec side by side in one run.

    cp -r .venv/lib/python3.11/site-packages/probexec OLD/    # before rebuilding
    python bench/prior_ab.py --base-package OLD/probexec [--simulator tau_decay_coarse] [--repeats 3]

Each run is a fresh process on a pool of `--workers` simulators: 200 traces of warm-up, then
`--stream` traces streamed and `--per-draw` traces draw by draw. The base runs the copied package
as it is (its Python and compiled parts); the other runs the installed one. The runs alternate
which goes first, so both see the same machine noise. The simulators' CPU comes from `/proc`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

MEASURE = (
    f"BENCH_DIR = {str(Path(__file__).resolve().parent)!r}\n"
    + r"""
import json, os, sys, time
from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior

sys.path.insert(0, BENCH_DIR)
from proc_cpu import cpu_of

simulator, workers, n_stream, n_draw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = {}
with remote_pool(simulator, workers=workers) as pool:
    pids = [m.pid for m in pool.models]
    for mode, n in (("stream", n_stream), ("per_draw", n_draw)):
        sample_prior(pool, 200, seed=1, mode=mode, progress=False)
        c0, t0 = cpu_of(pids), time.perf_counter()
        sample_prior(pool, n, seed=2, mode=mode, progress=False)
        out[mode] = {"traces_per_s": n / (time.perf_counter() - t0), "simulators_cpu_ms": 1e3 * (cpu_of(pids) - c0) / n}
print(json.dumps(out))
"""
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-package", required=True, help="a copy of an earlier installed probexec package")
    ap.add_argument("--simulator", default="tau_decay_coarse")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stream", type=int, default=4000, help="traces streamed a run")
    ap.add_argument("--per-draw", type=int, default=1000, help="traces drawn draw by draw a run")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    base_root = str(Path(args.base_package).resolve().parent)
    trees = {"base": base_root, "installed": ""}
    argv = [args.simulator, str(args.workers), str(args.stream), str(args.per_draw)]
    results: dict[str, list[dict]] = {name: [] for name in trees}
    for rep in range(args.repeats):
        for name in list(trees) if rep % 2 == 0 else list(trees)[::-1]:
            env = dict(os.environ, PYTHONPATH=trees[name], OMP_NUM_THREADS="1")
            done = subprocess.run(
                [sys.executable, "-c", MEASURE, *argv], env=env, capture_output=True, text=True, cwd="/"
            )
            if done.returncode != 0:
                raise SystemExit(f"the {name} run failed:\n{done.stderr[-3000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            results[name].append(r)
            print(
                f"{name:>9}: "
                + ", ".join(
                    f"{mode} {v['traces_per_s']:5.0f} traces/s, simulators {v['simulators_cpu_ms']:.2f} ms a trace"
                    for mode, v in r.items()
                ),
                flush=True,
            )
    for mode in ("stream", "per_draw"):
        med = {
            name: {
                key: statistics.median(r[mode][key] for r in rs)
                for key in ("traces_per_s", "simulators_cpu_ms")
            }
            for name, rs in results.items()
        }
        b, n = med["base"], med["installed"]
        print(
            f"{mode}, medians of {args.repeats}: traces/s {b['traces_per_s']:.0f} -> {n['traces_per_s']:.0f}, "
            f"simulators' CPU {b['simulators_cpu_ms']:.2f} -> {n['simulators_cpu_ms']:.2f} ms a trace "
            f"({b['simulators_cpu_ms'] / n['simulators_cpu_ms']:.2f}x less)"
        )
    print(json.dumps({"args": vars(args), "runs": results}))


if __name__ == "__main__":
    main()
