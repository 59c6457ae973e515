"""A pool of simulator processes, each its own ZeroMQ server, so inference on a slow simulator
uses every core. Work is cut into chunks with their own seeds (so results do not depend on which
worker ran a chunk); a worker that dies hands its chunk back and the run goes on with the others.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from probexec.cores import usable_cores
from probexec.errors import ProbexecError, SimulatorDiedError, SimulatorTimeoutError
from probexec.model import Model
from probexec.simulators import SimulatorInfo
from probexec.trace import AddressTable

T = TypeVar("T")

_START_THREADS = 32  # models started at once


class PoolExhaustedError(ProbexecError):
    """Every worker died; `partial` holds the results of the chunks that were finished."""

    def __init__(self, message: str, partial: dict[int, Any]) -> None:
        super().__init__(message)
        self.partial = partial


@dataclass
class ModelPool:
    """`workers` models made by `factory` (started at once, closed by `close`)."""

    factory: Callable[[AddressTable], Model]
    workers: int = field(default_factory=usable_cores)
    models: list[Model] = field(init=False)
    addresses: AddressTable = field(init=False)
    failures: list[str] = field(init=False, default_factory=list)
    dead: set[int] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        self.addresses = AddressTable()  # shared: address ids are stable across processes
        self.models = []
        # Started side by side: each start waits on its process (exec, bind, handshake), about
        # 150 ms for a tau simulator, so 32 of them one after the other took 4.9 s.
        with ThreadPoolExecutor(max_workers=min(self.workers, _START_THREADS)) as ex:
            started = [ex.submit(self.factory, self.addresses) for _ in range(self.workers)]
        errors = []
        for f in started:
            try:
                self.models.append(f.result())
            except BaseException as e:  # every started model is closed before raising
                errors.append(e)
        if errors:
            self.close()
            raise errors[0]

    @property
    def name(self) -> str:
        return self.models[0].name

    @property
    def supports_streaming(self) -> bool:
        return all(m.supports_streaming for m in self.models)

    def map(
        self,
        jobs: Sequence[T],
        run: Callable[[Model, int, T], Any],
        on_done: Callable[[int], None] | None = None,
    ) -> list[Any]:
        """Runs `run(model, index, job)` for every job on the workers; results in job order."""
        todo: queue.Queue[int] = queue.Queue()
        for i in range(len(jobs)):
            todo.put(i)
        results: dict[int, Any] = {}
        errors: list[BaseException] = []
        lock = threading.Lock()

        def worker(k: int, model: Model) -> None:
            while not errors:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    r = run(model, i, jobs[i])
                except (SimulatorDiedError, SimulatorTimeoutError) as e:
                    # This worker is gone: its job goes back for the others.
                    with lock:
                        self.failures.append(str(e))
                        self.dead.add(k)
                    todo.put(i)
                    return
                except BaseException as e:
                    with lock:
                        errors.append(e)
                    return
                with lock:
                    results[i] = r
                if on_done is not None:
                    on_done(i)

        threads = [
            threading.Thread(target=worker, args=(k, m), daemon=True)
            for k, m in enumerate(self.models)
            if k not in self.dead
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        if len(results) < len(jobs):
            raise PoolExhaustedError(
                f"every worker of the {self.name!r} pool died with {len(jobs) - len(results)} of {len(jobs)} chunks "
                f"left; last failure: {self.failures[-1] if self.failures else '?'}",
                results,
            )
        return [results[i] for i in range(len(jobs))]

    def close(self) -> None:
        for m in self.models:
            m.close()

    def __enter__(self) -> ModelPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remote_pool(simulator: str | SimulatorInfo, workers: int | None = None, **kwargs: Any) -> ModelPool:
    """A pool of `workers` servers of a simulator (default: one per core): a built-in by name, your
    own by its executable's path, or one described already (`get_simulator`)."""
    from probexec.remote import RemoteModel

    return ModelPool(
        lambda addresses: RemoteModel(simulator, addresses=addresses, **kwargs),
        workers or usable_cores(),
    )
