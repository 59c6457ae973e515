"""Analytics benchmark: throughput (traces/s) and peak memory of one streaming analysis pass
(address table, trace types, transition graph) over N GUM traces, for several N, each in a fresh
process so peak memory is its own. One JSON object.

The analysis alone: one 50 000-trace chunk is streamed from the simulator once and fed N / 50 000
times (the analysis does the same work on a repeated chunk as on new ones). End to end: N traces
simulated and analysed in the same pass (`sim:gum:N`, one simulator process).

    python bench/analytics.py [--sizes 100000 300000 1000000] [--end-to-end 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

CHUNK = 50_000


def _status(key: str) -> int:
    """VmRSS / VmHWM of this process in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def one(n: int, end_to_end: bool) -> dict:
    import probexec
    from probexec.analytics import analyse, open_source
    from probexec.analytics.sources import memory_source

    if end_to_end:
        source = open_source(f"sim:gum:{n}:1", workers=1)
        base = _status("VmRSS")
    else:
        with probexec.RemoteModel("gum") as m:
            chunk = m.stream(CHUNK, seed=1)

        def chunks():
            for _ in range(n // CHUNK):
                yield chunk

        source = memory_source(chunks(), "gum")
        base = _status("VmRSS")
    t0 = time.perf_counter()
    a = analyse(source, progress=False)
    secs = time.perf_counter() - t0
    assert a.num_traces == n, (a.num_traces, n)
    return {
        "traces": n,
        "seconds": secs,
        "traces_per_s": n / secs,
        "rss_before_mb": base / 2**20,
        "peak_rss_mb": _status("VmHWM") / 2**20,
        "peak_growth_mb": (_status("VmHWM") - base) / 2**20,
        "state_mb": a.addresses.nbytes() / 2**20,
        "trace_types": len(a.types.types),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="*", default=[100_000, 300_000, 1_000_000])
    p.add_argument("--end-to-end", type=int, default=1_000_000)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    p.add_argument("--e2e", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.e2e)))
        return

    def run(n: int, e2e: bool) -> dict:
        cmd = [sys.executable, __file__, "--one", str(n)] + (["--e2e"] if e2e else [])
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(r.stdout.strip().splitlines()[-1])

    analysis = [run(n, False) for n in args.sizes]
    out: dict = {"analysis_only": analysis}
    if len(analysis) >= 2:
        a, b = analysis[0], analysis[-1]
        out["time_ratio_per_trace_largest_vs_smallest"] = (b["seconds"] / b["traces"]) / (
            a["seconds"] / a["traces"]
        )
        out["peak_growth_ratio_largest_vs_smallest"] = b["peak_growth_mb"] / max(a["peak_growth_mb"], 1e-9)
    if args.end_to_end:
        out["end_to_end"] = run(args.end_to_end, True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
