"""Training proposal networks, offline (a dataset on disk) or online (fresh traces from a pool of
simulators), on one process or many (`torchrun`: gloo on CPU, NCCL on GPU).

Batches are made while the model trains: offline on CUDA in a process of their own (the batcher,
`probexec.nn.batcher`: reading and checking shards, cutting minibatches, laying out their arrays,
none of it holding the training process's GIL), else in a background thread; the log records how
much of the time the trainer waited for data. Distributed training averages gradients across
ranks with one all-reduce per step, the same mean a single process would compute over all ranks'
batches.
"""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from tqdm import tqdm

from probexec.cores import usable_cores
from probexec.data.batch_process import PipelineConfig, Plan, epoch_minibatches, epoch_rng, host_batch
from probexec.data.batches import minibatches
from probexec.data.dataset import TraceDataset, close_readers
from probexec.data.layout import TypeGroup, split_by_type
from probexec.errors import ProbexecError
from probexec.nn.batcher import BatchProcess, EpochFeed, PreparedBatch, prepared_from_arrays
from probexec.nn.checkpoint import (
    LearningRateSchedule,
    load_checkpoint,
    load_optimizer_state,
    make_optimizer,
    save_checkpoint,
)
from probexec.nn.embeddings import LAYOUTS as CONV_LAYOUTS
from probexec.nn.embeddings import ObservationSpec, set_conv_layout
from probexec.nn.network import NetworkConfig, ProposalLSTM
from probexec.nn.pretrain import pretrain_embedding
from probexec.nn.train_log import LogRow, TrainingLog
from probexec.own_simulator import simulator_name
from probexec.simulators import SimulatorInfo

# Embedding defaults for the built-in simulators' observations (others: by shape, no transform).
# (embedding, transform, norm); embeddings.py says why norm is still off.
DEFAULT_EMBEDDINGS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("tau_decay", "calorimeter"): ("cnn3d", "symlog", "none"),
    ("tau_decay_fixed_spots", "calorimeter"): ("cnn3d", "symlog", "none"),
    ("tau_decay_coarse", "calorimeter"): ("cnn3d", "symlog", "none"),
    ("calorimeter", "calorimeter"): ("cnn3d", "symlog", "none"),
}


# The key of `observations` overrides that apply to every observation (`probexec train --obs-norm`).
ALL_OBSERVATIONS = "*"


class TrainingError(ProbexecError):
    """Training cannot go on (NaN loss, no data); the last good checkpoint is kept."""


@dataclass
class TrainOptions:
    batch_size: int = 64
    lr: float = 1e-3
    epochs: int | None = None  # offline: passes over the dataset
    traces: int | None = None  # stop after this many training traces (online needs it)
    device: str = "cpu"
    seed: int = 0
    weight_decay: float = 0.0
    clip_grad: float = 10.0
    warmup_steps: int = 0
    cosine: bool = False  # decay the rate over the run (needs `traces` or `epochs` to size it)
    valid_every: int = 200  # steps
    valid_traces: int = 2000
    checkpoint_every: int = 500  # steps
    buffer_traces: int = 20_000
    log_every: int = 20  # steps
    progress: bool = True
    config_overrides: dict[str, Any] = field(default_factory=dict)
    # CPU threads for torch. Default (`default_threads`): offline, every usable core (shared
    # among the ranks of a distributed run); online, half of them, because the simulators need
    # the rest, and OpenMP threads that spin against busy cores run many times slower.
    threads: int | None = None
    # Steps between reads of the loss (a read waits for the GPU to finish the step). None: every
    # step on CPU, every log_every steps on CUDA. The loss is also read before every checkpoint,
    # so a NaN stops training before it reaches one.
    loss_read_every: int | None = None
    # Draw big Normal observations (the calorimeter image) on the training device rather than on
    # the batch-making thread. None: yes, on the CPU too, where torch draws them a few times
    # faster than NumPy and the batch thread no longer competes with training for the cores
    # (tau on 2 cores, batch 64: 430 -> 472 traces/s, median of 3 alternating runs).
    draw_on_device: bool | None = None
    # Processes that read and check dataset shards. None: none on CPU (the cores train), up to 8
    # on CUDA, where one reading process cannot keep up with the GPU. They are spawned, so a
    # script that calls train() with readers needs the `if __name__ == "__main__":` guard.
    read_workers: int | None = None
    # Make offline minibatches in a process of their own (with its own shard readers), so that
    # the training process does nothing but train. None: on CUDA only (on CPU the cores train).
    # The same batches either way. Spawned: scripts need the `__main__` guard here too.
    batch_process: bool | None = None
    # Minibatches whose losses one optimizer step sums (each minibatch holds one trace type, so a
    # step sees this many types, as the shuffled stream gives them). With 1 every step learns
    # from one type: for the tau decay nearly one decay channel, which leaves a network that must
    # tell the channels apart from the image no contrast within a step.
    types_per_step: int = 1
    # Steps of observation-embedding pretraining (`probexec.nn.pretrain`) before IC training, on
    # mixed minibatches of `pretrain_traces` traces; only for a network that train builds (not on
    # resume). 0: none. `pretrain_latents` None: the named addresses that every trace draws.
    pretrain_steps: int = 0
    pretrain_latents: tuple[str, ...] | None = None
    pretrain_traces: int = 40_000
    # Memory layout of the CNN embeddings' convolutions (`embeddings.set_conv_layout`): "auto" runs
    # them channels-last on the CPU only. Speed, not results; not saved in the checkpoint.
    conv_layout: str = "auto"
    # A directory for TensorBoard event files (`nn.tensorboard`; TensorBoard itself is not
    # needed to write them): the CSV log's figures per logged step. None: the CSV log only.
    tensorboard: str | Path | None = None


