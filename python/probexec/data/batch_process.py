"""Minibatches made in a process of their own (the *batcher*), for training on a GPU.

Why a process: reading shards, cutting minibatches and laying out their arrays is Python work. In
a thread of the training process it holds the GIL against the training loop, which then launches
its kernels late: on an H100 the trainer waited for data 41 % of the time and the GPU was a third
busy. The batcher runs the very same pipeline as the in-process path (`epoch_minibatches`, its
own pool of shard readers, the NumPy part of preparing a batch: `host_batch`) and writes finished
minibatches into a pipe; the trainer only reads them, straight into (pinned) tensors
(`probexec.nn.batcher`).

Determinism: the batcher runs the epochs in order with the seeds the in-process path uses (the
shard order, `minibatches`' shuffle, the noise of observations drawn on the host), so a seed gives
the same batches whatever the timing of either process, and DDP ranks the same schedule.

Wire format, batcher to trainer, on a plain pipe: an 8-byte little-endian length, a pickled
header `(kind, payload, [(dtype, shape), ...])`, then each array's raw bytes in order. The reader
allocates one buffer for all of a message's arrays and reads the pipe straight into it, so a batch
is copied once on the trainer's side (kernel to pinned memory) and never unpickled array by array.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import re
import signal
import struct
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from probexec.data.batches import minibatches
from probexec.data.dataset import TraceDataset, close_readers
from probexec.data.layout import TypeGroup, TypeLayout
from probexec.data.sparse import SparseRows

_LENGTH = struct.Struct("<Q")
ALIGN = 64  # arrays of a message start at multiples of this in the reader's buffer


# --- the pipeline, shared by the in-process path and the batcher ---------------------------------


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that decides the sequence of minibatches of an offline run (and so must be the
    same in the trainer and in a batcher)."""

    dataset: TraceDataset
    batch_size: int
    seed: int
    buffer_traces: int
    rank: int = 0
    world_size: int = 1
    draw_on_device: bool = False
    read_workers: int = 0  # shard-reading processes (the batcher's own pool)


def epoch_minibatches(config: PipelineConfig, epoch: int, readers: Any = None) -> Iterator[TypeGroup]:
    """The minibatches of `epoch`: shards in a seeded order, shuffled within the buffer."""
    groups = config.dataset.iter_groups(shuffle=True, seed=config.seed + epoch, readers=readers)
    return minibatches(
        groups,
        config.batch_size,
        rng=np.random.default_rng([config.seed, epoch]),
        buffer_traces=config.buffer_traces,
        rank=config.rank,
        world_size=config.world_size,
    )


def epoch_rng(seed: int, epoch: int, rank: int) -> tuple[np.random.Generator, int]:
    """The generator of an epoch's host-drawn observation noise, and the seed of its device-drawn
    noise (drawn from it first: the trainer needs that seed, the batcher the generator after it)."""
    rng = np.random.default_rng([seed, epoch, rank, 1])
    return rng, int(rng.integers(2**62))


# --- a minibatch as arrays ------------------------------------------------------------------------


@dataclass(frozen=True)
class DrawSpec:
    """A big Normal observation left for the training device to draw: its sparse mean and stddev
    travel as six arrays (row, column, value of each's exceptions to its fill)."""

    name: str
    shape: tuple[int, ...]
    n: int
    size: int
    loc_fill: float
    scale_fill: float


@dataclass
class HostBatch:
    """A minibatch as the contiguous arrays a trainer wraps as tensors, in this order: values,
    params, the drawn observations (`drawn`), then six arrays per observation `to_draw`."""

    layout: TypeLayout
    drawn: tuple[str, ...]
    to_draw: tuple[DrawSpec, ...]
    arrays: list[np.ndarray]


def sparse_coo(s: SparseRows) -> list[np.ndarray]:
    """Row, column (int32) and value (float32) of every stored exception of `s`."""
    rows, cols = s.coo()
    return [
        rows.astype(np.int32),
        np.ascontiguousarray(cols, dtype=np.int32),
        np.ascontiguousarray(s.value, dtype=np.float32),
    ]


def host_batch(group: TypeGroup, rng: np.random.Generator, draw_on_device: bool = False) -> HostBatch:
    """The arrays of a minibatch: big Normal observations drawn here from `rng`, or with
    `draw_on_device` left as their sparse mean and stddev for the device to draw."""
    drawn: list[str] = []
    dense: list[np.ndarray] = []
    to_draw: list[DrawSpec] = []
    sparse: list[np.ndarray] = []
    for k, o in group.observations.items():
        if draw_on_device and o.values is None:
            assert o.loc is not None and o.scale is not None
            to_draw.append(DrawSpec(k, tuple(o.shape), len(o), o.loc.size, o.loc.fill, o.scale.fill))
            sparse += sparse_coo(o.loc) + sparse_coo(o.scale)
        else:
            drawn.append(k)
            dense.append(np.ascontiguousarray(o.draw(rng), dtype=np.float32))
    arrays = [
        np.ascontiguousarray(group.values, dtype=np.float32),
        np.ascontiguousarray(group.params, dtype=np.float32),
        *dense,
        *sparse,
    ]
    return HostBatch(group.layout, tuple(drawn), tuple(to_draw), arrays)


