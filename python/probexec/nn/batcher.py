"""The trainer's side of the batch process (`probexec.data.batch_process`): starts it, reads its
minibatches straight into (pinned) tensors in a thread, and hands them out epoch by epoch.

The thread does little Python work per batch (a header of a few hundred bytes to unpickle; the
arrays are read from the pipe into one pinned buffer with no copy in between, the GIL released),
so the training loop keeps its process to itself. Pinned memory is allocated here, in the training
process, by torch's caching host allocator: tensors are views of that buffer, so a non-blocking
copy to the GPU keeps the buffer alive until the copy is done.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from probexec.data.batch_process import DrawSpec, Message, PipelineConfig, Plan, batcher_main, read_message
from probexec.data.layout import TypeGroup, TypeLayout
from probexec.errors import ProbexecError
from probexec.nn.device_draw import NormalObservation, SparseTensor

_POLL = 0.2  # seconds between looks at the batcher's health and at a stop while waiting
_DTYPES = {
    np.dtype(np.float32).str: torch.float32,
    np.dtype(np.float64).str: torch.float64,
    np.dtype(np.int32).str: torch.int32,
    np.dtype(np.int64).str: torch.int64,
}


class BatchProcessError(ProbexecError):
    """The batch process ended without saying why (killed, out of memory)."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in the batch process (its `__cause__` here)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\nin the batch process:\n{self.text}"


