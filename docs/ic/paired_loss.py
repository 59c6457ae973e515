"""Two training runs' losses, compared step by step.

    python docs/ic/paired_loss.py A.csv B.csv [--window 500]

Two `probexec train` runs with the same seed see the same minibatches in the same order, so
their losses at equal steps differ by the change under test plus much less noise than either
loss has on its own. This prints, per window of steps, both mean losses, the mean of B - A over
the logged rows and its standard error (rows taken as independent, which the logging interval
makes nearly so).
"""

from __future__ import annotations

import argparse
import csv
import math


def losses(path: str) -> dict[int, float]:
    with open(path, newline="") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--window", type=int, default=500)
    args = ap.parse_args()
    a, b = losses(args.a), losses(args.b)
    steps = sorted(set(a) & set(b))
    if not steps:
        raise SystemExit(f"{args.a} and {args.b} log no step in common")
    print("steps\tA\tB\tB-A\tse")
    for lo in range(0, steps[-1], args.window):
        window = [s for s in steps if lo < s <= lo + args.window]
        if len(window) < 2:
            continue
        d = [b[s] - a[s] for s in window]
        mean = sum(d) / len(d)
        se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d))
        mean_a = sum(a[s] for s in window) / len(window)
        mean_b = sum(b[s] for s in window) / len(window)
        print(f"{lo + 1}-{lo + args.window}\t{mean_a:.3f}\t{mean_b:.3f}\t{mean:+.3f}\t{se:.3f}")


if __name__ == "__main__":
    main()