# --- the pipe --------------------------------------------------------------------------------------


_IOV_MAX = 512  # buffers per readv/writev call (Linux allows 1024)


def _write_views(fd: int, views: list[memoryview]) -> None:
    """Writes `views` in order, with as few system calls as the pipe allows (a gather write)."""
    views = [v for v in views if len(v)]
    while views:
        n = os.writev(fd, views[:_IOV_MAX])
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def _read_views(fd: int, views: list[memoryview]) -> None:
    """Fills `views` in order from the pipe (a scatter read); EOFError if it ends first."""
    views = [v for v in views if len(v)]
    while views:
        n = os.readv(fd, views[:_IOV_MAX])
        if n == 0:
            raise EOFError("the batch process closed its pipe in the middle of a message")
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def encode_message(kind: str, payload: Any = None, arrays: Sequence[np.ndarray] = ()) -> list[memoryview]:
    """One message as the byte views to write in order (the arrays' own memory: C-contiguous,
    and not to be changed until written)."""
    specs = [(a.dtype.str, a.shape, a.nbytes) for a in arrays]
    head = pickle.dumps((kind, payload, specs), protocol=pickle.HIGHEST_PROTOCOL)
    return [memoryview(_LENGTH.pack(len(head)) + head), *(memoryview(a).cast("B") for a in arrays)]


def write_message(fd: int, kind: str, payload: Any = None, arrays: Sequence[np.ndarray] = ()) -> None:
    """Writes one message; blocks while the pipe is full."""
    _write_views(fd, encode_message(kind, payload, arrays))


def _read_bytes(fd: int, n: int) -> bytes:
    buf = bytearray(n)
    _read_views(fd, [memoryview(buf)])
    return bytes(buf)


@dataclass
class Message:
    kind: str
    payload: Any
    specs: list[tuple[str, tuple[int, ...], int]]  # dtype, shape, bytes of each array
    offsets: list[int]
    buffer: Any  # what `alloc` returned: the arrays lie in it at `offsets`


