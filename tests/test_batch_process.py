"""Minibatches made in a batch process (`TrainOptions.batch_process`, the default on CUDA): the same
batches, the same training, errors carried over, and no process left behind (on CPU, forced)."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from probexec.data import DatasetError, DatasetWriter, TraceDataset
from probexec.data.batch_process import PipelineConfig, Plan, epoch_minibatches, epoch_rng
from probexec.nn import TrainOptions, train
from probexec.nn.batcher import BatchProcess, BatchProcessError, PreparedBatch
from probexec.nn.checkpoint import load_optimizer_state, make_optimizer
from probexec.nn.training import build_network, prepare
from probexec.remote import RemoteModel


def make_dataset(path: Path, sim: str, n: int, shards: int) -> TraceDataset:
    with RemoteModel(sim) as m:
        w = DatasetWriter(path, sim)
        chunk = -(-n // shards)
        for i in range(0, n, chunk):
            w.write(m.stream(min(chunk, n - i), seed=17 + i))
    return TraceDataset(path)


@pytest.fixture(scope="module")
def branching(tmp_path_factory) -> TraceDataset:
    return make_dataset(tmp_path_factory.mktemp("branching") / "data", "branching", 3000, 6)


@pytest.fixture(scope="module")
def tau(tmp_path_factory) -> TraceDataset:
    return make_dataset(tmp_path_factory.mktemp("tau") / "data", "tau_decay", 48, 3)


def spawned() -> set[int]:
    """Processes started by multiprocessing's spawn (shard readers, batchers), anywhere."""
    out = set()
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if b"spawn_main" in (d / "cmdline").read_bytes():
                out.add(int(d.name))
        except OSError:
            continue
    return out


def assert_none_left(before: set[int]) -> None:
    assert not [p for p in multiprocessing.active_children() if p.name == "probexec-batcher"]
    left = spawned() - before
    assert not left, f"processes left behind: {left}"


def assert_same(a: PreparedBatch, b: PreparedBatch) -> None:
    assert a.group.layout.key == b.group.layout.key
    assert torch.equal(a.values, b.values) and torch.equal(a.params, b.params)
    assert list(a.observations) == list(b.observations)
    for k in a.observations:
        assert torch.equal(a.observations[k], b.observations[k]), k
    assert list(a.to_draw) == list(b.to_draw)
    for k, x in a.to_draw.items():
        y = b.to_draw[k]
        assert (x.shape, x.n, x.size) == (y.shape, y.n, y.size)
        for u, v in ((x.loc, y.loc), (x.scale, y.scale)):
            assert u.fill == v.fill
            for s, t in ((u.rows, v.rows), (u.cols, v.cols), (u.values, v.values)):
                assert torch.equal(s, t)


def in_process(config: PipelineConfig, epochs: range) -> list[list[PreparedBatch]]:
    out = []
    for e in epochs:
        rng, _ = epoch_rng(config.seed, e, config.rank)
        out.append([prepare(b, rng, False, config.draw_on_device) for b in epoch_minibatches(config, e)])
    return out


@pytest.mark.parametrize("draw_on_device", [False, True])
def test_batch_process_sends_the_in_process_batches(tau, draw_on_device):
    """Calorimeter images drawn on the host (the noise from the epoch's generator) or left sparse
    for the device; two epochs, a sample first, a shard reader of its own."""
    before = spawned()
    config = PipelineConfig(tau, 8, 3, 20, draw_on_device=draw_on_device, read_workers=1)
    want = in_process(config, range(1, 3))
    want_sample = list(epoch_minibatches(config, 0))
    with BatchProcess(config) as bp:
        bp.plan(Plan(20, 1, 3))
        sample = bp.sample()
        got = [list(bp.epoch(e)) for e in (1, 2)]
    for g, w in zip(sample, want_sample, strict=False):
        assert g.layout.key == w.layout.key and np.array_equal(g.values, w.values)
    assert sum(len(g) for g in sample) >= 20 > sum(len(g) for g in sample[:-1])
    assert [len(e) for e in got] == [len(e) for e in want] and len(got[0]) >= 5
    for a, b in zip(want, got, strict=True):
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    assert_none_left(before)