@dataclass
class TrainResult:
    network: ProposalLSTM
    steps: int
    traces: int
    seconds: float
    final_loss: float
    valid_loss: float
    traces_per_second: float
    wait_fraction: float
    checkpoint: Path | None
    pretrain: dict[str, Any] | None = None  # `PretrainReport.to_dict()` when the embedding was pretrained


def prepare(
    group: TypeGroup, rng: np.random.Generator, pin: bool = False, draw_on_device: bool = False
) -> PreparedBatch:
    """A minibatch as tensors; big Normal observations are drawn here from `rng`, or with
    `draw_on_device` left as their sparse mean and stddev for the device to draw. The arrays are
    `host_batch`'s, as a batch process makes them."""
    h = host_batch(group, rng, draw_on_device)
    arrays = [torch.from_numpy(a) for a in h.arrays]
    if pin:
        arrays = [a.pin_memory() for a in arrays]
    batch: PreparedBatch = prepared_from_arrays(h.layout, h.drawn, h.to_draw, arrays)
    batch.group = group
    return batch


class Prefetcher:
    """Runs `source` in a thread, `depth` items ahead; measures how long the consumer waits."""

    _END = object()

    def __init__(self, source: Iterator[Any], depth: int = 8) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(depth)
        self.waited = 0.0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(source,), daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterator[Any]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
        except BaseException as e:
            self.error = e
        self._put(self._END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            t0 = time.perf_counter()
            item = self.queue.get()
            self.waited += time.perf_counter() - t0
            if item is self._END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def close(self) -> None:
        """Stops the thread, and waits a moment for it: one still pinning memory when the
        interpreter exits can abort it (C++ `terminate` in CUDA's teardown)."""
        self._stop.set()
        self.thread.join(timeout=2.0)


def online_groups(pool: Any, chunk: int, seed: int) -> Iterator[TypeGroup]:
    """Fresh prior traces from a simulator pool, forever, as type groups."""
    seeds = np.random.SeedSequence(seed)
    while True:
        jobs = [chunk] * len(pool.models)
        chunk_seeds = [int(s.generate_state(1)[0] >> 1) for s in seeds.spawn(len(jobs))]

        def run(model: Any, i: int, n: int, chunk_seeds: list[int] = chunk_seeds) -> Any:
            return model.stream(n, seed=chunk_seeds[i])

        batches = pool.map(jobs, run)
        for b in batches:
            yield from split_by_type(b)[0]


def observation_specs(
    simulator: str, groups: Iterable[TypeGroup], overrides: Mapping[str, Any] | None = None
) -> list[ObservationSpec]:
    shapes: dict[str, tuple[int, ...]] = {}
    for g in groups:
        for name, ob in g.observations.items():
            shapes.setdefault(name, tuple(ob.shape))
    specs = []
    every = dict((overrides or {}).get(ALL_OBSERVATIONS, {}))
    for name in sorted(shapes):
        emb, tr, norm = DEFAULT_EMBEDDINGS.get((simulator, name), ("auto", "none", "none"))
        o = {**every, **(overrides or {}).get(name, {})}
        spec = ObservationSpec(name, shapes[name], o.get("embedding", emb), o.get("transform", tr), norm)
        named = (overrides or {}).get(name, {})
        if "norm" in named:
            spec.norm = named["norm"]
        elif "norm" in every and spec.resolved().embedding != "ff":  # for every one: CNNs only
            spec.norm = every["norm"]
        specs.append(spec)
    return specs


def build_network(
    simulator: str, sample: list[TypeGroup], layouts: Iterable = (), **config: Any
) -> ProposalLSTM:
    """A new network for `simulator`, its observation embeddings standardised on `sample`."""
    obs_over = config.pop("observations", None)
    net = ProposalLSTM(NetworkConfig(simulator, observation_specs(simulator, sample, obs_over), **config))
    rng = np.random.default_rng(0)
    with torch.no_grad():
        # Only groups that have every observation (a trace type may lack one).
        full = [g for g in sample if all(s.name in g.observations for s in net.config.observations)]
        obs = {
            s.name: torch.cat(
                [torch.from_numpy(g.observations[s.name].rows(0, min(len(g), 256)).draw(rng)) for g in full]
            )[:2048].float()
            for s in net.config.observations
        }
        if full:
            net.fit_observations(obs)
    net.ensure_sites([g.layout for g in sample])
    net.ensure_sites(layouts)
    return net


def default_threads(*, online: bool, world: int = 1) -> int:
    """Torch threads for CPU training. Offline, the batch-making thread only reads shards and
    gathers rows (the calorimeter noise is drawn in the training thread), so training takes every
    core: on 2 cores, tau at batch 64, 2 threads trained 1.5x as fast as 1 (420 against 279
    traces/s, median of 3 alternating runs). Online, the simulators share the cores."""
    cores = usable_cores()
    return max(1, cores // 2 if online else cores // world)


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_gradients(net: ProposalLSTM, world: int) -> None:
    """Averages every parameter's gradient over the ranks (missing gradients count as zero, as
    for an address another rank's batch did not have)."""
    params = list(net.parameters())
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world
    i = 0
    for p in params:
        n = p.numel()
        p.grad = flat[i : i + n].view_as(p).clone()
        i += n


def train(
    simulator: str | SimulatorInfo,
    *,
    dataset: TraceDataset | None = None,
    pool: Any = None,
    output: str | Path | None = None,
    options: TrainOptions | None = None,
    valid: TraceDataset | None = None,
    network: ProposalLSTM | None = None,
    resume: bool = False,
    log_path: str | Path | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Trains a proposal network on `dataset` (offline) or on traces from `pool` (online) and
    saves it to `output`. With `resume` and an existing `output`, training continues from the
    saved model, optimizer, schedule and counters."""
    opt = options or TrainOptions()
    simulator = simulator_name(simulator)  # an executable's path: the model name it announces
    if (dataset is None) == (pool is None):
        raise ValueError("train needs exactly one of dataset= (offline) or pool= (online)")
    if pool is not None and opt.traces is None:
        raise ValueError("online training needs a trace budget (traces=)")
    if opt.conv_layout not in CONV_LAYOUTS:
        raise ValueError(f"unknown conv_layout {opt.conv_layout!r} (one of {CONV_LAYOUTS})")
    if opt.types_per_step < 1:
        raise ValueError(f"types_per_step must be at least 1, not {opt.types_per_step}")
    if opt.pretrain_steps < 0:
        raise ValueError(f"pretrain_steps must be 0 or more, not {opt.pretrain_steps}")
    if opt.pretrain_steps and network is not None:
        raise ValueError(
            "pretrain_steps applies to a network that train builds; for one passed in, call "
            "probexec.nn.pretrain.pretrain_embedding on it first"
        )
    if opt.epochs is None and opt.traces is None:
        opt.epochs = 1
    rank, world = _distributed()
    device = torch.device(opt.device)
    torch.manual_seed(opt.seed)
    threads_before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(opt.threads or default_threads(online=pool is not None, world=world))
    read_workers = opt.read_workers
    if read_workers is None:
        read_workers = min(8, usable_cores() // 2) if device.type == "cuda" else 0
    draw_on_device = opt.draw_on_device if opt.draw_on_device is not None else True
    pipeline = (
        PipelineConfig(
            dataset, opt.batch_size, opt.seed, opt.buffer_traces, rank, world, draw_on_device, read_workers
        )
        if dataset is not None
        else None
    )
    use_process = pipeline is not None and (
        opt.batch_process if opt.batch_process is not None else device.type == "cuda"
    )
    # One batcher, or one pool of shard readers, for the whole run: starting processes every
    # epoch would cost more than a short epoch. The batcher starts here, so that it imports and
    # starts its readers while a checkpoint loads and the network is built.
    readers = None
    batcher = None
    try:
        if use_process:
            assert pipeline is not None
            batcher = BatchProcess(pipeline, pin=device.type == "cuda")
        elif dataset is not None and read_workers > 0:
            readers = dataset.reader_pool(read_workers)
        return _train(
            simulator,
            dataset,
            pool,
            output,
            opt,
            valid,
            network,
            resume,
            log_path,
            on_step,
            rank,
            world,
            device,
            draw_on_device,
            pipeline,
            readers,
            batcher,
        )
    finally:
        torch.set_num_threads(threads_before)
        if batcher is not None:
            batcher.close()
        if readers is not None:
            close_readers(readers)


def _train(
    simulator: str,
    dataset: TraceDataset | None,
    pool: Any,
    output: str | Path | None,
    opt: TrainOptions,
    valid: TraceDataset | None,
    network: ProposalLSTM | None,
    resume: bool,
    log_path: str | Path | None,
    on_step: Callable[[int, float], None] | None,
    rank: int,
    world: int,
    device: torch.device,
    on_device_draw: bool,
    pipeline: PipelineConfig | None,
    readers: Any,
    batcher: BatchProcess | None,
) -> TrainResult:
    out = Path(output) if output is not None else None
    noise = torch.Generator(device=device)

    def source(epoch: int) -> Iterator[TypeGroup]:
        if pipeline is not None:  # offline: what a batch process runs too
            return epoch_minibatches(pipeline, epoch, readers)
        groups = online_groups(pool, max(opt.batch_size, 256), opt.seed * 1000 + epoch * 7919 + rank)
        return minibatches(
            groups,
            opt.batch_size,
            rng=np.random.default_rng([opt.seed, epoch]),
            buffer_traces=opt.buffer_traces,
            rank=rank,
            world_size=world,
        )

    state: dict[str, Any] = {"step": 0, "epoch": 0, "traces": 0, "best_valid": math.inf}
    schedule = LearningRateSchedule(opt.lr, opt.warmup_steps)
    optimizer = None
    if resume and out is not None and out.exists():
        network, blob = load_checkpoint(out, simulator=simulator, device=device)
        optimizer = make_optimizer(network, opt.lr, opt.weight_decay)
        if blob["optimizer"] is not None:
            load_optimizer_state(optimizer, blob["optimizer"])
        if blob["schedule"] is not None:
            schedule.load_state_dict(blob["schedule"])
        state.update(blob["train_state"])
    sample_traces = 512 if network is None else 0
    if batcher is not None:
        batcher.plan(Plan(sample_traces, int(state["epoch"]), opt.epochs))
    if network is None:
        sample: list[TypeGroup] = []
        if batcher is not None:
            sample = batcher.sample()
        else:
            for g in source(0):
                sample.append(g)
                if sum(len(s) for s in sample) >= sample_traces:
                    break
        if not sample:
            raise TrainingError("no training traces: the dataset is empty")
        layouts = [t.layout for t in dataset.trace_types().values()] if dataset is not None else []
        network = build_network(simulator, sample, layouts, **opt.config_overrides)
        network.to(device)
        set_conv_layout(network, opt.conv_layout)
        if opt.pretrain_steps and rank == 0:
            state["pretrain"] = _pretrain(network, dataset, pool, opt)
    network.to(device)
    set_conv_layout(network, opt.conv_layout)
    if world > 1:
        if pool is not None:
            raise ValueError("distributed training reads a dataset; online training runs on one process")
        for p in [*network.parameters(), *network.buffers()]:  # identical start on every rank
            if p.is_floating_point():
                dist.broadcast(p.data, 0)
    if optimizer is None:
        optimizer = make_optimizer(network, opt.lr, opt.weight_decay)
    if "pretrain" in state and state["step"] == 0 and out is not None and rank == 0:
        # A run stopped before its first checkpoint resumes from here, without pretraining again.
        save_checkpoint(out, network, optimizer, schedule, state)
    # The parameters, listed once (and again when addresses are added): `network.parameters()`
    # walks every address's modules, hundreds on the tau decay, a millisecond a step.
    parameters = list(network.parameters())
    per_step = opt.batch_size * opt.types_per_step
    if opt.cosine:
        total = opt.traces // per_step // world if opt.traces else 0
        if not total and dataset is not None and opt.epochs:
            total = opt.epochs * dataset.num_traces // per_step // world
        schedule.total_steps = total
    log = TrainingLog(log_path, opt.tensorboard, resume) if rank == 0 else None
    pin = device.type == "cuda"
    budget = opt.traces
    t_start = time.perf_counter()
    traces_at_start = state["traces"]
    run_loss, run_n = 0.0, 0
    last_valid = math.nan
    last_loss = math.nan
    bar = tqdm(
        total=budget,
        desc=f"train {simulator}",
        unit="trace",
        disable=not opt.progress or rank != 0,
        initial=min(state["traces"], budget or 0),
    )
    waited = 0.0
    done = False
    read_every = opt.loss_read_every or (opt.log_every if device.type == "cuda" else 1)
    pending_loss: torch.Tensor | None = None  # summed on the device between reads
    pending_n = 0
    gathered = 0  # minibatches whose gradients this optimizer step has summed so far
    step_loss: torch.Tensor | None = None
    try:
        while not done:
            epoch = int(state["epoch"])
            if opt.epochs is not None and epoch >= opt.epochs:
                break
            prep_rng, noise_seed = epoch_rng(opt.seed, epoch, rank)
            noise.manual_seed(noise_seed)
            fetch: Prefetcher | EpochFeed
            if batcher is not None:
                fetch = EpochFeed(batcher, epoch)
            else:
                fetch = Prefetcher(
                    (prepare(b, prep_rng, pin, on_device_draw) for b in source(epoch)), depth=6
                )
            try:
                for batch in fetch:
                    added = network.ensure_sites([batch.group.layout], optimizer)
                    if added:
                        if world > 1:
                            raise TrainingError(
                                f"rank {rank} met {added} address(es) not in the dataset's type table"
                            )
                        parameters = list(network.parameters())
                    values, params, obs = batch.on(device, noise)
                    if gathered == 0:
                        lr = schedule.apply(optimizer)
                        optimizer.zero_grad(set_to_none=True)
                    loss = network.loss(batch.group.layout, values, params, obs)
                    k = opt.types_per_step
                    (loss / k if k > 1 else loss).backward()
                    step_loss = (
                        loss.detach() if step_loss is None or gathered == 0 else step_loss + loss.detach()
                    )
                    gathered += 1
                    state["traces"] += len(batch) * world
                    bar.update(len(batch) * world)
                    if gathered < k:
                        continue
                    gathered = 0
                    loss_value = step_loss / k if k > 1 else step_loss
                    if world > 1:
                        _all_reduce_gradients(network, world)
                        dist.all_reduce(loss_value)
                        loss_value /= world
                    step = int(state["step"]) + 1
                    # Reading the loss waits for the device: only every read_every steps, and
                    # before each checkpoint (which so never holds a NaN network).
                    read = (
                        on_step is not None
                        or step % read_every == 0
                        or step % opt.log_every == 0
                        or step % opt.checkpoint_every == 0
                    )
                    pending_loss = loss_value if pending_loss is None else pending_loss + loss_value
                    pending_n += 1
                    lv = math.nan
                    if read:  # the sum covers every step since the last read
                        total, lv = float(pending_loss), float(loss_value)
                        run_loss, run_n = run_loss + total, run_n + pending_n
                        pending_loss, pending_n = None, 0
                        if not math.isfinite(total):
                            where = (
                                f"; the last good checkpoint is {out}"
                                if out is not None and out.exists()
                                else ""
                            )
                            raise TrainingError(
                                f"training loss is {total} at step {state['step']} (epoch {epoch}){where}"
                            )
                    if opt.clip_grad:
                        torch.nn.utils.clip_grad_norm_(parameters, opt.clip_grad)
                    optimizer.step()
                    schedule.step()
                    state["step"] += 1
                    if read:
                        last_loss = lv
                    if on_step is not None:
                        on_step(step, lv)
                    if valid is not None and step % opt.valid_every == 0:
                        last_valid = validation_loss(network, valid, opt, device)
                    if log is not None and (step % opt.log_every == 0):
                        el = time.perf_counter() - t_start
                        log.write(
                            LogRow(
                                step,
                                epoch,
                                state["traces"],
                                run_loss / max(run_n, 1),
                                last_valid,
                                lr,
                                (state["traces"] - traces_at_start) / el,
                                (waited + fetch.waited) / el,
                                el,
                            )
                        )
                        run_loss, run_n = 0.0, 0
                    if out is not None and rank == 0 and step % opt.checkpoint_every == 0:
                        save_checkpoint(out, network, optimizer, schedule, state)
                    if budget is not None and state["traces"] >= budget:
                        done = True
                        break
            finally:
                fetch.close()
                waited += fetch.waited
            if not done:
                state["epoch"] += 1
    finally:
        bar.close()
    if pending_n:
        tail = float(pending_loss)  # type: ignore[arg-type]
        if not math.isfinite(tail):
            where = f"; the last good checkpoint is {out}" if out is not None and out.exists() else ""
            raise TrainingError(f"training loss is {tail} in the last {pending_n} steps{where}")
        run_loss, run_n = run_loss + tail, run_n + pending_n
    if valid is not None:
        last_valid = validation_loss(network, valid, opt, device)
    elapsed = time.perf_counter() - t_start
    if out is not None and rank == 0:
        save_checkpoint(out, network, optimizer, schedule, state)
    if log is not None:
        log.write(
            LogRow(
                state["step"],
                state["epoch"],
                state["traces"],
                run_loss / run_n if run_n else last_loss,
                last_valid,
                schedule.current(),
                (state["traces"] - traces_at_start) / elapsed,
                waited / elapsed,
                elapsed,
            )
        )
        log.close()
    return TrainResult(
        network,
        int(state["step"]),
        int(state["traces"]),
        elapsed,
        last_loss,
        last_valid,
        (state["traces"] - traces_at_start) / elapsed,
        waited / elapsed,
        out,
        state.get("pretrain"),
    )


def _pretrain(
    network: ProposalLSTM, dataset: TraceDataset | None, pool: Any, opt: TrainOptions
) -> dict[str, Any]:
    """Pretrains a fresh network's observation embedding on the training data (offline: shards
    in a seeded random order; online: fresh traces from the pool)."""
    groups = (
        dataset.iter_groups(shuffle=True, seed=opt.seed)
        if dataset is not None
        else online_groups(pool, max(opt.batch_size, 256), opt.seed * 1000 + 104729)
    )
    report = pretrain_embedding(
        network,
        groups,
        steps=opt.pretrain_steps,
        latents=opt.pretrain_latents,
        traces=opt.pretrain_traces,
        batch_size=opt.batch_size,
        lr=opt.lr,
        seed=opt.seed,
        progress=opt.progress,
        draw_on_device=opt.draw_on_device,
    )
    if opt.progress:  # beside the progress bars on stderr: stdout may be a JSON summary
        tqdm.write(report.summary(), file=sys.stderr)
    return report.to_dict()


@torch.no_grad()
def validation_loss(
    network: ProposalLSTM, valid: TraceDataset, opt: TrainOptions, device: torch.device
) -> float:
    """Mean -log q over up to `valid_traces` traces of `valid` (types the network has not seen are
    left out: their layers would be untrained)."""
    network.eval()
    total, n = 0.0, 0
    rng = np.random.default_rng(12345)
    for g in minibatches(valid.iter_groups(), opt.batch_size, rng=rng, buffer_traces=opt.buffer_traces):
        if not all(network.known([s.key for s in g.layout.sites])):
            continue
        b = prepare(g, rng)
        loss = network.loss(
            g.layout,
            b.values.to(device),
            b.params.to(device),
            {k: v.to(device) for k, v in b.observations.items()},
        )
        total += float(loss) * len(g)
        n += len(g)
        if n >= opt.valid_traces:
            break
    network.train()
    return total / n if n else math.nan


def init_distributed(device: str) -> tuple[int, int]:
    """Joins the process group `torchrun` describes (WORLD_SIZE > 1): NCCL on GPU, gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return _distributed()
