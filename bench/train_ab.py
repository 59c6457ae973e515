"""`probexec train` at two revisions of the Python engine, side by side in one run.

    python bench/train_ab.py --data DIR [--base REV] [--simulator tau_decay_coarse] [--traces 3200]
        [--batch-size 64] [--repeats 3] [-- EXTRA TRAIN ARGS]

Each run is a fresh `probexec train SIM --data DIR --traces N --batch-size B --json` process with
the revision's own defaults, the two revisions taking turns (the first to go alternates). It
reports training traces per second and the share of time spent waiting for data, per run and as
medians. The trees are made as in `ic_driver_ab.py`: the installed build's compiled parts with
each revision's Python files, so only Python changes are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ic_driver_ab import REPO, base_sources, make_tree


def run_once(tree: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "probexec", "train", args.simulator, "--data", args.data, "-o", str(out)]
    cmd += [
        "--traces",
        str(args.traces),
        "--batch-size",
        str(args.batch_size),
        "--json",
        "--quiet",
        *args.extra,
    ]
    done = subprocess.run(
        cmd, env=dict(os.environ, PYTHONPATH=str(tree)), capture_output=True, text=True, cwd=tree
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the run with {tree.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a dataset from `probexec prior`")
    ap.add_argument("--base", default="HEAD", help="the git revision to compare against (default HEAD)")
    ap.add_argument("--simulator", default="tau_decay_coarse")
    ap.add_argument("--traces", type=int, default=3200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("extra", nargs="*", help="more `probexec train` arguments, after --")
    args = ap.parse_args()
    names = (f"base {args.base}", "working tree")
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trees = {
            names[0]: make_tree(root, "base", base_sources(root, args.base)),
            names[1]: make_tree(root, "work", REPO / "python" / "probexec"),
        }
        for r in range(args.repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                d = run_once(trees[name], args, root / f"net{r}.pt")
                runs[name].append(d)
                print(
                    f"run {r + 1} {name:>14s}: {d['traces_per_s']:7.1f} traces/s, waiting for data "
                    f"{100 * d['wait_fraction']:.1f} %",
                    flush=True,
                )
    med = {n: statistics.median(d["traces_per_s"] for d in runs[n]) for n in names}
    print(
        f"medians of {args.repeats}: {med[names[0]]:.1f} -> {med[names[1]]:.1f} traces/s (x{med[names[1]] / med[names[0]]:.2f})"
    )
    print(json.dumps({"args": vars(args), "runs": runs, "medians": med}))


if __name__ == "__main__":
    main()