def test_ranks_get_the_in_process_schedule(branching):
    before = spawned()
    for rank in (0, 1):
        config = PipelineConfig(branching, 32, 7, 500, rank=rank, world_size=2)
        want = in_process(config, range(2))
        with BatchProcess(config) as bp:
            bp.plan(Plan(0, 0, None))  # epochs until stopped, as with a trace budget
            got = [list(bp.epoch(e)) for e in range(2)]
            next(iter(bp.epoch(2)))  # the batcher is ahead: closing must not wait for it
        assert [len(e) for e in got] == [len(e) for e in want]
        for a, b in zip(want, got, strict=True):
            for x, y in zip(a, b, strict=True):
                assert_same(x, y)
    assert_none_left(before)


def test_training_with_a_batch_process_equals_training_without(branching, tmp_path):
    before = spawned()
    common = dict(batch_size=64, lr=3e-3, seed=11, progress=False, threads=1, buffer_traces=1000)
    runs = {}
    for forced in (False, True):
        runs[forced] = train(
            "branching",
            dataset=branching,
            output=tmp_path / f"{forced}.pt",
            options=TrainOptions(epochs=2, batch_process=forced, read_workers=1, **common),
        )
        assert_none_left(before)
    a, b = runs[False], runs[True]
    assert a.steps == b.steps and a.traces == b.traces == 6000
    assert math.isfinite(a.final_loss) and a.final_loss == pytest.approx(b.final_loss, rel=1e-6, abs=1e-7)
    sa, sb = a.network.state_dict(), b.network.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=k)
    # A trace budget ends mid-epoch, with the batcher ahead; resuming (the network, the optimizer
    # and where training was, from the checkpoint) gives what it gives in-process.
    resumed = {}
    for forced in (False, True):
        out = tmp_path / f"budget-{forced}.pt"
        first = train(
            "branching",
            dataset=branching,
            output=out,
            options=TrainOptions(traces=1000, batch_process=forced, **common),
        )
        assert first.traces >= 1000
        resumed[forced] = train(
            "branching",
            dataset=branching,
            output=out,
            options=TrainOptions(traces=4000, batch_process=forced, **common),
            resume=True,
        )
        assert_none_left(before)
    assert resumed[False].steps == resumed[True].steps and resumed[True].traces >= 4000
    sa, sb = resumed[False].network.state_dict(), resumed[True].network.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6, msg=k)


def test_a_corrupt_shard_is_reported_through_the_batch_process(branching, tmp_path):
    before = spawned()
    d = tmp_path / "data"
    d.mkdir()
    for f in (branching.path / "dataset.json", *branching.path.glob("shards/*")):
        target = d / f.relative_to(branching.path)
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(f.read_bytes())
    ds = TraceDataset(d)
    victim = ds.shards[3].path
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    opts = dict(batch_size=64, epochs=1, progress=False, threads=1, batch_process=True, buffer_traces=500)
    for workers in (0, 1):
        with pytest.raises(DatasetError, match=victim.name) as err:
            train("branching", dataset=TraceDataset(d), options=TrainOptions(read_workers=workers, **opts))
        assert "in the batch process" in str(err.value.__cause__)
        assert_none_left(before)
    skip = TraceDataset(d, on_corrupt="skip")
    with pytest.warns(UserWarning, match=victim.name):
        res = train("branching", dataset=skip, options=TrainOptions(**opts))
    assert skip.skipped and all(victim.name in m for m in skip.skipped)
    assert res.traces <= ds.num_traces - ds.shards[3].num_traces
    assert_none_left(before)


