"""Helper processes end with the process that started them.

An engine can end without cleaning up: the OOM killer, a Slurm job's time limit, `kill -9`. Its
helpers must not then idle on the node's cores for hours. Simulator servers watch a stdin pipe
(`--exit-on-stdin-eof`, see `RemoteModel`); multiprocessing pool workers cannot, as each holds
both ends of its task queue and so never reads end of file. They watch their parent instead."""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(poll_s: float = 0.5) -> None:
    """Starts a daemon thread that ends this process (`os._exit`, no clean-up: the parent that
    would want the results is gone) once its parent has died. A process is re-parented when its
    parent dies, so a changed `getppid()` is the sign; it costs one system call per `poll_s`.

    `os._exit` closes this process's pipes, so the simulator servers it started exit in turn."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="probexec-exit-with-parent", daemon=True).start()
