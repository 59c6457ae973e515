"""Inference compilation end to end: datasets, training, checkpoints, distributed gradients and
IC posteriors against the exact ones (tolerances: 4 standard errors from the ESS)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_close, child_processes, process_alive, weighted_moment_errors
from probexec.data import DatasetError, DatasetWriter, TraceDataset, minibatches
from probexec.data.dataset import close_readers
from probexec.data.layout import TypeGroup, TypeLayout
from probexec.data.sparse import SparseRows
from probexec.inference.ic import ic_posterior
from probexec.inference.ic_drivers import auto_processes
from probexec.nn import NetworkMismatchError, TrainingError, TrainOptions, load_checkpoint, train
from probexec.nn.checkpoint import make_optimizer
from probexec.nn.device_draw import NormalObservation
from probexec.nn.proposals import BINOMIAL, POISSON, make_head
from probexec.nn.tensorboard import read_scalars
from probexec.nn.training import build_network, prepare
from probexec.remote import RemoteModel
from probexec.simulators import get_simulator
from test_posterior import (
    GUM_MEAN,
    GUM_STD,
    branching_exact,
    check_discrete,
    gum_log_evidence,
    hmm_exact_marginals,
)

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "probexec", *args], capture_output=True, text=True, timeout=900, env=env
    )


def make_dataset(path: Path, sim: str, n: int, chunk: int = 10_000, seed: int = 0) -> TraceDataset:
    with RemoteModel(sim) as m:
        w = DatasetWriter(path, sim)
        for i in range(0, n, chunk):
            w.write(m.stream(min(chunk, n - i), seed=seed + i))
    return TraceDataset(path)


def ic(net, sim: str, n: int, in_flight: int = 16, seed: int = 1):
    models = [RemoteModel(sim) for _ in range(in_flight)]
    try:
        return ic_posterior(net, models, n, get_simulator(sim).default_observations, seed=seed)
    finally:
        for m in models:
            m.close()


# --- datasets -----------------------------------------------------------------------------------


def test_dataset_shards_from_parallel_writers_checksums_and_corruption(tmp_path):
    d = tmp_path / "data"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "probexec",
                "prior",
                "branching",
                "-n",
                "3000",
                "-o",
                str(d),
                "--workers",
                "1",
                "--seed",
                str(s),
                "--json",
                "--quiet",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in (1, 2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        info = json.loads(out)
        assert info["bytes_per_trace"] > 0 and info["write_traces_per_s"] > 0
    ds = TraceDataset(d)
    assert ds.num_traces == 6000 and len(ds.shards) >= 2
    types = ds.trace_types()
    # branching: r > 4 skips the draw of s, so exactly two types (1 and 2 controlled draws).
    assert sorted(len(t.layout) for t in types.values()) == [1, 2]
    p_long = sum(math.exp(-4) * 4**k / math.factorial(k) for k in range(5))
    n_long = next(t.count for t in types.values() if len(t.layout) == 2)
    assert_close(n_long / 6000, p_long, math.sqrt(p_long * (1 - p_long) / 6000), "P(r <= 4)")
    # Minibatches are dense and of one type.
    for b in minibatches(ds.iter_groups(), 100, rng=np.random.default_rng(0)):
        assert b.values.shape == (len(b), len(b.layout))
    # Shards read by worker processes arrive in the same order with the same contents.
    inline = list(ds.iter_groups(shuffle=True, seed=3))
    parallel = list(ds.iter_groups(shuffle=True, seed=3, workers=2))
    assert [g.layout.key for g in parallel] == [g.layout.key for g in inline]
    assert all(np.array_equal(a.values, b.values) for a, b in zip(parallel, inline, strict=True))
    # A damaged shard: named when stopping, skipped with a warning when asked.
    victim = ds.shards[0].path
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=victim.name):
        list(TraceDataset(d).iter_groups())
    skip = TraceDataset(d, on_corrupt="skip")
    with pytest.warns(UserWarning, match=victim.name):
        n = sum(len(g) for g in skip.iter_groups())
    assert n == 6000 - ds.shards[0].num_traces and len(skip.skipped) == 1
    # The same when worker processes read the shards.
    with pytest.raises(DatasetError, match=victim.name):
        list(TraceDataset(d).iter_groups(workers=2))
    skip = TraceDataset(d, on_corrupt="skip")
    with pytest.warns(UserWarning, match=victim.name):
        assert sum(len(g) for g in skip.iter_groups(workers=2)) == n


def test_shard_readers_end_by_finishing_their_shards_not_by_being_killed(tmp_path):
    # Pool.terminate() killed readers that could be sending a result; one killed holding the
    # result queue's lock hung the pool's shutdown for ever (iter_groups on a damaged shard, CI).
    with RemoteModel("branching") as m, DatasetWriter(tmp_path / "d", "branching", shard_traces=100) as w:
        for i in range(8):
            w.add(m.stream(100, seed=i))
    ds = TraceDataset(tmp_path / "d")
    pool = ds.reader_pool(2)
    readers = list(pool._pool)  # the processes, to read their exit codes once ended
    groups = ds.iter_groups(readers=pool)
    next(groups)  # left early: shards are still being read
    groups.close()
    close_readers(pool)
    assert [p.exitcode for p in readers] == [0, 0]  # ended by their stop sentinel, not SIGTERM


def test_writer_buffers_chunks_into_shards_and_close_writes_the_rest(tmp_path):
    with RemoteModel("branching") as m, DatasetWriter(tmp_path / "d", "branching", shard_traces=250) as w:
        for i in range(7):
            assert (w.add(m.stream(100, seed=i)) is None) == (i % 3 != 2)  # a shard per 300 traces
        assert w.stats.traces == 600
    ds = TraceDataset(tmp_path / "d")
    assert sorted(s.num_traces for s in ds.shards) == [100, 300, 300]


def test_sparse_rows_take_is_the_dense_rows_in_order():
    rng = np.random.default_rng(0)
    dense = np.where(rng.random((50, 30)) < 0.2, rng.normal(size=(50, 30)), 0.5).astype(np.float32)
    s = SparseRows.encode(dense)
    idx = rng.permutation(50)[:37]
    np.testing.assert_array_equal(s.take(idx).dense(), dense[idx])
    np.testing.assert_array_equal(s.take(np.zeros(0, np.int64)).dense(), dense[:0])


def test_calorimeter_observations_are_stored_sparse_and_redrawn(tmp_path):
    ds = make_dataset(tmp_path / "tau", "tau_decay", 40)
    assert ds.num_bytes / ds.num_traces < 30_000  # a dense float32 image alone is 98 000 bytes
    groups = list(ds.iter_groups())
    ob = groups[0].observations["calorimeter"]
    img = ob.draw(np.random.default_rng(0))
    assert img.shape == (len(groups[0]), 20, 35, 35)
    # The redrawn image is Normal(mean, stddev) voxel by voxel.
    z = (img.reshape(len(img), -1) - ob.loc.dense()) / ob.scale.dense()
    assert abs(z.mean()) < 4 / math.sqrt(z.size) and abs(z.std() - 1) < 4 / math.sqrt(2 * z.size)
    # Drawn on the training device (here the CPU) from the sparse mean and stddev: the same law.
    on_device = NormalObservation.from_block(ob).draw(torch.device("cpu"), torch.Generator().manual_seed(0))
    assert on_device.shape == img.shape
    z = (on_device.reshape(len(img), -1).numpy() - ob.loc.dense()) / ob.scale.dense()
    assert abs(z.mean()) < 4 / math.sqrt(z.size) and abs(z.std() - 1) < 4 / math.sqrt(2 * z.size)
    # Training with the device-side draw and a shard-reading process runs and learns something.
    opts = TrainOptions(
        batch_size=8,
        epochs=2,
        draw_on_device=True,
        read_workers=1,
        progress=False,
        threads=1,
        buffer_traces=40,
    )
    res = train("tau_decay", dataset=ds, options=opts)
    assert res.traces == 80 and math.isfinite(res.final_loss)


def test_count_heads_are_normalised_discrete_and_sample_what_they_score():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    for dt, params in ((POISSON, torch.tensor([[4.0]])), (BINOMIAL, torch.tensor([[10.0, 0.3]]))):
        head = make_head(dt, 8, 1, params.shape[1])
        raw = head.raw(torch.randn(1, 8)).detach()
        ks = torch.arange(0, 60, dtype=torch.float32)[:, None]
        p = torch.exp(head.log_prob(raw.expand(60, -1), params.expand(60, -1), ks)).double()
        assert abs(float(p.sum()) - 1) < 1e-4  # float32 log-probabilities
        n = 20000
        s = head.sample(raw.expand(n, -1), params.expand(n, -1), gen)
        assert torch.all(s == s.round()) and torch.all(s >= 0)
        freq = torch.bincount(s[:, 0].long(), minlength=60)[:60].double() / n
        for k in range(60):
            if p[k] > 0.01:
                assert_close(
                    float(freq[k]),
                    float(p[k]),
                    math.sqrt(float(p[k]) * (1 - float(p[k])) / n),
                    f"type {dt} q({k})",
                )


# (wire type, prior parameters of one draw of 2 values) for every head type.
HEAD_PRIORS = [
    (1, [0.5, -1.0, 2.0, 0.3]),  # Normal(mean, std)
    (9, [0.0, 1.0, 0.5, 0.2]),  # LogNormal(loc, scale)
    (2, [-1.0, 0.0, 3.0, 0.5]),  # Uniform(low, high)
    (6, [2.0, 1.0, 2.0, 5.0]),  # Beta
    (7, [1.5, 0.2]),  # Exponential(rate)
    (8, [2.0, 3.0, 1.0, 0.5]),  # Gamma(concentration, rate)
    (11, [1.0, 2.0, 1.5, 0.7]),  # Weibull(scale, concentration)
    (3, [0.2, 0.3, 0.5, 0.6, 0.3, 0.1]),  # Categorical, 3 categories
    (5, [0.3, 0.8]),  # Bernoulli
    (4, [4.0, 0.5]),  # Poisson
    (10, [10.0, 3.0, 0.3, 0.9]),  # Binomial(n, p)
]


@pytest.mark.parametrize("dist_type,params", HEAD_PRIORS, ids=[str(t) for t, _ in HEAD_PRIORS])
def test_heads_score_what_they_sample_in_one_call(dist_type, params):
    """An inference round draws and scores in one call (`sample_with_log_prob`): its log q must be
    the head's own `log_prob` of the values it returns, and finite."""
    torch.manual_seed(0)
    p = torch.tensor([params]).expand(500, -1)
    head = make_head(dist_type, 8, 2, p.shape[1])
    raw = head.raw(torch.randn(500, 8)).detach()
    values, log_q = head.sample_with_log_prob(raw, p, torch.Generator().manual_seed(1))
    assert values.shape == (500, 2) and log_q.shape == (500,)
    assert torch.isfinite(log_q).all()
    torch.testing.assert_close(log_q, head.log_prob(raw, p, values), rtol=1e-5, atol=1e-5)


