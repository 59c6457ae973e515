"""The IC driver's cost per trace at two revisions of the Python engine, side by side in one run.

    python bench/ic_driver_ab.py --network NET [--base REV | --base-package DIR]
        [--simulator tau_decay_coarse] [--in-flight 32] [--traces 1600] [--repeats 3]

IC on one prior event (seed 99) of the simulator, with the checkpoint NET, once per revision and
repeat, alternating which goes first. Each run is a fresh process on a pool of `--in-flight`
simulators, warmed by 400 traces first. It reports traces per second, the driver's own CPU time
per trace (`time.process_time` of that process) and the simulators' (from `/proc`), the mean
batch and the ESS.

Both revisions run with the installed build's compiled parts (the `_core` extension, the
simulators, the generated protocol code) and their own Python files: the base revision's come
from `git archive`, the other's from this working tree. So this compares Python changes only; a
revision whose Python needs another build of the C++ parts cannot be compared this way.

To compare C++ changes (the simulators, the front end, `_core`), copy the installed package
before rebuilding (`cp -r .venv/lib/python3.11/site-packages/probexec OLD/`) and pass
`--base-package OLD/probexec`: that copy runs as it is, against the new build with this working
tree's Python.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# Runs in a child process whose `probexec` is one of the two trees.
MEASURE = (
    f"BENCH_DIR = {str(Path(__file__).resolve().parent)!r}\n"
    + r"""
import json, os, sys, time
import torch
from probexec.inference.ic import ic_posterior
from probexec.inference.pool import remote_pool
from probexec.inference.prior import sample_prior
from probexec.nn import load_checkpoint
from probexec.simulators import get_simulator

sys.path.insert(0, BENCH_DIR)
from proc_cpu import cpu_of

if __name__ == "__main__":
    network, simulator, k, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    net, _ = load_checkpoint(network, simulator=simulator, device="cpu")
    info = get_simulator(simulator)
    with remote_pool(simulator, workers=k) as pool:
        pids = [m.pid for m in pool.models]
        event = sample_prior(pool, 1, seed=99, mode="stream", progress=False)
        observe = {o: event.values_of(o)[0] for o in info.observed}
        ic_posterior(net, pool.models, 400, observe, seed=1)
        sims0, cpu0, wall0 = cpu_of(pids), time.process_time(), time.perf_counter()
        post = ic_posterior(net, pool.models, n, observe, seed=2)
        wall, cpu, sims = time.perf_counter() - wall0, time.process_time() - cpu0, cpu_of(pids) - sims0
    print(json.dumps({
        "traces_per_s": n / wall,
        "driver_cpu_ms": 1e3 * cpu / n,
        "simulators_cpu_ms": 1e3 * sims / n,
        "mean_batch": post.stats["mean_batch"],
        "ess": post.ess,
    }))
"""
)


def installed_package() -> Path:
    import probexec

    return Path(probexec.__file__).resolve().parent


def make_tree(root: Path, name: str, python_files: Path) -> Path:
    """A copy of the installed package with `python_files` (a `probexec` source folder) laid over
    it: the compiled parts of the build, the Python of one revision."""
    tree = root / name
    shutil.copytree(installed_package(), tree / "probexec", ignore=shutil.ignore_patterns("__pycache__"))
    for f in python_files.rglob("*.py"):
        dest = tree / "probexec" / f.relative_to(python_files)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    return tree


def base_sources(root: Path, rev: str) -> Path:
    out = root / "base-src"
    out.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "python/probexec"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "python" / "probexec"


def run_once(tree: Path, args: argparse.Namespace, script: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(script), args.network, args.simulator, str(args.in_flight), str(args.traces)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tree,
    )
    if done.returncode != 0:
        raise SystemExit(f"the run with {tree.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--network", required=True, help="a checkpoint from `probexec train`")
    ap.add_argument("--base", default="HEAD", help="the git revision to compare against (default HEAD)")
    ap.add_argument(
        "--base-package",
        help="a copy of an earlier installed probexec package (compiled parts included) to run as the base",
    )
    ap.add_argument("--simulator", default="tau_decay_coarse")
    ap.add_argument("--in-flight", type=int, default=32)
    ap.add_argument("--traces", type=int, default=1600)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    args.network = str(Path(args.network).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        script = root / "measure.py"
        script.write_text(MEASURE)
        if args.base_package:
            base_name = f"base {Path(args.base_package).resolve().parent.name}"
            base_tree = root / "base"
            shutil.copytree(
                args.base_package, base_tree / "probexec", ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            base_name = f"base {args.base}"
            base_tree = make_tree(root, "base", base_sources(root, args.base))
        trees = {
            base_name: base_tree,
            "working tree": make_tree(root, "work", REPO / "python" / "probexec"),
        }
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for rep in range(args.repeats):
            order = list(trees) if rep % 2 == 0 else list(trees)[::-1]
            for name in order:
                r = run_once(trees[name], args, script)
                results[name].append(r)
                print(
                    f"{name:>16}: {r['traces_per_s']:5.0f} traces/s, driver CPU {r['driver_cpu_ms']:5.2f} ms a "
                    f"trace, simulators {r['simulators_cpu_ms']:5.2f} ms, mean batch {r['mean_batch']:4.1f}, "
                    f"ESS {r['ess']:.1f}",
                    flush=True,
                )
    base, work = (results[n] for n in trees)
    summary = {
        key: {
            "base": statistics.median(r[key] for r in base),
            "work": statistics.median(r[key] for r in work),
        }
        for key in ("traces_per_s", "driver_cpu_ms", "simulators_cpu_ms")
    }
    print(
        f"medians of {args.repeats}: driver CPU {summary['driver_cpu_ms']['base']:.2f} -> "
        f"{summary['driver_cpu_ms']['work']:.2f} ms a trace "
        f"({summary['driver_cpu_ms']['base'] / summary['driver_cpu_ms']['work']:.2f}x less), traces/s "
        f"{summary['traces_per_s']['base']:.0f} -> {summary['traces_per_s']['work']:.0f}, simulators' CPU "
        f"{summary['simulators_cpu_ms']['base']:.2f} -> {summary['simulators_cpu_ms']['work']:.2f} ms a trace "
        f"({summary['simulators_cpu_ms']['base'] / summary['simulators_cpu_ms']['work']:.2f}x less)"
    )
    print(json.dumps({"args": vars(args), "runs": results, "medians": summary}))


if __name__ == "__main__":
    main()