def tensors_of(message: Message) -> list[torch.Tensor]:
    """The message's arrays as tensors: views of its buffer (so that the caching host allocator,
    which owns it, knows when a copy to the device still reads it)."""
    buf: torch.Tensor = message.buffer
    typed: dict[str, torch.Tensor] = {}  # the buffer viewed as each dtype (offsets are aligned)
    out = []
    for (dt, shape, n), off in zip(message.specs, message.offsets, strict=True):
        t = typed.get(dt)
        if t is None:
            dtype = _DTYPES[dt]
            t = typed[dt] = buf[: len(buf) // dtype.itemsize * dtype.itemsize].view(dtype)
        size = t.element_size()
        out.append(t[off // size : (off + n) // size].view(shape))
    return out


@dataclass
class PreparedBatch:
    """A minibatch as tensors, on the host (pinned for CUDA), ready to move to the device."""

    group: TypeGroup
    values: torch.Tensor
    params: torch.Tensor
    observations: dict[str, torch.Tensor]
    to_draw: dict[str, NormalObservation] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)

    def on(
        self, device: torch.device, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Values, parameters and observations on `device` (observations left to draw drawn there)."""
        obs = {k: v.to(device, non_blocking=True) for k, v in self.observations.items()}
        obs.update({k: o.draw(device, generator) for k, o in self.to_draw.items()})
        return (
            self.values.to(device, non_blocking=True),
            self.params.to(device, non_blocking=True),
            obs,
        )


def prepared_from_arrays(
    layout: TypeLayout, drawn: tuple[str, ...], to_draw: tuple[DrawSpec, ...], arrays: list[torch.Tensor]
) -> PreparedBatch:
    """A PreparedBatch from a HostBatch's fields with its arrays as tensors (its `group` holds
    only the layout and the values and params, as arrays sharing the tensors' memory)."""
    values, params = arrays[0], arrays[1]
    i = 2 + len(drawn)
    obs = dict(zip(drawn, arrays[2:i], strict=True))
    normal = {}
    for d in to_draw:
        lr, lc, lv, sr, sc, sv = arrays[i : i + 6]
        i += 6
        normal[d.name] = NormalObservation(
            d.shape, d.n, d.size, SparseTensor(d.loc_fill, lr, lc, lv), SparseTensor(d.scale_fill, sr, sc, sv)
        )
    group = TypeGroup(layout, values.numpy(), params.numpy(), {})
    return PreparedBatch(group, values, params, obs, normal)


class BatchProcess:
    """A running batcher for one training run. `plan()` once, then `sample()` (if asked for) and
    `epoch(e)` for each epoch in order; `close()` always (it ends the process and its readers).

    `depth` minibatches wait here ready (pinned) for the training loop; the batcher holds up to
    256 more (256 MB), ready to send, so it stays ahead while it refills its shuffle buffer."""

    def __init__(self, config: PipelineConfig, *, pin: bool = False, depth: int = 4) -> None:
        self.config = config
        self.pin = pin
        self.waited = 0.0
        ctx = mp.get_context("spawn")  # the trainer holds CUDA and OpenMP state a fork must not copy
        commands_in, self._commands = ctx.Pipe(duplex=False)
        self._out, out_w = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=batcher_main, args=(commands_in, out_w), name="probexec-batcher", daemon=False
        )
        self.process.start()
        # Only the batcher holds these ends now: its exit closes the pipe (EOF here) and ours
        # closing stops it.
        commands_in.close()
        out_w.close()
        # Commands go from a thread: the config (the dataset's shard table) is large, a pipe
        # takes 64 kB until the batcher reads, which it does once it has imported probexec
        # (seconds), and the trainer has a checkpoint to load and a network to build meanwhile.
        self._outbox: queue.Queue[Any] = queue.Queue()
        self._outbox.put(config)
        self._sender = threading.Thread(target=self._send, name="probexec-batch-commands", daemon=True)
        self._sender.start()
        self._ready: queue.Queue[tuple[str, Any]] = queue.Queue(depth)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="probexec-batch-receiver", daemon=True)
        self._thread.start()

    # --- the receiving thread ----------------------------------------------------------------------
    def _alloc(self, nbytes: int) -> tuple[torch.Tensor, memoryview]:
        buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin)
        return buf, memoryview(buf.numpy())

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._closing.is_set():
            try:
                self._ready.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _receive(self) -> None:
        fd = self._out.fileno()
        layouts: dict[str, TypeLayout] = {}
        try:
            while not self._closing.is_set():
                if not self._out.poll(_POLL):
                    if not self.process.is_alive() and not self._out.poll(0):
                        raise self._died()
                    continue
                try:
                    m = read_message(fd, self._alloc)
                except EOFError:
                    raise self._died() from None
                if m.kind == "batch":
                    key, layout, drawn, to_draw = m.payload
                    if layout is not None:
                        layouts[key] = layout
                    batch = prepared_from_arrays(layouts[key], drawn, to_draw, tensors_of(m))
                    item: tuple[str, Any] = ("batch", batch)
                else:
                    item = (m.kind, m.payload)
                if not self._put(item) or m.kind in ("done", "error"):
                    return
        except BaseException as e:
            self._put(("failed", e))

    def _died(self) -> BatchProcessError:
        self.process.join(timeout=2.0)
        return BatchProcessError(
            f"the batch process ended unexpectedly (exit code {self.process.exitcode}); "
            "was it killed, or out of memory?"
        )

    # --- the training loop's side --------------------------------------------------------------------
    def _send(self) -> None:
        while (message := self._outbox.get()) is not None:
            with contextlib.suppress(OSError):  # the batcher died: the receiver reports it
                self._commands.send(message)

    def plan(self, plan: Plan) -> None:
        self._outbox.put(plan)

    def _get(self) -> tuple[str, Any]:
        """The next message from the batcher, waiting (and counting the wait) as long as it is
        alive; its failures raised here."""
        t0 = time.perf_counter()
        try:
            while True:
                try:
                    kind, payload = self._ready.get(timeout=_POLL)
                    break
                except queue.Empty:
                    if not self._thread.is_alive() and self._ready.empty():
                        raise BatchProcessError("the batch process's receiver stopped") from None
        finally:
            self.waited += time.perf_counter() - t0
        if kind == "error":
            exc, text = payload
            exc.__cause__ = RemoteTraceback(text)
            raise exc
        if kind == "failed":
            raise payload
        if kind == "skipped":  # the dataset skips a damaged shard: warn here, as it would
            self.config.dataset._corrupt(payload)
            return self._get()
        return kind, payload

    def sample(self) -> list[TypeGroup]:
        kind, payload = self._get()
        if kind != "sample":
            raise BatchProcessError(f"the batch process sent {kind!r} where the sample was due")
        return payload

    def epoch(self, epoch: int) -> Iterator[PreparedBatch]:
        """The PreparedBatches of `epoch` (the next the batcher sends)."""
        while True:
            kind, payload = self._get()
            if kind == "batch":
                yield payload
            elif kind == "end" and payload == epoch:
                return
            else:
                raise BatchProcessError(f"the batch process sent {kind!r} {payload!r} in epoch {epoch}")

    def close(self) -> None:
        """Stops the batcher and its readers and waits for them (escalating to SIGTERM, then
        SIGKILL, for one that does not stop). Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._outbox.put("stop")
        self._outbox.put(None)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self._out.close()  # a batcher blocked writing to a full pipe gets EPIPE: it stops
        self.process.join(timeout=10.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._sender.join(timeout=5.0)  # unblocked by now: the batcher has read, or is gone
        if not self._sender.is_alive():
            self._commands.close()
        self._thread.join(timeout=1.0)
        if not self._out.closed and not self._thread.is_alive():
            self._out.close()
        self.process.close()

    def __enter__(self) -> BatchProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EpochFeed:
    """One epoch's batches from a BatchProcess, with the interface of `Prefetcher` (`waited`,
    `close`) so the training loop treats both alike."""

    def __init__(self, process: BatchProcess, epoch: int) -> None:
        self.process = process
        self.epoch = epoch
        self._waited_before = process.waited

    @property
    def waited(self) -> float:
        return self.process.waited - self._waited_before

    def __iter__(self) -> Iterator[PreparedBatch]:
        return self.process.epoch(self.epoch)

    def close(self) -> None:
        """Nothing to do: the process runs on into the next epoch (or is closed with the run)."""
