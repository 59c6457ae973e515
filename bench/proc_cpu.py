"""CPU seconds used so far by a set of processes, from `/proc` (every thread, user and system).

The A/B benches import it inside the child processes they start, each under another package tree,
to charge the simulators' share of a run to each build."""

from __future__ import annotations

import os


def cpu_of(pids: list[int]) -> float:
    total = 0
    for p in pids:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")
