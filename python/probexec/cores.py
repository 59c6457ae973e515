"""How many cores this process may run on: the default size of every pool, driver and thread count.

`os.cpu_count()` counts the machine's cores. Under Slurm (`--cpus-per-task`), in a container with a
CPU set, or under `taskset`, a process may run on fewer, and a pool sized by the machine would
start one simulator per core it does not have: on a 128-core node with 8 allotted, 128 simulators
sharing 8 cores. The affinity mask is what the scheduler granted.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity masks on this platform
        return os.cpu_count() or 1
