"""A simulator of your own, named by the path of its executable, as a `SimulatorInfo`.

The built-in simulators declare their latent and observed names in `simulators.py`. An executable
built against the C++ front end declares nothing up front: the names and shapes are whatever its
`sample`, `observe` and `tag` calls use. So they are read off a few prior traces, once per process
and build of the executable. The simulator's name (what datasets and networks record, and check
on load) is the model name its `serve` call announces in the handshake, not the path: a network
trained on `build/my_simulator` still loads for the same program installed elsewhere.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import numpy as np

from probexec.simulators import SimulatorInfo

DESCRIBE_TRACES = 64  # prior traces whose names make the description; a branch none reaches is missed
DESCRIBE_SECONDS = 2.0  # fewer traces where they take long (a Geant4 event can take seconds); at least 1
DESCRIBE_SEED = 0


def is_executable_path(spec: str) -> bool:
    """Whether a simulator argument names an executable rather than a built-in: it holds a path
    separator, as a shell needs to run a program from a folder (`./my_simulator`)."""
    return os.sep in spec or (os.altsep is not None and os.altsep in spec)


def simulator_name(spec: str | SimulatorInfo) -> str:
    """The name datasets and networks record for `spec`: a described executable's model name, or
    the name as given (a built-in, a Python model's name)."""
    if isinstance(spec, SimulatorInfo):
        return spec.name
    return describe_executable(spec).name if is_executable_path(spec) else spec


def describe_executable(path: str | os.PathLike[str], traces: int = DESCRIBE_TRACES) -> SimulatorInfo:
    """The executable's name, latents (named samples, then tags) and observations with their
    shapes, from `traces` prior traces (seed `DESCRIBE_SEED`), or as many as fit in about
    `DESCRIBE_SECONDS`, at least one. Cached while the file is unchanged."""
    exe = Path(path).expanduser().resolve()
    if not exe.exists():
        raise FileNotFoundError(f"simulator executable {path} not found")
    if not exe.is_file() or not os.access(exe, os.X_OK):
        raise ValueError(f"simulator {path} is not an executable file")
    st = exe.stat()
    return _describe(str(exe), st.st_mtime_ns, st.st_size, traces)


@functools.lru_cache(maxsize=16)
def _describe(exe: str, _mtime_ns: int, _size: int, traces: int) -> SimulatorInfo:
    from probexec.errors import ProbexecError, SimulatorError
    from probexec.remote import RemoteModel
    from probexec.trace import OBSERVE, SAMPLE, TAG, TraceBatch

    try:
        model = RemoteModel(executable=exe)
    except ProbexecError as e:
        # Most often a program that is not a probexec simulator at all.
        raise type(e)(
            f"{e}\n{exe} does not serve probexec: is it a simulator built with probexec::serve?"
        ) from e
    with model:
        t0 = time.perf_counter()
        first_trace = model.prior(1, seed=DESCRIBE_SEED, progress=False)
        more = min(traces - 1, int(DESCRIBE_SECONDS / max(time.perf_counter() - t0, 1e-6)))
        parts = [first_trace]
        if more > 0:
            parts.append(model.prior(more, seed=DESCRIBE_SEED + 1, progress=False))
        batch = TraceBatch.concat(parts)
        name = model.model_name or Path(exe).name
    failed = [e for e in batch.errors if e]
    if len(failed) == batch.num_traces:
        raise SimulatorError(
            f"simulator {exe}: all {batch.num_traces} prior traces failed; the first: {failed[0]}"
        )
    # Names in the order the traces first use them.
    ids, first = np.unique(batch.address_id, return_index=True)
    by_kind: dict[int, list[str]] = {SAMPLE: [], OBSERVE: [], TAG: []}
    observed: dict[str, tuple[int, ...]] = {}
    for address_id, row in sorted(zip(ids.tolist(), first.tolist(), strict=True), key=lambda p: p[1]):
        record = batch.addresses[int(address_id)]
        if not record.name or record.name in by_kind[record.kind]:
            continue
        by_kind[record.kind].append(record.name)
        if record.kind == OBSERVE:
            shape = batch.shapes[batch.shape_offsets[row] : batch.shape_offsets[row + 1]]
            observed[record.name] = tuple(int(s) for s in shape)
    latents = by_kind[SAMPLE] + [t for t in by_kind[TAG] if t not in by_kind[SAMPLE]]
    return SimulatorInfo(
        name,
        exe,
        f"{exe}: names read off {batch.num_traces} prior traces",
        tuple(latents),
        observed,
    )