def read_message(fd: int, alloc: Callable[[int], tuple[Any, memoryview]]) -> Message:
    """Reads one message; its arrays go into one buffer from `alloc(nbytes)` (the buffer and a
    writable byte view of it), each at a multiple of `ALIGN`. Raises EOFError at the pipe's end."""
    head = os.read(fd, _LENGTH.size)
    if not head:
        raise EOFError("the batch process closed its pipe")
    if len(head) < _LENGTH.size:
        head += _read_bytes(fd, _LENGTH.size - len(head))
    kind, payload, specs = pickle.loads(_read_bytes(fd, _LENGTH.unpack(head)[0]))
    offsets, total = [], 0
    for _, _, n in specs:
        offsets.append(total)
        total += -(-n // ALIGN) * ALIGN
    if not specs:
        return Message(kind, payload, specs, offsets, None)
    buffer, view = alloc(total)
    _read_views(fd, [view[off : off + n] for off, (_, _, n) in zip(offsets, specs, strict=True)])
    return Message(kind, payload, specs, offsets, buffer)


# --- the batcher process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the trainer wants, sent once it knows (after loading a checkpoint to resume):
    `sample_traces` > 0 first sends that many traces of epoch 0's batches (to build a network
    from), then the epochs from `start_epoch` to `stop_epoch` (None: until told to stop)."""

    sample_traces: int
    start_epoch: int
    stop_epoch: int | None


class _Stopped(Exception):
    """The trainer asked the batcher to stop, or went away."""


class _Link:
    """The batcher's end: commands in, messages out. Messages queue here, up to `ahead_bytes`
    and `ahead_messages`, for a thread that writes them: so the batcher runs well ahead of the
    trainer and has the next buffer of batches cut before the trainer has used up the last one
    (refilling the shuffle buffer takes the batcher a while, every `buffer_traces` traces and at
    the start of every epoch; without a lead the trainer waited that long each time). Every send
    first looks for a stop (or the trainer's end of the command pipe closing); a closed output
    pipe stops it too."""

    def __init__(
        self, commands: Any, fd: int, ahead_bytes: int = 256 << 20, ahead_messages: int = 256
    ) -> None:
        self.commands = commands
        self.fd = fd
        self.ahead_bytes = ahead_bytes
        self.ahead_messages = ahead_messages
        self.held_bytes = 0
        self.held = 0
        self.broken = False
        self._room = threading.Condition()
        self._outbox: queue.Queue[tuple[list[memoryview], int] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write, name="probexec-batch-writer", daemon=True)
        self._writer.start()

    def stop_asked(self) -> bool:
        return bool(self.commands.poll())  # a message (only "stop" follows the plan) or EOF

    def _write(self) -> None:
        while (item := self._outbox.get()) is not None:
            views, nbytes = item
            try:
                _write_views(self.fd, views)
            except OSError:  # the trainer closed the pipe: it wants no more
                self.broken = True
            with self._room:
                self.held -= 1
                self.held_bytes -= nbytes
                self._room.notify_all()
            if self.broken:
                return

    def send(self, kind: str, payload: Any = None, arrays: Sequence[np.ndarray] = ()) -> None:
        if self.broken or self.stop_asked():
            raise _Stopped
        views = encode_message(kind, payload, arrays)
        nbytes = sum(len(v) for v in views)
        with self._room:
            while self.held and (
                self.held_bytes + nbytes > self.ahead_bytes or self.held >= self.ahead_messages
            ):
                self._room.wait(timeout=0.2)
                if self.broken or self.stop_asked():
                    raise _Stopped
            self.held += 1
            self.held_bytes += nbytes
        self._outbox.put((views, nbytes))

    def flush(self) -> None:
        """Waits until every message is written (or the trainer stops us)."""
        self._outbox.put(None)
        while self._writer.is_alive():
            self._writer.join(timeout=0.2)
            if self._writer.is_alive() and self.stop_asked():
                raise _Stopped


def _exit_on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _grow_pipe(fd: int) -> None:
    """A 1 MiB pipe (Linux; the default 64 kB makes a batch a few dozen round trips)."""
    with contextlib.suppress(Exception):
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)


def _picklable(e: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


def batcher_main(commands: Any, out: Any) -> None:
    """The batch process's target: `run_batcher`, then out at once. Its work is done and its
    readers ended; unwinding an interpreter that imported torch would only make the trainer wait
    (a second, at the end of every run)."""
    try:
        run_batcher(commands, out)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(0)


def run_batcher(commands: Any, out: Any) -> None:
    """The batcher's work: waits for its `PipelineConfig` and then the `Plan`, then sends
    `sample` (a list of TypeGroups), `batch` (a HostBatch's fields, arrays after; its layout only
    the first time, then its key), `end` (an epoch's number) and `done` messages; `skipped` (a
    damaged shard's message, for the trainer to warn about) and `error` (an exception and its
    traceback text) as they happen. Stops when asked, when the trainer's pipes close, or on
    SIGTERM; its shard readers end with it."""
    # Ctrl-C reaches the whole process group: the trainer decides, and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_term)
    fd = out.fileno()
    _grow_pipe(fd)
    link = _Link(commands, fd)
    readers = None
    try:
        try:
            config: PipelineConfig = commands.recv()
        except EOFError:
            return
        if not isinstance(config, PipelineConfig):
            return
        ds = config.dataset
        # Damaged shards skipped here are forwarded to the trainer, which warns about them.
        warnings.filterwarnings("ignore", message=re.escape(f"{ds.path}: "), category=UserWarning)
        readers = ds.reader_pool(config.read_workers) if config.read_workers > 0 else None
        try:
            plan: Plan = commands.recv()
        except EOFError:
            return
        if not isinstance(plan, Plan):
            return
        forwarded = len(ds.skipped)

        def forward() -> None:
            nonlocal forwarded
            for message in ds.skipped[forwarded:]:
                link.send("skipped", message)
            forwarded = len(ds.skipped)

        if plan.sample_traces > 0:
            sample: list[TypeGroup] = []
            batches = epoch_minibatches(config, 0, readers)
            for g in batches:
                sample.append(g)
                if sum(len(s) for s in sample) >= plan.sample_traces:
                    break
            batches.close()  # type: ignore[attr-defined]
            forward()
            link.send("sample", sample)
        sent: set[str] = set()  # layouts go once; then their key names them
        epoch = plan.start_epoch
        while plan.stop_epoch is None or epoch < plan.stop_epoch:
            rng, _ = epoch_rng(config.seed, epoch, config.rank)
            for b in epoch_minibatches(config, epoch, readers):
                h = host_batch(b, rng, config.draw_on_device)
                forward()
                key = h.layout.key
                layout = None if key in sent else h.layout
                sent.add(key)
                link.send("batch", (key, layout, h.drawn, h.to_draw), h.arrays)
            forward()
            link.send("end", epoch)
            epoch += 1
        link.send("done")
        link.flush()
    except _Stopped:
        pass
    except Exception as e:  # not SystemExit (SIGTERM): that only ends the process
        with contextlib.suppress(Exception):
            link.send("error", (_picklable(e), traceback.format_exc()))
            link.flush()
    finally:
        if readers is not None:
            close_readers(readers)