def test_mixture_heads_pick_components_by_their_weights():
    """Five narrow components 10 prior standard deviations apart: the share of draws near each
    is its weight, within 4 binomial standard errors."""
    head = make_head(1, 8, 1, 2)
    n = 40000
    raw = torch.zeros(1, 15)
    logits = torch.tensor([0.0, 1.0, -1.0, 2.0, 0.5])
    raw[0, 0:5], raw[0, 5:10], raw[0, 10:15] = logits, torch.tensor([-20.0, -10, 0, 10, 20]), -5.0
    values, _ = head.sample_with_log_prob(
        raw.expand(n, -1), torch.tensor([[0.0, 1.0]]).expand(n, -1), torch.Generator().manual_seed(2)
    )
    picked = torch.round(values[:, 0] / 10).long() + 2
    share = torch.bincount(picked, minlength=5).double() / n
    weights = torch.softmax(logits.double(), 0)
    for k in range(5):
        w = float(weights[k])
        assert_close(float(share[k]), w, math.sqrt(w * (1 - w) / n), f"component {k}")


def test_count_heads_prior_mass_is_poisson_and_binomial():
    """The count head's prior share, written out, against `torch.distributions`, at the edges of
    the support too (a rate of 0, a probability of 0 or 1, counts off the support: -inf)."""
    k = torch.arange(-1.0, 14.0, dtype=torch.float64)[:, None]
    poisson = make_head(POISSON, 8, 1, 1)
    for rate in (0.0, 0.3, 4.0, 250.0):
        r = torch.full_like(k, rate)
        want = torch.distributions.Poisson(r.clamp_min(1e-300), validate_args=False).log_prob(k.clamp_min(0))
        want = torch.where(k >= 0, want, -math.inf)
        if rate == 0.0:
            want = torch.where(k == 0, torch.zeros_like(k), torch.full_like(k, -math.inf))
        torch.testing.assert_close(poisson._prior_log_prob(r, k), want)
    binomial = make_head(BINOMIAL, 8, 1, 2)
    for n, prob in ((10.0, 0.3), (12.0, 0.0), (12.0, 1.0), (0.0, 0.5)):
        params = torch.tensor([[n, prob]], dtype=torch.float64).expand(len(k), -1)
        got = binomial._prior_log_prob(params, k)
        inside = (k >= 0) & (k <= n)
        want = torch.distributions.Binomial(n, probs=torch.tensor(prob, dtype=torch.float64)).log_prob(
            k.clamp(0, n)
        )
        want = torch.where(inside, want, -math.inf)
        if prob in (0.0, 1.0):  # certain (torch.distributions clamps its logits: near, not exact)
            want = torch.where(k == n * prob, torch.zeros_like(k), torch.full_like(k, -math.inf))
        torch.testing.assert_close(got, want, msg=f"Binomial({n}, {prob})")


def test_count_heads_stay_finite_when_a_component_is_far_from_the_support():
    """A component far below 0 or far above the prior once gave 0/0 (NaN) gradients mid-training."""
    for dt, params in ((POISSON, torch.tensor([[4.0]])), (BINOMIAL, torch.tensor([[10.0, 0.3]]))):
        head = make_head(dt, 8, 1, params.shape[1])
        # Component means (in prior-standardised units) far off, and just off, the support's lower
        # end: there the support's probability is ~1e-200, and its square underflowed.
        means = torch.tensor([-200.0, -60.0, 60.0, 200.0, -2.38, -2.42, -2.55, -2.7])
        n = len(means)
        raw = torch.zeros(n, head.value_size * head.outputs_per_value)
        r = raw.reshape(n, 1, 3, head.components)
        r[:, :, 1] = means[:, None, None]
        r[:, :, 2] = -5.0  # narrow
        raw.requires_grad_(True)
        k = torch.tensor([[0.0], [3.0], [9.0], [10.0], [0.0], [1.0], [0.0], [2.0]])
        lp = head.log_prob(raw, params.expand(n, -1), k)
        lp.sum().backward()
        assert torch.isfinite(lp).all() and torch.isfinite(raw.grad).all()
        s = head.sample(raw.detach(), params.expand(n, -1), torch.Generator().manual_seed(0))
        assert torch.isfinite(s).all() and (s >= 0).all()


# --- training and checkpoints -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gum_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("gum") / "data"
    return make_dataset(d, "gum", 50_000)