def test_a_dying_batch_process_or_an_interrupt_ends_training_without_a_hang(branching):
    before = spawned()
    # 30 epochs, about 5 600 batches: far more than the batcher can hold ahead (256 messages) plus
    # what the pipe buffers, so at step 3 it is surely still working. With 3 epochs a slow
    # trainer (a loaded machine) found every batch already in the pipe and never saw the death.
    opts = dict(batch_size=16, epochs=30, progress=False, threads=1, batch_process=True, read_workers=1)

    def kill(step: int, loss: float) -> None:
        if step == 3:
            (p,) = [c for c in multiprocessing.active_children() if c.name == "probexec-batcher"]
            os.kill(p.pid, signal.SIGKILL)

    t0 = time.perf_counter()
    with pytest.raises(BatchProcessError, match="ended unexpectedly"):
        train("branching", dataset=branching, options=TrainOptions(**opts), on_step=kill)
    assert time.perf_counter() - t0 < 60
    # Its shard reader, orphaned by the SIGKILL, is no child of ours: it notices and ends.
    deadline = time.time() + 10
    while spawned() - before and time.time() < deadline:
        time.sleep(0.2)
    assert_none_left(before)

    def interrupt(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    before = spawned()
    with pytest.raises(KeyboardInterrupt):
        train("branching", dataset=branching, options=TrainOptions(**opts), on_step=interrupt)
    assert_none_left(before)


def test_optimizer_state_loads_across_implementations(branching):
    """A checkpoint's optimizer state loads into an optimizer of another implementation (an older
    CPU run's unfused Adam resumed with the fused kernel, and back) and keeps the loading
    optimizer's own."""
    groups = list(epoch_minibatches(PipelineConfig(branching, 64, 0, 1000), 0))
    net = build_network("branching", groups[:4], [g.layout for g in groups])
    opt = make_optimizer(net, 1e-3)
    assert opt.param_groups[0]["fused"] is True  # the fused kernel on the CPU too
    b = prepare(groups[0], np.random.default_rng(0))
    net.loss(b.group.layout, b.values, b.params, b.observations).backward()
    opt.step()
    state = opt.state_dict()
    for g in state["param_groups"]:
        g["fused"] = None  # as an unfused run saves it
    again = make_optimizer(net, 1e-3)
    load_optimizer_state(again, state)
    assert all(g["fused"] is True for g in again.param_groups)
    unfused = torch.optim.Adam(again.param_groups[0]["params"], lr=1e-3)
    load_optimizer_state(unfused, opt.state_dict())
    assert all(g["fused"] is None for g in unfused.param_groups)
    for o in (again, unfused):
        steps = [o.state[p]["step"] for g in o.param_groups for p in g["params"] if p in o.state]
        assert steps and all(s.device.type == "cpu" for s in steps)
        o.step()


def test_optimizer_state_of_a_group_per_address_checkpoint_loads_into_one_group(branching):
    """Checkpoints written when the optimizer had a group per address resume with every
    parameter's Adam state where it was."""
    groups = list(epoch_minibatches(PipelineConfig(branching, 64, 0, 1000), 0))
    net = build_network("branching", groups[:4], [g.layout for g in groups])
    old = torch.optim.Adam(net.shared_parameters(), lr=1e-3)
    for g in net.site_parameter_groups():
        old.add_param_group({"params": g})
    for g in groups[:3]:
        b = prepare(g, np.random.default_rng(0))
        old.zero_grad()
        net.loss(b.group.layout, b.values, b.params, b.observations).backward()
        old.step()
    state = old.state_dict()
    assert len(state["param_groups"]) > 2
    again = make_optimizer(net, 1e-3)
    load_optimizer_state(again, state)
    assert len(again.param_groups) == 1
    assert {id(p) for p in again.param_groups[0]["params"]} == {id(p) for p in net.parameters()}
    for p in net.parameters():
        assert (p in old.state) == (p in again.state)
        if p in old.state:
            torch.testing.assert_close(again.state[p]["exp_avg"], old.state[p]["exp_avg"])
            torch.testing.assert_close(again.state[p]["exp_avg_sq"], old.state[p]["exp_avg_sq"])
    again.step()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_adam_on_cuda_takes_new_addresses_and_round_trips(branching, tmp_path):
    groups = list(epoch_minibatches(PipelineConfig(branching, 64, 0, 1000), 0))
    short = [g for g in groups if len(g.layout) == 1]
    long = [g for g in groups if len(g.layout) == 2]
    dev = torch.device("cuda")
    net = build_network("branching", short[:2]).to(dev)
    opt = make_optimizer(net, 1e-3)
    assert opt.param_groups[0]["fused"] is True
    for g in [*short[:2], long[0], long[1]]:
        net.ensure_sites([g.layout], opt)
        b = prepare(g, np.random.default_rng(0), pin=True)
        values, params, obs = b.on(dev)
        opt.zero_grad(set_to_none=True)
        net.loss(g.layout, values, params, obs).backward()
        opt.step()
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["fused"] is True
    assert all(p in opt.state for p in net.parameters())
    state = opt.state_dict()
    again = make_optimizer(net, 1e-3)
    load_optimizer_state(again, state)
    again.step()