@pytest.mark.slow
def test_gum_cli_train_then_ic_matches_exact_posterior(gum_data, tmp_path):
    net = tmp_path / "gum.pt"
    r = cli(
        "train",
        "gum",
        "--data",
        str(gum_data.path),
        "-o",
        str(net),
        "--epochs",
        "6",
        "--batch-size",
        "128",
        "--lr",
        "3e-3",
        "--cosine",
        "--batch-process",  # minibatches from a process of their own, as on CUDA
        "--tensorboard",
        str(tmp_path / "tb"),
        "--json",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["traces"] == 300_000 and math.isfinite(info["loss"])
    log = (tmp_path / "gum.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch,traces,loss,valid_loss,lr,traces_per_s")
    (events,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    lr = read_scalars(events)["lr"]
    assert len(lr) == len(log) - 1 and lr[-1][0] == info["steps"]
    assert lr[-1][1] < lr[0][1] / 5  # --cosine decayed it (to a tenth)
    torch.load(net, weights_only=True)  # loads on current torch with weights_only
    r = cli(
        "posterior",
        "gum",
        "--engine",
        "ic",
        "--network",
        str(net),
        "-n",
        "2000",
        "--seed",
        "3",
        "-o",
        str(tmp_path / "post"),
        "--json",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    ess = s["ess"]
    assert ess / s["num_traces"] >= 0.5, s
    assert s["prior_fallbacks"] == 0
    mu = s["latents"]["mu"]
    assert_close(mu["mean"], GUM_MEAN, GUM_STD / math.sqrt(ess), "IC mu mean")
    assert_close(mu["std"], GUM_STD, GUM_STD / math.sqrt(2 * ess), "IC mu std")
    # Two driver processes, each with its own simulators and network copy: one weighted sample.
    # Their rounds wait for half of their traces (--quorum): the weights stay exact.
    r = cli(
        "posterior", "gum", "--engine", "ic", "--network", str(net), "-n", "1001", "--seed", "4",
        "--processes", "2", "--workers", "8", "--quorum", "0.5", "-o", str(tmp_path / "post2"),
        "--json", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["num_traces"] == 1001 and s["ess"] / s["num_traces"] >= 0.5, s
    mu, ess = s["latents"]["mu"], s["ess"]
    assert_close(mu["mean"], GUM_MEAN, GUM_STD / math.sqrt(ess), "IC mu mean, 2 processes")
    assert_close(mu["std"], GUM_STD, GUM_STD / math.sqrt(2 * ess), "IC mu std, 2 processes")
    # Where the call's time went, per driver: its stages in order, all within the call.
    assert len(s["timeline"]) == 2
    stages = ["booted", "network_loaded", "simulators_started", "driving", "driven", "received"]
    for tl in s["timeline"]:
        times = [tl[k] for k in stages]
        assert times == sorted(times) and times[0] > 0 and times[-1] <= s["seconds"], tl
    assert s["startup_seconds"] == max(tl["driving"] for tl in s["timeline"])
    # Per address against the prior, on held-out traces. Under N(1, 5) the prior's -log p has
    # mean 1/2 log(2 pi e 5) and std 1/sqrt(2); the exact posterior gains the mutual information
    # I(mu; obs) = 1/2 log 6 nats on average, the most any proposal can (a log ratio with std
    # 0.913 per draw), so a trained network sits just under it.
    held = make_dataset(tmp_path / "held", "gum", 2000, seed=777)
    r = cli("evaluate", str(net), "--data", str(held.path), "--traces", "2000", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["traces"] == 2000 and report["skipped_traces"] == 0
    (row,) = report["addresses"]
    assert row["name"] == "mu" and row["distribution"] == "Normal" and row["draws"] == 2000
    assert_close(
        row["prior_nll_per_draw"],
        0.5 * math.log(2 * math.pi * math.e * 5),
        0.5**0.5 / math.sqrt(2000),
        "-log p",
    )
    assert 0.6 < row["gain_per_draw"] < 0.5 * math.log(6) + 4 * 0.913 / math.sqrt(2000), row


@pytest.mark.slow
def test_marsaglia_rejection_loop_shares_one_proposal(tmp_path):
    ds = make_dataset(tmp_path / "m", "gum_marsaglia", 30_000)
    # The loop's accepted pair only: one type of two draws, whatever the number of iterations.
    assert [len(t.layout) for t in ds.trace_types().values()] == [2]
    res = train(
        "gum_marsaglia",
        dataset=ds,
        options=TrainOptions(epochs=6, batch_size=128, lr=3e-3, cosine=True, progress=False),
    )
    post = ic(res.network, "gum_marsaglia", 1500)
    ess = post.ess
    assert ess / post.num_traces >= 0.15, post.stats
    e = post["mu"]
    assert_close(e.mean, GUM_MEAN, GUM_STD / math.sqrt(ess), "IC Marsaglia mu mean")


@pytest.mark.slow
def test_branching_poisson_proposals_match_enumeration(tmp_path):
    ds = make_dataset(tmp_path / "b", "branching", 30_000)
    res = train(
        "branching",
        dataset=ds,
        options=TrainOptions(epochs=6, batch_size=128, lr=3e-3, cosine=True, progress=False),
    )
    post = ic(res.network, "branching", 2000)
    assert post.ess / post.num_traces >= 0.3, post.stats
    check_discrete(post, "r", branching_exact(), post.ess)


@pytest.mark.slow
def test_hmm_marginals(tmp_path):
    ds = make_dataset(tmp_path / "h", "hmm", 30_000)
    # A decaying rate: without it ESS/N landed anywhere from 0.06 to 0.2 from run to run.
    res = train(
        "hmm",
        dataset=ds,
        options=TrainOptions(epochs=5, batch_size=128, lr=3e-3, cosine=True, progress=False),
    )
    post = ic(res.network, "hmm", 1000)
    assert post.ess / post.num_traces >= 0.1, post.stats
    exact = hmm_exact_marginals()
    for t in (1, 8, 16):
        check_discrete(post, f"state_{t}", exact[t], post.ess)


def test_resume_continues_exactly_where_training_stopped(gum_data, tmp_path):
    opts = dict(batch_size=256, lr=3e-3, seed=5, progress=False, threads=1)
    full = train("gum", dataset=gum_data, output=tmp_path / "full.pt", options=TrainOptions(epochs=2, **opts))
    train("gum", dataset=gum_data, output=tmp_path / "half.pt", options=TrainOptions(epochs=1, **opts))
    resumed = train(
        "gum",
        dataset=gum_data,
        output=tmp_path / "half.pt",
        options=TrainOptions(epochs=2, **opts),
        resume=True,
    )
    assert resumed.steps == full.steps
    a, b = full.network.state_dict(), resumed.network.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    _, blob = load_checkpoint(tmp_path / "half.pt", simulator="gum", observations={"obs": (2,)})
    assert blob["train_state"]["epoch"] == 2 and blob["optimizer"]["state"]


def test_types_per_step_sums_several_minibatches_into_one_step(tmp_path):
    """`--types-per-step K`: each optimizer step learns from K minibatches (of the trace types
    the stream gives), so a step can contrast types; every trace still counts once."""
    ds = make_dataset(tmp_path / "b", "branching", 3000)
    opts = dict(batch_size=64, lr=3e-3, seed=1, progress=False, threads=1, traces=64 * 12)
    one = train("branching", dataset=ds, options=TrainOptions(**opts))
    three = train("branching", dataset=ds, options=TrainOptions(types_per_step=3, **opts))
    # A type's last minibatch may be short, so the budget takes 12 or more; a step takes three.
    assert one.steps >= 12 and three.steps == math.ceil(one.steps / 3)
    assert three.traces >= one.traces >= 64 * 12
    assert math.isfinite(three.final_loss)
    a, b = one.network.state_dict(), three.network.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # other steps, other weights
    with pytest.raises(ValueError, match="types_per_step"):
        train("branching", dataset=ds, options=TrainOptions(types_per_step=0, **opts))


def test_train_refuses_an_unknown_conv_layout_before_it_starts(tmp_path):
    ds = make_dataset(tmp_path / "b", "branching", 200)
    with pytest.raises(ValueError, match="unknown conv_layout 'nhwc'"):
        train("branching", dataset=ds, options=TrainOptions(conv_layout="nhwc", progress=False))


def test_cpu_training_threads_leave_cores_to_simulators_and_ranks(monkeypatch):
    """Offline training takes every usable core, split among the ranks of a distributed run so
    that two ranks on a node do not spin against each other; online training leaves half of
    them to the simulators."""
    from probexec.nn import training

    monkeypatch.setattr(training, "usable_cores", lambda: 8)
    assert training.default_threads(online=False) == 8
    assert training.default_threads(online=False, world=2) == 4
    assert training.default_threads(online=True) == 4
    monkeypatch.setattr(training, "usable_cores", lambda: 1)
    assert training.default_threads(online=True) == training.default_threads(online=False, world=2) == 1


def test_new_addresses_keep_the_optimizer_state_of_old_ones(tmp_path):
    ds = make_dataset(tmp_path / "b", "branching", 3000)
    groups = list(minibatches(ds.iter_groups(), 64, rng=np.random.default_rng(0)))
    short = [g for g in groups if len(g.layout) == 1]
    long = [g for g in groups if len(g.layout) == 2]
    net = build_network("branching", short[:2])
    assert len(net.sites) == 1
    opt = make_optimizer(net, 1e-3)
    for g in short[:3]:
        b = prepare(g, np.random.default_rng(0))
        opt.zero_grad()
        net.loss(g.layout, b.values, b.params, b.observations).backward()
        opt.step()
    before = {id(p): opt.state[p]["exp_avg"].clone() for p in net.parameters() if "exp_avg" in opt.state[p]}
    assert len(before) > 10
    count = len(opt.param_groups[0]["params"])
    assert net.ensure_sites([long[0].layout], opt) == 1
    assert len(opt.param_groups) == 1  # one group, so a step pays for one
    assert len(opt.param_groups[0]["params"]) == count + len(net.site_parameter_groups()[-1])
    assert net.ensure_sites([long[0].layout], opt) == 0  # a known address adds nothing
    assert len(opt.param_groups[0]["params"]) == count + len(net.site_parameter_groups()[-1])
    for p in net.parameters():
        if id(p) in before:
            torch.testing.assert_close(opt.state[p]["exp_avg"], before[id(p)])
    # The new address's proposal head trains from its first step on (its value embedding only
    # feeds a later draw, of which this trace type has none).
    new = list(net.heads[list(net.sites)[-1]].parameters())
    b = prepare(long[0], np.random.default_rng(0))
    opt.zero_grad()
    net.loss(long[0].layout, b.values, b.params, b.observations).backward()
    opt.step()
    assert all("exp_avg" in opt.state[p] for p in new)


def test_ic_warns_when_the_network_knows_none_of_the_addresses(gum_data):
    """A network made from another build's traces (here: every address id moved, as a rebuild
    with changed model code moves them) would quietly be prior sampling; IC says so."""
    groups = list(minibatches(gum_data.iter_groups(), 64, rng=np.random.default_rng(0)))[:2]
    own = build_network("gum", groups)
    moved = [
        TypeGroup(
            TypeLayout(tuple(dataclasses.replace(s, address_id=s.address_id ^ 1) for s in g.layout.sites)),
            g.values,
            g.params,
            g.observations,
        )
        for g in groups
    ]
    other = build_network("gum", moved)
    with pytest.warns(RuntimeWarning, match="never seen"):
        post = ic(other, "gum", 24, in_flight=4)
    assert post.stats["prior_fallbacks"] == 24 and post.stats["network_draws"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        post = ic(own, "gum", 24, in_flight=4)
    assert post.stats["prior_fallbacks"] == 0 and post.stats["network_draws"] == 24


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(gum_data, tmp_path):
    out = tmp_path / "net.pt"

    def poison(step: int, loss: float) -> None:
        if step == 3:
            with torch.no_grad():
                next(res_net[0].parameters()).fill_(float("nan"))

    res_net: list = []
    from probexec.nn import training

    original = training.build_network

    def capture(*a, **k):
        n = original(*a, **k)
        res_net.append(n)
        return n

    training.build_network = capture
    try:
        with pytest.raises(TrainingError, match=r"loss is nan.*last good checkpoint"):
            train(
                "gum",
                dataset=gum_data,
                output=out,
                on_step=poison,
                options=TrainOptions(epochs=1, batch_size=64, checkpoint_every=2, progress=False),
            )
    finally:
        training.build_network = original
    net, _ = load_checkpoint(out)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_nan_loss_between_lazy_loss_reads_never_reaches_a_checkpoint(gum_data, tmp_path, monkeypatch):
    """On a GPU the loss is read only every few steps; a NaN in between still stops training, and
    the checkpoint written before it stays finite (the GPU path, run on CPU)."""
    from probexec.nn import training

    original = training.build_network

    def nan_from_step_7(*a, **k):
        net = original(*a, **k)
        real, calls = net.loss, [0]

        def loss(*a2, **k2):
            calls[0] += 1
            value = real(*a2, **k2)
            return value * float("nan") if calls[0] >= 7 else value

        net.loss = loss
        return net

    monkeypatch.setattr(training, "build_network", nan_from_step_7)
    out = tmp_path / "net.pt"
    opts = TrainOptions(
        epochs=1, batch_size=64, checkpoint_every=4, log_every=100, loss_read_every=5, progress=False
    )
    with pytest.raises(TrainingError, match=r"loss is nan.*last good checkpoint"):
        train("gum", dataset=gum_data, output=out, options=opts)
    net, blob = load_checkpoint(out)
    assert blob["train_state"]["step"] == 4
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_network_for_another_simulator_or_shape_is_refused(gum_data, tmp_path):
    out = tmp_path / "net.pt"
    train(
        "gum", dataset=gum_data, output=out, options=TrainOptions(traces=1000, batch_size=100, progress=False)
    )
    with pytest.raises(NetworkMismatchError, match="trained for simulator 'gum', not 'branching'"):
        load_checkpoint(out, simulator="branching")
    with pytest.raises(NetworkMismatchError, match=r"observation 'obs' of shape \(2,\), not \(3,\)"):
        load_checkpoint(out, simulator="gum", observations={"obs": (3,)})
    r = cli(
        "posterior",
        "branching",
        "--engine",
        "ic",
        "--network",
        str(out),
        "-n",
        "10",
        "-o",
        str(tmp_path / "p"),
    )
    assert r.returncode == 1 and "trained for simulator 'gum'" in r.stderr
    (tmp_path / "junk.pt").write_bytes(b"not a network")
    with pytest.raises(NetworkMismatchError, match=r"junk\.pt"):
        load_checkpoint(tmp_path / "junk.pt")


@pytest.mark.skipif(not (BIN / "torchrun").exists(), reason="torchrun not installed")
def test_two_process_torchrun_gradients_equal_single_process_mean(gum_data, tmp_path):
    import ddp_worker

    out = tmp_path / "grads.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    r = subprocess.run(
        [
            str(BIN / "torchrun"),
            "--standalone",
            "--nproc_per_node",
            "2",
            str(HERE / "ddp_worker.py"),
            str(gum_data.path),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    dist_grads = torch.load(out, weights_only=True)
    net = ddp_worker.network(gum_data)
    losses = []
    for rank in (0, 1):
        g = ddp_worker.first_batches(gum_data, rank, 2)
        b = prepare(g, np.random.default_rng(rank))
        losses.append(net.loss(g.layout, b.values, b.params, b.observations))
    (sum(losses) / 2).backward()
    for name, p in net.named_parameters():
        want = p.grad if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(dist_grads[name], want, rtol=1e-4, atol=1e-6, msg=name)


def test_auto_processes_follow_the_cores_and_the_traces():
    assert auto_processes(100_000, 2) == 1  # CI: one driver
    assert auto_processes(100_000, 16) == 4
    assert auto_processes(100_000, 128) == 8
    assert auto_processes(2_500, 64) == 2  # 1 000 traces a driver at least
    assert auto_processes(10, 64) == 1


def test_auto_processes_count_every_stratum(branching_checkpoint, monkeypatch):
    """`--stratify` runs -n traces per value: `--processes auto` sizes the drivers by all of them
    (on 16 cores one driver per 1 000 traces, at most 4: 9 values of 250 traces get 2 drivers, 10 of
    400 get 4, where one value's traces alone would get 1)."""
    import probexec.cli.posterior as cli_module
    import probexec.inference.ic_drivers as ic_drivers
    from probexec.cli import build_parser
    from probexec.simulators import get_simulator

    started: list[int] = []

    @contextlib.contextmanager
    def drivers(network, simulator, *, processes, in_flight, device):
        started.append(processes)
        yield None

    monkeypatch.setattr(cli_module, "usable_cores", lambda: 16)
    monkeypatch.setattr(ic_drivers, "ICDrivers", drivers)
    path, _ = branching_checkpoint
    info = get_simulator("branching")
    for n, stratify, want in (
        ("250", "r=0,1,2,3,4,5,6,7,8", 2),
        ("400", "r=0,1,2,3,4,5,6,7,8,9", 4),
    ):
        args = build_parser().parse_args(
            ["posterior", "branching", "--engine", "ic", "--network", str(path), "-n", n, "--stratify", stratify,
             "-o", "unused"]
        )  # fmt: skip
        with cli_module._posterior_runner(args, info, [{"obs": np.array([6.0])}], single=True):
            pass
        assert started[-1] == want, (n, started)


def test_pools_and_drivers_count_the_cores_this_process_may_use():
    """Under Slurm or taskset a process may run on fewer cores than the machine has: pools and
    the IC driver count are sized by the affinity mask, not `os.cpu_count()`."""
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})\n"
        "from probexec.cores import usable_cores\n"
        "from probexec.inference.pool import ModelPool\n"
        "print(usable_cores(), ModelPool.__dataclass_fields__['workers'].default_factory())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]


def test_ic_cli_needs_a_network(tmp_path):
    r = cli("posterior", "gum", "--engine", "ic", "-n", "10", "-o", str(tmp_path / "p"))
    assert r.returncode == 1 and "--network" in r.stderr
    assert shutil.which(sys.executable)
    for bad in ("0", "two"):
        net, out = str(tmp_path / "net.pt"), str(tmp_path / "p")
        r = cli(
            "posterior", "gum", "--engine", "ic", "--network", net, "--processes", bad, "-o", out, "-n", "9"
        )
        assert (
            r.returncode == 1
            and f"--processes is a number of driver processes (1 or more) or 'auto', not '{bad}'" in r.stderr
        )


_KILLED_IC_ENGINE = """
import sys
from probexec.inference.ic_drivers import ic_posterior_processes
from probexec.simulators import get_simulator
obs = get_simulator("gum").default_observations
ic_posterior_processes(sys.argv[1], "gum", 10_000_000, obs, processes=2, in_flight=2, seed=0)
"""


def test_ic_driver_processes_end_with_a_killed_engine(gum_data, tmp_path):
    """An engine running IC in driver processes is killed (OOM killer, a job's time limit): its
    drivers and their simulators end within seconds, instead of running their traces for no one
    and then idling for ever."""
    import signal
    import time

    net = tmp_path / "gum.pt"
    train(
        "gum", dataset=gum_data, output=net, options=TrainOptions(traces=200, batch_size=100, progress=False)
    )
    # Its simulators' folders (socket, log) in tmp_path: a killed engine cannot remove them.
    engine = subprocess.Popen(
        [sys.executable, "-c", _KILLED_IC_ENGINE, str(net)], env=dict(os.environ, TMPDIR=str(tmp_path))
    )
    drivers: set[int] = set()
    sims: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(sims) < 4 and time.monotonic() < deadline and engine.poll() is None:
            time.sleep(0.2)
            drivers = child_processes({engine.pid}) - {engine.pid}
            sims = child_processes(drivers)
        assert len(sims) >= 4, f"the drivers {drivers} did not start their 2 simulators each: {sims}"
        time.sleep(1.0)  # let the drivers run traces
        engine.kill()
        engine.wait(timeout=10)
        deadline = time.monotonic() + 15
        left = drivers | sims
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = {p for p in left if process_alive(p)}
        assert not left, f"processes {sorted(left)} outlived their engine"
    finally:
        for p in drivers | sims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


@pytest.fixture(scope="module")
def gum_quick_checkpoint(gum_data, tmp_path_factory):
    """A GUM network, trained briefly, and its checkpoint file (for driver processes)."""
    path = tmp_path_factory.mktemp("gum_quick") / "gum.pt"
    # The rate decays over the run: at a constant 3e-3 the last step's network varies so much with
    # the rounding of the machine that ran it that its ESS/N on obs [8, 9] ranged 0.33-0.97 over
    # ten training seeds; decayed, 0.66-0.97 over eight.
    opts = TrainOptions(traces=30_000, batch_size=100, lr=3e-3, cosine=True, progress=False)
    return path, train("gum", dataset=gum_data, output=path, options=opts).network


@pytest.fixture(scope="module")
def gum_quick_network(gum_quick_checkpoint):
    return gum_quick_checkpoint[1]


def _gum_exact(obs: list[float]) -> tuple[float, float]:
    """GUM's posterior mean and std of mu given obs: N(1, 5) prior, N(mu, 2) per observation."""
    var = 1.0 / (1.0 / 5.0 + len(obs) / 2.0)
    return var * (1.0 / 5.0 + sum(obs) / 2.0), math.sqrt(var)


def test_ic_drivers_serve_many_events_without_restarting(gum_quick_checkpoint):
    """Amortised inference over many events: the driver processes and their simulators start
    once and serve every event. Each event's posterior matches its exact one, and the same seed
    on the same drivers gives the same weights, so nothing of one event leaks into the next."""
    from probexec.inference.ic_drivers import ICDrivers

    path, _ = gum_quick_checkpoint
    with ICDrivers(path, "gum", processes=2, in_flight=3) as drivers:
        pids = drivers.pids
        assert len(set(pids)) == 2
        for st in drivers.startup:
            assert (
                0
                < st["booted"]
                <= st["network_loaded"]
                <= st["simulators_started"]
                <= drivers.startup_seconds
            )
        weights = {}
        for k, obs in enumerate(([8.0, 9.0], [0.0, 1.0], [8.0, 9.0])):
            post = drivers.posterior(3001, {"obs": obs}, seed=7 if k != 1 else 8)
            assert post.num_traces == 3001 and post.stats["processes"] == 2 and post.stats["in_flight"] == 6
            assert post.stats["prior_fallbacks"] == 0
            assert [set(t) for t in post.stats["timeline"]] == [{"driving", "driven", "received"}] * 2
            mean, std = _gum_exact(obs)
            ess = post.ess
            assert ess / post.num_traces >= 0.3, (obs, ess)
            mu = post["mu"]
            se_mean, se_std = weighted_moment_errors(mu.values, mu.weights)
            assert_close(mu.mean, mean, se_mean, f"IC mu mean, obs {obs}")
            assert_close(mu.stddev, std, se_std, f"IC mu std, obs {obs}")
            weights[k] = post.log_weights
        np.testing.assert_array_equal(weights[0], weights[2])
        # A bad argument is refused without costing the drivers.
        with pytest.raises(ValueError, match="quorum"):
            drivers.posterior(10, {"obs": [8.0, 9.0]}, quorum=0.0)
        assert drivers.posterior(3, {"obs": [8.0, 9.0]}, seed=1).num_traces == 3
        assert drivers.pids == pids and all(process_alive(p) for p in pids)
    assert not any(process_alive(p) for p in pids)


def test_cli_train_init_goes_on_from_a_network_and_leaves_it_as_it_was(
    gum_quick_checkpoint, gum_data, tmp_path
):
    """`probexec train --init NET`: a new run (its own steps, optimizer and schedule) from NET's
    weights, so its first losses are the trained network's, not a fresh one's; NET's file is not
    touched. What would change NET's shape or overwrite it, and a network of another simulator,
    are refused before anything is written."""
    import hashlib

    path, _ = gum_quick_checkpoint
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    common = [
        "--data",
        str(gum_data.path),
        "--traces",
        "2560",
        "--batch-size",
        "128",
        "--seed",
        "3",
        "--json",
    ]
    first_loss = {}
    for name, extra in (("fresh", []), ("init", ["--init", str(path)])):
        out = tmp_path / f"{name}.pt"
        r = cli("train", "gum", "-o", str(out), "--lr", "1e-3", *extra, *common)
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)
        assert summary["steps"] == 20 and summary["init"] == (str(path) if extra else None)
        assert "warning" not in r.stderr  # the network has layers for every address in the data
        first_loss[name] = float(out.with_suffix(".csv").read_text().splitlines()[1].split(",")[3])
    # The mean loss of the first 20 steps: a trained GUM proposal is about 0.5 nats better than
    # one at initialisation (1.9 against 1.4).
    assert first_loss["init"] < first_loss["fresh"] - 0.3, first_loss
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    refused = tmp_path / "refused.pt"
    for args, message in (
        (["gum", "-o", str(path)], "is the --init network: training would overwrite it"),
        (["gum", "-o", str(refused), "--resume"], "give one"),
        (["gum", "-o", str(refused), "--hidden", "32", "--obs-norm", "batch"], "drop --hidden, --obs-norm"),
        (
            ["gum_marsaglia", "-o", str(refused), "--traces", "100"],
            "trained for simulator 'gum', not 'gum_marsaglia'",
        ),
    ):
        data = ["--data", str(gum_data.path)] if args[0] == "gum" else []
        r = cli("train", *args, *data, "--init", str(path))
        assert r.returncode != 0 and message in r.stderr, (args, r.stderr)
    assert not refused.exists()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_ic_drivers_name_a_driver_that_died(gum_quick_checkpoint):
    """A driver process killed between events (OOM killer): the next event's call stops with an
    error naming that driver, and the other driver is stopped too."""
    import signal

    from probexec.inference.ic_drivers import DriverError, ICDrivers

    path, _ = gum_quick_checkpoint
    with ICDrivers(path, "gum", processes=2, in_flight=2) as drivers:
        assert drivers.posterior(20, {"obs": [8.0, 9.0]}, seed=0).num_traces == 20
        pids = drivers.pids
        os.kill(pids[1], signal.SIGKILL)
        with pytest.raises(DriverError, match=r"IC driver 1 of gum died \(exit code -9\)"):
            drivers.posterior(20, {"obs": [8.0, 9.0]}, seed=1)
        with pytest.raises(RuntimeError, match="closed"):
            drivers.posterior(20, {"obs": [8.0, 9.0]}, seed=2)
    assert not process_alive(pids[0])


@pytest.mark.parametrize("quorum", [1.0, 0.5])
def test_ic_names_a_simulator_that_hangs_or_dies_among_many(gum_quick_network, quorum):
    """One of several simulators in flight stops answering (SIGSTOP) or dies: IC stops with an
    error naming it, soon after its timeout (hang) or at once (death), instead of waiting forever.
    With a quorum below 1 the others go on without it, and it is still caught."""
    import signal
    import time

    import probexec

    obs = get_simulator("gum").default_observations
    for sig, error, limit in (
        (signal.SIGSTOP, probexec.SimulatorTimeoutError, 6.0),
        (signal.SIGKILL, probexec.SimulatorDiedError, 4.0),
    ):
        models = [RemoteModel("gum", timeout=1.0) for _ in range(4)]
        try:
            assert ic_posterior(gum_quick_network, models, 20, obs, seed=0).num_traces == 20
            os.kill(models[2].pid, sig)
            t0 = time.monotonic()
            with pytest.raises(error, match=r"within 1 s|killed by SIGKILL") as e:
                ic_posterior(gum_quick_network, models, 100_000, obs, seed=1, quorum=quorum)
            assert time.monotonic() - t0 < limit, f"{sig!r}: noticed after {time.monotonic() - t0:.1f} s"
            named = models[2].address if sig == signal.SIGSTOP else f"pid {models[2].pid}"
            assert named in str(e.value)
            if sig == signal.SIGSTOP:
                os.kill(models[2].pid, signal.SIGCONT)
        finally:
            for m in models:
                m.close()


def test_cli_posterior_over_an_events_file(gum_quick_checkpoint, tmp_path):
    """`probexec posterior --events FILE` (FILE from `probexec simulate`): one posterior per event,
    each matching the exact posterior of its own observations, with the event's true latent
    alongside; for IC over two driver processes started once, and for IS."""
    path, _ = gum_quick_checkpoint
    events = tmp_path / "events.npz"
    r = cli("simulate", "gum", "-n", "3", "--seed", "5", "-o", str(events))
    assert r.returncode == 0, r.stderr
    with np.load(events) as f:
        obs, mu_true = f["obs"], f["mu"]
    for engine, extra in (("ic", ["--network", str(path), "--processes", "2", "--workers", "4"]), ("is", [])):
        out = tmp_path / engine
        r = cli(
            "posterior", "gum", "--engine", engine, *extra, "--events", str(events), "-n", "1500",
            "--seed", "1", "-o", str(out), "--json",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert rows == [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
        assert [row["event"] for row in rows] == [0, 1, 2]
        for i, row in enumerate(rows):
            assert row["truth"] == {"mu": pytest.approx(float(mu_true[i]))}
            assert (out / f"event_{i:05d}" / "posterior.npz").exists()
            mean, std = _gum_exact(list(obs[i]))
            ess = row["ess"]
            assert ess / row["num_traces"] >= (0.3 if engine == "ic" else 0.05), row
            mu = row["latents"]["mu"]
            assert_close(mu["mean"], mean, std / math.sqrt(ess), f"{engine} event {i} mu mean")
        if engine == "ic":
            assert all(row["processes"] == 2 for row in rows)


def test_cli_events_file_errors_name_the_problem(tmp_path):
    """An events file of another simulator, one whose observation has the wrong shape, or an event
    with NaN is refused before any simulator starts, with a message naming the problem."""
    wrong_sim = tmp_path / "tau.npz"
    np.savez(wrong_sim, obs=np.zeros((2, 2)), __meta__=np.array(json.dumps({"simulator": "tau_decay"})))
    bad_shape = tmp_path / "shape.npz"
    np.savez(bad_shape, obs=np.zeros((2, 3)))
    nan = tmp_path / "nan.npz"
    np.savez(nan, obs=np.array([[8.0, 9.0], [np.nan, 1.0]]))
    for f, message in (
        (wrong_sim, "holds events of 'tau_decay', not of 'gum'"),
        (bad_shape, "observation 'obs' has shape [2, 3]; expected 2 events of [2]"),
        (nan, "event 1: observation 'obs' contains NaN"),
        (tmp_path / "missing.npz", "does not exist"),
    ):
        r = cli("posterior", "gum", "--events", str(f), "-n", "10", "-o", str(tmp_path / "out"))
        assert r.returncode != 0 and message in r.stderr, (f, r.stderr)


def test_quorum_lets_the_other_traces_go_on_past_a_stalled_simulator(gum_quick_network):
    """A round with a quorum below 1 does not wait for every simulator: while one is stopped
    (SIGSTOP, then SIGCONT after 2 s, within its timeout) the others keep finishing traces, where
    a full round (quorum 1) waits for it. Both give the same posterior: the weights are exact
    whichever round a draw was proposed in."""
    import signal
    import threading
    import time

    from probexec.inference.ic import ICDriver

    obs = get_simulator("gum").default_observations
    n, paused = 600, 2.0
    models = [RemoteModel("gum", timeout=30.0) for _ in range(6)]
    try:
        with pytest.raises(ValueError, match="quorum"):
            ICDriver(gum_quick_network, models, obs, quorum=0.0)
        for quorum in (1.0, 0.5):
            driver = ICDriver(gum_quick_network, models, obs, seed=5, quorum=quorum)
            done_at: list[float] = []
            os.kill(models[0].pid, signal.SIGSTOP)
            t0 = time.monotonic()
            resume = threading.Timer(paused, os.kill, (models[0].pid, signal.SIGCONT))
            resume.start()
            try:
                batch, q_minus_p = driver.run(
                    n, on_trace=lambda d=done_at, t=t0: d.append(time.monotonic() - t)
                )
            finally:
                resume.join()
            while_stopped = sum(t < paused for t in done_at)
            if quorum == 1.0:
                assert while_stopped == 0, (
                    f"a full round finished {while_stopped} traces past a stopped simulator"
                )
            else:
                assert while_stopped >= 100, (
                    f"only {while_stopped} traces finished while one simulator was stopped"
                )
            assert batch.num_traces == n
            log_w = batch.log_likelihood() - q_minus_p
            mu = batch.values_of("mu")
            w = np.exp(log_w - log_w.max())
            ess = w.sum() ** 2 / (w**2).sum()
            assert ess > 50, (quorum, ess)
            se_mean, _ = weighted_moment_errors(mu, w)
            assert_close(float(np.sum(w * mu) / w.sum()), GUM_MEAN, se_mean, f"mu, quorum {quorum}")
    finally:
        for m in models:
            with contextlib.suppress(ProcessLookupError):
                os.kill(m.pid, signal.SIGCONT)
            m.close()


# --- the defensive mixture (`--defensive`) ----------------------------------------------------------


def test_ic_scores_like_training_including_prior_traces_mixed_networks_and_repeated_loops(tmp_path):
    """IC's log q of each draw, as the driver records it for each of its networks, against the
    training path's log q of the same values (`ProposalLSTM.site_log_q`), on tau_decay: uniform,
    categorical, normal and Poisson sites and a rejection loop. A share of 0.3 of the traces comes
    from the prior (defensive) and 0.3 from a second network (`mix`).

    - A trace drawn by the prior or by the other network gets its draws scored by each network:
      scored with the log q of a draw it did not post, it would not match.
    - After a rejection loop that ran several times the LSTM state must be that of the accepted
      draws alone, as in training. Inside such a loop only the first draw of an iteration can
      match: the others reuse the proposals of the first iteration, made from its draws.
    - Each trace's log Q/p is the mixture's, from the training path's log q/p of both networks."""
    from probexec.data.layout import kept_controlled_rows, split_by_type
    from probexec.inference.defensive import mixture_log_ratio
    from probexec.inference.ic import PRIOR, ICDriver
    from probexec.trace import FLAG_CONTROLLED, FLAG_REPLACE, SAMPLE

    torch.manual_seed(0)
    groups = list(make_dataset(tmp_path / "tau", "tau_decay", 200).iter_groups())
    nets = [build_network("tau_decay", groups).eval()]
    nets.append(copy.deepcopy(nets[0]))
    with torch.no_grad():  # the second network: the first with its heads' last layers moved
        for head in nets[1].heads.values():
            head.layer[2].weight.add_(0.3 * torch.randn_like(head.layer[2].weight))
    image = groups[0].observations["calorimeter"].rows(0, 1).draw(np.random.default_rng(1))
    eps, share, n = 0.3, 0.3, 60
    models = [RemoteModel("tau_decay") for _ in range(4)]
    try:
        with pytest.raises(ValueError, match="defensive"):
            ICDriver(nets[0], models, {"calorimeter": image}, defensive=1.5)
        with pytest.raises(ValueError, match=r"mix is the share .* in \[0, 0.7\]"):
            ICDriver(nets[0], models, {"calorimeter": image}, defensive=eps, mix=(nets[1], 0.8))
        driver = ICDriver(
            nets[0], models, {"calorimeter": image}, seed=3, defensive=eps, mix=(nets[1], share)
        )
        batch, mixed = driver.run(n)
    finally:
        for m in models:
            m.close()
    # Binomial(60, 0.3) each: 18 +- 4 standard errors (3.5).
    assert 4 <= driver.stats.prior_traces <= 32, driver.stats.prior_traces
    assert 4 <= driver.stats.mix_traces <= 32, driver.stats.mix_traces
    # In the batch's order, like `mixed`.
    source = np.array([k for s in driver.slots for k in s.sources])
    assert (source == PRIOR).sum() == driver.stats.prior_traces and (
        source == 1
    ).sum() == driver.stats.mix_traces
    recorded = [m for s in driver.slots for m in s.log_qs]
    rows = kept_controlled_rows(batch)
    log_p = np.zeros(n)
    np.add.at(log_p, batch.row_trace[rows], batch.log_prob()[rows])
    f = batch.flags
    loop = (batch.kind == SAMPLE) & ((f & FLAG_REPLACE) != 0) & ((f & FLAG_CONTROLLED) != 0)
    kept_loop = rows[(f[rows] & FLAG_REPLACE) != 0]
    repeated = np.bincount(batch.row_trace[loop], minlength=n) > np.bincount(
        batch.row_trace[kept_loop], minlength=n
    )
    parts, perm, starts = split_by_type(batch)
    checked: list[int] = []
    after_repeated_loop = 0
    with torch.no_grad():
        for k, g in enumerate(parts):
            sites = g.layout.sites
            if any(s.key not in nets[0].sites for s in sites):
                continue  # an address the network was not built with: drawn from the prior, q = p
            traces = perm[starts[k] : starts[k + 1]]
            once = ~repeated[traces]
            ratios = []
            for which, net in enumerate(nets):
                site_log_q = net.site_log_q(
                    g.layout,
                    torch.from_numpy(g.values).float(),
                    torch.from_numpy(g.params).float(),
                    driver.proposers[which].obs_embedding.expand(len(g), -1),
                ).double()
                for j, t in enumerate(traces.tolist()):
                    for si, site in enumerate(sites):
                        first_of_loop = si == 0 or not sites[si - 1].replace
                        if repeated[t] and site.replace and not first_of_loop:
                            continue
                        got, want = recorded[t][which][site.key], float(site_log_q[si, j])
                        assert got == pytest.approx(want, rel=1e-5, abs=2e-4), (which, t, si, site, source[t])
                        after_repeated_loop += bool(
                            repeated[t] and not site.replace and si and sites[si - 1].replace
                        )
                ratios.append(site_log_q.sum(0).numpy() - log_p[traces])
                np.testing.assert_allclose(
                    driver.log_q_ratios[which][traces][once], ratios[-1][once], rtol=1e-5, atol=2e-4
                )
            want_mixed = mixture_log_ratio(ratios, [1 - eps - share, share], eps)
            np.testing.assert_allclose(mixed[traces][once], want_mixed[once], rtol=1e-5, atol=2e-4)
            checked += traces.tolist()
    # Every kind of trace was compared, and draws right after a loop that ran more than once.
    for kind in (0, 1, PRIOR):
        assert (source[checked] == kind).sum() >= 4, (kind, source[checked])
    assert after_repeated_loop >= 5, after_repeated_loop
    # The mixture bounds every weight: Q/p is at least eps, and at least share * q'/p.
    assert np.all(mixed >= math.log(eps) - 1e-9)
    assert np.all(mixed >= math.log(share) + driver.log_q_ratios[1] - 1e-9)


def test_defensive_ic_cli_matches_the_exact_posterior_and_bounds_the_weights(gum_quick_checkpoint, tmp_path):
    """`probexec posterior --engine ic --defensive 0.3` over two driver processes: the share of
    prior traces is what was asked, the posterior is GUM's exact one, and no log weight exceeds
    its log-likelihood - log 0.3. `--defensive` with another engine, or outside [0, 1], is refused
    before anything starts."""
    from probexec.trace import TraceBatch

    path, _ = gum_quick_checkpoint
    n, eps, out = 3000, 0.3, tmp_path / "post"
    r = cli(
        "posterior", "gum", "--engine", "ic", "--network", str(path), "--processes", "2", "--workers", "6",
        "--defensive", str(eps), "-n", str(n), "--seed", "2", "-o", str(out), "--json", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["defensive"] == eps and summary["num_traces"] == n
    se = math.sqrt(n * eps * (1 - eps))
    assert abs(summary["prior_traces"] - n * eps) <= 4 * se, summary["prior_traces"]
    with np.load(out / "posterior.npz") as f:
        log_w, mu = f["log_weights"], f["latent/mu"]
    w = np.exp(log_w - log_w.max())
    mean, std = _gum_exact([8.0, 9.0])
    se_mean, se_std = weighted_moment_errors(mu, w)
    post_mean = float(np.sum(w * mu) / w.sum())
    assert_close(post_mean, mean, se_mean, "defensive IC mu mean")
    assert_close(
        float(np.sqrt(np.sum(w * (mu - post_mean) ** 2) / w.sum())), std, se_std, "defensive IC mu std"
    )
    assert summary["ess"] / n >= 0.3, summary["ess"]
    # The evidence estimate holds only if every trace is weighted against the normalised mixture.
    n_over_ess = n / summary["ess"]
    assert_close(
        summary["log_evidence"], gum_log_evidence([8.0, 9.0]), math.sqrt((n_over_ess - 1) / n), "log p(y)"
    )
    log_lik = TraceBatch.load(out / "traces.npz").log_likelihood()
    assert np.all(log_w <= log_lik - math.log(eps) + 1e-9)
    for bad, message in ((["--engine", "is", "--defensive", "0.3"], "--engine ic"),
                         (["--engine", "ic", "--network", str(path), "--defensive", "1.5"], r"\[0, 1\]")):  # fmt: skip
        r = cli("posterior", "gum", *bad, "-n", "10", "-o", str(tmp_path / "bad"))
        assert r.returncode != 0 and re.search(message, r.stderr), r.stderr
        assert not (tmp_path / "bad").exists()


@pytest.fixture(scope="module")
def gum_weak_checkpoint(gum_data, tmp_path_factory):
    """A GUM network after two optimizer steps: its proposal is far from the posterior (IC's
    ESS/N about 0.01), the case that adapting to the event is for."""
    path = tmp_path_factory.mktemp("gum_weak") / "gum.pt"
    torch.manual_seed(0)
    opts = TrainOptions(traces=200, batch_size=100, lr=1e-3, progress=False)
    return path, train("gum", dataset=gum_data, output=path, options=opts).network


def _gum_weighted_mu(post) -> tuple[np.ndarray, np.ndarray]:
    return post.traces.values_of("mu"), np.exp(post.log_weights - post.log_weights.max())


def _assert_gum_exact(mu: np.ndarray, w: np.ndarray, what: str) -> None:
    mean, std = _gum_exact([8.0, 9.0])
    se_mean, se_std = weighted_moment_errors(mu, w)
    post_mean = float(np.sum(w * mu) / w.sum())
    assert_close(post_mean, mean, se_mean, f"{what} mu mean")
    assert_close(float(np.sqrt(np.sum(w * (mu - post_mean) ** 2) / w.sum())), std, se_std, f"{what} mu std")


def test_tempering_exponent_keeps_the_fits_ess_at_the_share_asked():
    from probexec.inference.ic_adapt import tempering_exponent

    rng = np.random.default_rng(0)
    log_w = 20 * rng.standard_normal(500)  # a few traces hold all the weight
    beta = tempering_exponent(log_w, 0.1)
    assert 0 < beta < 1
    assert kish(beta * log_w) == pytest.approx(50, rel=1e-6)
    assert tempering_exponent(np.zeros(10), 0.5) == 1.0  # equal weights: nothing to temper
    assert tempering_exponent(log_w, 0.0) == 1.0


def kish(log_w: np.ndarray) -> float:
    w = np.exp(log_w - log_w.max())
    return float(w.sum() ** 2 / (w**2).sum())


def test_adapted_ic_recovers_a_weak_network_and_leaves_it_as_it_was(gum_weak_checkpoint):
    """`ic_posterior(..., adapt=...)`: three rounds of 200 traces, each followed by a fit of a copy
    of the network to the round's weighted traces. From a network whose plain IC has ESS/N about
    0.01 on obs [8, 9], the adapted run's ESS/N is above 0.5 and its posterior is GUM's exact one
    (the weights are against the q that drew each trace). The caller's network is unchanged, and
    each round is recorded."""
    from probexec.inference.ic_adapt import AdaptOptions

    _, net = gum_weak_checkpoint
    before = {k: v.clone() for k, v in net.state_dict().items()}
    obs = get_simulator("gum").default_observations
    opts = AdaptOptions(rounds=3, traces=200, steps=30, lr=1e-3)
    models = [RemoteModel("gum") for _ in range(8)]
    try:
        plain = ic_posterior(net, models, 1000, obs, seed=1)
        adapted = ic_posterior(net, models, 1000, obs, seed=1, adapt=opts)
        mixed = ic_posterior(net, models, 1000, obs, seed=1, adapt=dataclasses.replace(opts, mix=0.3))
    finally:
        for m in models:
            m.close()
    assert plain.ess / 1000 < 0.05, plain.ess
    assert adapted.ess / 1000 >= 0.5, adapted.ess
    assert adapted.num_traces == 1000  # the rounds' traces are not part of the posterior
    _assert_gum_exact(*_gum_weighted_mu(adapted), "adapted IC")
    # With 0.3 of the traces from the weak network as trained: Binomial(1000, 0.3), 300 +- 4
    # standard errors (14.5). Those traces add little weight, the others keep theirs, so ESS/N
    # stays near 0.7 of the adapted run's; the posterior is still the exact one.
    assert mixed.stats["mix"] == 0.3 and 242 <= mixed.stats["mix_traces"] <= 358, mixed.stats["mix_traces"]
    assert adapted.stats["mix_traces"] == 0
    assert mixed.ess / 1000 >= 0.4, mixed.ess
    _assert_gum_exact(*_gum_weighted_mu(mixed), "adapted IC mixed with the trained network")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    record = adapted.stats["adapt"]
    assert record["options"]["rounds"] == 3 and len(record["rounds"]) == 3
    for r in record["rounds"]:
        assert r["traces"] == 200 and r["loss_after"] < r["loss_before"], r
        assert 0 < r["beta"] <= 1 and r["weight_fitted"] > 0.9, r
    # The first round, from the weak network, is tempered; the last needs no tempering.
    assert record["rounds"][0]["beta"] < 1 and record["rounds"][-1]["ess"] > 10 * record["rounds"][0]["ess"]


def test_adapted_ic_cli_over_driver_processes_matches_the_exact_posterior(gum_weak_checkpoint, tmp_path):
    """`probexec posterior --engine ic --adapt 3` over two driver processes: the drivers run each
    round with the weights adapted so far and go back to the checkpoint's afterwards (a plain call
    on the same drivers after an adapted one is as weak as before). Bad adaptation settings are
    refused before anything starts."""
    from probexec.inference.ic_adapt import AdaptOptions
    from probexec.inference.ic_drivers import ICDrivers

    path, _ = gum_weak_checkpoint
    n, out = 1000, tmp_path / "post"
    r = cli(
        "posterior", "gum", "--engine", "ic", "--network", str(path), "--processes", "2", "--workers", "8",
        "--adapt", "3", "--adapt-traces", "200", "--adapt-steps", "30", "--adapt-lr", "1e-3",
        "--adapt-mix", "0.2", "-n", str(n), "--seed", "1", "-o", str(out), "--json", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_traces"] == n and len(summary["adapt"]["rounds"]) == 3
    assert summary["adapt"]["options"]["mix"] == 0.2
    # Binomial(1000, 0.2): 200 +- 4 standard errors (12.6); the drivers' counts add up.
    assert 149 <= summary["mix_traces"] <= 251, summary["mix_traces"]
    assert summary["ess"] / n >= 0.5, summary["ess"]
    with np.load(out / "posterior.npz") as f:
        log_w, mu = f["log_weights"], f["latent/mu"]
    _assert_gum_exact(mu, np.exp(log_w - log_w.max()), "adapted IC over drivers")

    obs = get_simulator("gum").default_observations
    with ICDrivers(path, "gum", processes=2, in_flight=4) as drivers:
        first = drivers.posterior(400, obs, seed=5)
        drivers.posterior(400, obs, seed=6, adapt=AdaptOptions(rounds=1, traces=200, steps=30, lr=1e-3))
        again = drivers.posterior(400, obs, seed=5)
    np.testing.assert_array_equal(first.log_weights, again.log_weights)

    for bad, message in (
        (["--engine", "is", "--adapt", "2"], "--engine ic"),
        (["--engine", "ic", "--network", str(path), "--adapt", "2", "--adapt-lr", "0"], "lr"),
        (["--engine", "ic", "--network", str(path), "--adapt", "2", "--adapt-ess-share", "2"], "ess_share"),
        (["--engine", "ic", "--network", str(path), "--adapt", "2", "--adapt-traces", "0"], "traces"),
        (["--engine", "ic", "--network", str(path), "--adapt", "2", "--adapt-mix", "1.5"], "mix"),
        (
            [
                "--engine",
                "ic",
                "--network",
                str(path),
                "--adapt",
                "2",
                "--adapt-mix",
                "0.6",
                "--defensive",
                "0.5",
            ],
            r"--adapt-mix .* \[0, 0.5\]",
        ),
    ):
        r = cli("posterior", "gum", *bad, "-n", "10", "-o", str(tmp_path / "bad"))
        assert r.returncode != 0 and re.search(message, r.stderr), r.stderr
        assert not (tmp_path / "bad").exists()


# --- stratified IC ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def branching_checkpoint(tmp_path_factory):
    """A branching network (r ~ Poisson(4); s ~ Poisson(4) only when r <= 4), trained briefly."""
    d = tmp_path_factory.mktemp("branching_quick")
    ds = make_dataset(d / "data", "branching", 3000)
    opts = TrainOptions(epochs=2, batch_size=128, lr=3e-3, cosine=True, progress=False)
    return d / "b.pt", train("branching", dataset=ds, output=d / "b.pt", options=opts).network


def test_ic_steps_through_a_latent_observed_by_name(branching_checkpoint):
    """With r observed by name, the network steps through r with its given value, as through a
    draw of its own in training, so that its proposal for s is conditioned on it: the driver's
    log q of each s is the training path's on the layout [r, s]. The given r is recorded as
    observed (its prior density is likelihood) and its log q does not enter the weight."""
    from probexec.data.layout import split_by_type
    from probexec.inference.ic import ICDriver
    from probexec.trace import FLAG_OBSERVED

    _, net = branching_checkpoint
    net.eval()
    n = 40
    models = [RemoteModel("branching") for _ in range(4)]
    try:
        driver = ICDriver(net, models, {"obs": [6.0], "r": [2.0]}, seed=4)
        batch, q_minus_p = driver.run(n)
    finally:
        for m in models:
            m.close()
    assert driver.stats.given_steps == n and driver.stats.prior_fallbacks == 0
    r_rows = np.nonzero(np.isin(batch.address_id, np.array(batch.addresses.ids_named("r"), dtype=np.uint64)))[
        0
    ]
    assert len(r_rows) == n and np.all(batch.flags[r_rows] & FLAG_OBSERVED)
    np.testing.assert_array_equal(batch.values_of("r"), 2.0)
    # The training path over [r, s]: the same rows with r's observed flag taken off.
    unflagged = dataclasses.replace(batch, flags=batch.flags & ~np.uint8(FLAG_OBSERVED))
    groups, perm, starts = split_by_type(unflagged)
    assert len(groups) == 1 and [s.name for s in groups[0].layout.sites] == ["r", "s"]
    g = groups[0]
    with torch.no_grad():
        site_log_q = net.site_log_q(
            g.layout,
            torch.from_numpy(g.values).float(),
            torch.from_numpy(g.params).float(),
            driver.proposers[0].obs_embedding.expand(len(g), -1),
        ).double()
    recorded = [m[0] for s in driver.slots for m in s.log_qs]
    s_key, r_key = g.layout.sites[1].key, g.layout.sites[0].key
    lp = batch.log_prob()
    s_rows = np.nonzero(np.isin(batch.address_id, np.array(batch.addresses.ids_named("s"), dtype=np.uint64)))[
        0
    ]
    for j, t in enumerate(perm[starts[0] : starts[1]].tolist()):
        assert recorded[t][r_key] == pytest.approx(float(site_log_q[0, j]), abs=1e-4)  # scored, not drawn
        assert recorded[t][s_key] == pytest.approx(float(site_log_q[1, j]), abs=1e-4)
        # The weight's log q/p: s alone.
        want = recorded[t][s_key] - lp[s_rows[batch.row_trace[s_rows] == t][0]]
        assert q_minus_p[t] == pytest.approx(want, abs=1e-9)


def test_stratified_ic_matches_enumeration(branching_checkpoint):
    """IC once per value of r, `-n` traces each, weighted by each run's evidence p(obs, r): each
    value's evidence and the posterior of r are the exact ones. For r > 4 nothing is left to
    propose, so the weights are equal and the evidence is exact."""
    from probexec.inference.ic import stratified_ic
    from probexec.inference.ic_adapt import AdaptOptions

    _, net = branching_checkpoint
    exact = branching_exact()
    n = 400
    models = [RemoteModel("branching") for _ in range(8)]
    try:
        post = stratified_ic(net, models, n, {"obs": [6.0]}, "r", values=list(range(13)), seed=5)
        with pytest.raises(ValueError, match="'obs' is observed"):
            stratified_ic(net, models, 10, {"obs": [6.0]}, "obs", values=[1.0])
        with pytest.raises(ValueError, match="not done per stratum"):
            stratified_ic(net, models, 10, {"obs": [6.0]}, "r", values=[1.0], adapt=AdaptOptions())
    finally:
        for m in models:
            m.close()
    strata = [post.stats["strata"][f"{r:g}"] for r in range(13)]
    assert post.engine == "ic" and post.num_traces == 13 * n
    joint = branching_exact(joint=True)[:13]
    exact = joint / joint.sum()  # P(r | obs) among the values run
    # For importance sampling, a value's evidence estimate has the relative error
    # e = sqrt((N / ESS - 1) / N); exact where nothing is proposed (r > 4: ESS = N).
    e = np.array([math.sqrt(max(n / max(s["ess"], 1.0) - 1.0, 0.0) / n) for s in strata])
    probs = post["r"].probabilities()
    assert sum(s["probability"] for s in strata) == pytest.approx(1.0)
    for r, s in enumerate(strata):
        assert probs.get(r, 0.0) == pytest.approx(s["probability"], abs=1e-12)
        if joint[r] < 1e-12:  # r = 3, 4: obs = 6 needs s far out in Poisson(4)'s tail
            continue
        if r > 4:
            assert s["ess"] == pytest.approx(n)
        assert abs(math.exp(s["log_evidence"]) / joint[r] - 1) <= 4 * e[r] + 1e-9, (r, s, joint[r])
        # P(r) = Z_r / sum Z: its relative error is at most e_r plus the sum's.
        tol = 4 * exact[r] * (e[r] + float(np.sum(exact * e))) + 1e-9
        assert abs(probs.get(r, 0.0) - exact[r]) <= tol, (r, probs.get(r), exact[r])


def test_stratify_on_the_command_line_for_ic_and_is(branching_checkpoint, tmp_path):
    """`probexec posterior --stratify NAME=V,...` with --engine ic (over two driver processes)
    and is: -n traces per value, each value's probability in the summary, and the values with
    nothing left to propose (r > 4) in the ratio of their exact evidence. RMH, which has no
    evidence to weigh runs by, and --adapt per stratum are refused before anything starts.
    IC runs with a pilot (`--stratify-pilot`): 20 traces a value, the rest by the pilot's P(r)."""
    path, _ = branching_checkpoint
    joint = branching_exact(joint=True)
    for engine in (
        [
            "--engine",
            "ic",
            "--network",
            str(path),
            "--processes",
            "2",
            "--workers",
            "4",
            "--stratify-pilot",
            "20",
        ],
        ["--engine", "is"],
    ):
        out = tmp_path / engine[1]
        r = cli(
            "posterior", "branching", *engine, "-n", "100", "--stratify", "r=1,5,6", "--observe", "obs=6",
            "--seed", "2", "-o", str(out), "--json", "--quiet",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)
        assert summary["engine"] == engine[1] and summary["num_traces"] == 300
        assert summary["stratum"] == "r" and set(summary["strata"]) == {"1", "5", "6"}
        p = {k: v["probability"] for k, v in summary["strata"].items()}
        assert p["5"] / p["6"] == pytest.approx(joint[5] / joint[6], rel=1e-9)
        assert 0 < p["1"] < 1
        traces = {k: v["traces"] for k, v in summary["strata"].items()}
        if engine[1] == "ic":  # r = 5 (half the posterior) gets more than its 100, r = 1 fewer
            assert summary["pilot"] == 20 and sum(traces.values()) == 300
            assert traces["5"] > 100 > traces["1"] >= 20, traces
        else:
            assert traces == {"1": 100, "5": 100, "6": 100}
    for bad, message in (
        (["--engine", "rmh"], "rmh does not estimate"),
        (["--engine", "ic", "--network", str(path), "--adapt", "2"], "not done per stratum"),
        (["--engine", "is", "--stratify", "r=1,x"], "cannot read"),
        (["--engine", "rmh", "--stratify-pilot", "5"], "use it with --engine is, ic, smc"),
        (["--engine", "is", "--stratify-keep", "5"], "give --stratify-pilot too"),
        (["--engine", "is", "--stratify-pilot", "5", "--stratify-keep", "-1"], "0 or more"),
        (["--engine", "is", "--stratify-pilot", "10"], "between 1 and -n (10) - 1"),
        (["--engine", "is", "--stratify-pilot", "5", "--stratify", ""], "give --stratify too"),
    ):
        args = ["--stratify", "r=1,5"] if "--stratify" not in bad else []
        r = cli(
            "posterior",
            "branching",
            *bad,
            *args,
            "-n",
            "10",
            "--observe",
            "obs=6",
            "-o",
            str(tmp_path / "bad"),
        )
        assert r.returncode != 0 and message in r.stderr, r.stderr
        assert not (tmp_path / "bad").exists()
