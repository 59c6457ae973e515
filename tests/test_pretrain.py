"""Pretraining the observation embedding on the traces' own latents (`probexec.nn.pretrain`):
what it learns on models whose observations say a known amount about a latent, masking of
latents some trace types lack, and how `train` and the CLI run it once, for a new network."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch

from probexec.data import TraceDataset
from probexec.nn import TrainOptions, load_checkpoint, train
from probexec.nn.pretrain import (
    BINARY,
    CLASS,
    REGRESS,
    PretrainError,
    PretrainReport,
    gather_pool,
    pretrain_embedding,
)
from probexec.nn.training import build_network
from test_ic import BIN, cli, make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    return {sim: make_dataset(root / sim, sim, 4000) for sim in ("gum", "hmm", "branching", "kitchen_sink")}


def fresh(ds: TraceDataset):
    torch.manual_seed(0)
    return build_network(ds.simulator, list(ds.iter_groups()), [t.layout for t in ds.trace_types().values()])


def test_gum_embedding_learns_what_the_observations_say_about_mu(data):
    """GUM: mu ~ N(1, 5), two observations N(mu, 2): the posterior variance is 1/(1/5 + 2/2) of
    a prior 5, so the best regression leaves 1/6 of mu's variance. Only the embedding and the
    head move; the LSTM and the proposal heads are IC training's."""
    net = fresh(data["gum"])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    report = pretrain_embedding(net, data["gum"].iter_groups(), steps=200, progress=False)
    (mu,) = report.latents
    assert (mu.name, mu.kind, mu.traces) == ("mu", REGRESS, 400)
    # The baseline is the held-out variance in units of the pool's: 1 within 4 standard errors.
    assert abs(mu.baseline - 1) < 4 * np.sqrt(2 / mu.traces)
    assert mu.loss / mu.baseline < 0.3, mu  # 1/6 at the optimum
    after = net.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(("obs_embeddings.", "obs_combine.")) for k in moved), moved
    assert any(k.startswith("obs_embeddings.") for k in moved)


def test_hmm_states_are_read_from_their_own_observations(data):
    """HMM: state t (t >= 1) emits obs_t; state 0 emits nothing. Cross-entropy against the state
    frequencies must drop for the observed states and not for state 0."""
    net = fresh(data["hmm"])
    report = pretrain_embedding(net, data["hmm"].iter_groups(), steps=200, progress=False)
    by = {s.name: s for s in report.latents}
    assert set(by) == {f"state_{t}" for t in range(17)}
    assert all(s.kind == CLASS for s in report.latents)
    # The frequency baseline is near log 3 for a three-state chain.
    assert all(0.7 < s.baseline < np.log(3) + 0.05 for s in report.latents)
    gains = np.array([by[f"state_{t}"].gain for t in range(1, 17)])
    se = gains.std(ddof=1) / np.sqrt(len(gains))
    assert gains.mean() > 4 * se, gains
    assert abs(by["state_0"].gain) < gains.mean(), (by["state_0"], gains.mean())


def test_a_latent_some_trace_types_lack_is_masked_in_them(data):
    """branching: s is drawn only when r <= 4. By default only latents every trace draws are
    taken; named, s is scored on the traces that drew it."""
    ds = data["branching"]
    names = [s.name for s in fresh(ds).config.observations]
    pool = gather_pool(ds.iter_groups(), names, None, 4000)
    assert [t.name for t in pool.targets] == ["r"]
    pool = gather_pool(ds.iter_groups(), names, ["r", "s"], 4000)
    r, s = pool.values
    assert pool.present[0].all()
    np.testing.assert_array_equal(pool.present[1], r[:, 0] <= 4)
    assert np.all(s[~pool.present[1]] == 0)
    report = pretrain_embedding(fresh(ds), ds.iter_groups(), steps=20, latents=["r", "s"], progress=False)
    by = {x.name: x for x in report.latents}
    assert by["s"].traces < by["r"].traces == report.held_out
    assert all(np.isfinite(x.loss) for x in report.latents)


def test_every_prior_type_gets_a_loss_of_its_kind(data):
    ds = data["kitchen_sink"]
    net = fresh(ds)
    pool = gather_pool(ds.iter_groups(), [s.name for s in net.config.observations], None, 1000)
    kinds = {t.name: (t.kind, t.size, t.classes) for t in pool.targets}
    assert kinds["categorical"] == (CLASS, 1, 3)
    assert kinds["bernoulli"] == (BINARY, 1, 0)
    assert kinds["vector"] == (REGRESS, 3, 0)
    assert kinds["poisson"][0] == kinds["gamma"][0] == REGRESS
    assert "noise" not in kinds  # uncontrolled draws are not the network's
    report = pretrain_embedding(net, ds.iter_groups(), steps=5, traces=1000, progress=False)
    assert all(np.isfinite(s.loss) and np.isfinite(s.baseline) for s in report.latents)


def test_unknown_latent_names_the_ones_there_are(data):
    ds = data["gum"]
    with pytest.raises(PretrainError, match=r"'nope'.*named ones: mu"):
        pretrain_embedding(fresh(ds), ds.iter_groups(), steps=1, latents=["nope"], progress=False)


def test_train_pretrains_a_new_network_once_and_the_cli_reports_it(data, tmp_path, monkeypatch):
    ds = data["gum"]
    net = tmp_path / "gum.pt"
    r = cli(
        "train", "gum", "--data", str(ds.path), "-o", str(net), "--traces", "640", "--threads", "1",
        "--pretrain-embedding", "100", "--pretrain-latents", "mu", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    # With progress shown, --json still leaves stdout one JSON object: the report goes to stderr.
    summary = json.loads(r.stdout)
    assert "pretrained the observation embedding (100 steps" in r.stderr
    assert [s["name"] for s in summary["pretrain"]["latents"]] == ["mu"]
    assert summary["pretrain"]["steps"] == 100
    assert PretrainReport.from_dict(summary["pretrain"]).to_dict() == summary["pretrain"]
    _, blob = load_checkpoint(net)
    assert blob["train_state"]["pretrain"] == summary["pretrain"]

    def refuse(*a, **k):
        raise AssertionError("pretraining ran again on resume")

    monkeypatch.setattr("probexec.nn.training.pretrain_embedding", refuse)
    opts = TrainOptions(traces=1280, pretrain_steps=100, threads=1, progress=False)
    res = train("gum", dataset=ds, output=net, options=opts, resume=True)
    assert res.traces == 1280 and res.pretrain == summary["pretrain"]
    with pytest.raises(ValueError, match="pretrain_embedding"):
        train("gum", dataset=ds, options=opts, network=res.network)


def test_online_training_pretrains_on_fresh_simulator_traces(tmp_path):
    net = tmp_path / "gum.pt"
    r = cli(
        "train", "gum", "-o", str(net), "--traces", "640", "--workers", "1", "--threads", "1",
        "--pretrain-embedding", "100", "--pretrain-traces", "1000", "--json", "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["traces"] == 640
    (mu,) = summary["pretrain"]["latents"]
    assert summary["pretrain"]["traces"] == 1000 and mu["name"] == "mu" and mu["traces"] == 100
    assert mu["loss"] < mu["baseline"]


def test_torchrun_pretrains_on_rank_0_as_one_process_would(data, tmp_path):
    """Two ranks: rank 0 pretrains (the others wait), every rank starts IC training from its
    network, and the pretraining is the one a single process makes from the same seed and data."""
    ds = data["gum"]
    args = ["train", "gum", "--data", str(ds.path), "--traces", "640", "--threads", "1",
            "--pretrain-embedding", "50", "--json", "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "probexec"]
    r = subprocess.run(
        [*launch, *args, "-o", str(tmp_path / "two.pt")], capture_output=True, text=True, timeout=300, env=env
    )
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads(r.stdout.splitlines()[-1])
    one = cli(*args, "-o", str(tmp_path / "one.pt"))
    assert one.returncode == 0, one.stderr
    a, b = two["pretrain"], json.loads(one.stdout.splitlines()[-1])["pretrain"]
    assert two["world_size"] == 2
    # The same pool, split and steps. The network it starts from is not bit-identical: each
    # rank standardises observations on its own shard's first batches before rank 0's state is
    # broadcast, so the losses agree to a few percent, not exactly.
    assert (a["traces"], a["held_out"], a["steps"]) == (b["traces"], b["held_out"], b["steps"])
    (ma,), (mb,) = a["latents"], b["latents"]
    assert ma["baseline"] == mb["baseline"]
    assert abs(ma["loss"] - mb["loss"]) < 0.05 * mb["loss"], (ma, mb)


def test_calorimeter_images_drawn_on_the_device_or_on_the_host(tmp_path):
    """The tau image is stored as its sparse Normal mean and stddev; pretraining draws it with
    NumPy, or (as on CUDA) on the network's device. Both give images of that Normal."""
    ds = make_dataset(tmp_path / "tau", "tau_decay_coarse", 60)
    names = ["channel", "px", "py"]
    first = {}
    for on_device in (False, True):
        net = fresh(ds)
        seen: list[torch.Tensor] = []
        original = net.embed_observations

        def spy(obs, original=original, seen=seen):
            seen.append(obs["calorimeter"].detach())
            return original(obs)

        net.embed_observations = spy  # type: ignore[method-assign]
        report = pretrain_embedding(
            net,
            ds.iter_groups(),
            steps=3,
            latents=names,
            batch_size=8,
            progress=False,
            draw_on_device=on_device,
        )
        assert [s.name for s in report.latents] == names
        assert all(np.isfinite(s.loss) for s in report.latents)
        x = seen[0]
        assert x.shape == (8, 20, 35, 35) and x.dtype == torch.float32
        # Per-voxel noise of 0.2 GeV around a mostly empty image: the spread says it was drawn.
        assert 0.15 < float(x.std()) < 5.0
        first[on_device] = x.reshape(8, -1)
    # The first minibatch holds the same traces both ways: each image's mean over its 24 500
    # voxels agrees to within the noise (0.2 / sqrt(24 500) = 0.0013 per image; 8 such).
    diff = (first[True].mean(1) - first[False].mean(1)).abs()
    assert float(diff.max()) < 8 * 0.2 / np.sqrt(24_500) * np.sqrt(2), diff


def test_a_nan_latent_stops_pretraining_with_a_message(data):
    ds = data["gum"]
    groups = list(ds.iter_groups())
    for g in groups:
        g.values = np.full_like(g.values, np.nan)
    with pytest.raises(PretrainError, match="pretraining loss is nan at step 0"):
        pretrain_embedding(fresh(ds), iter(groups), steps=5, progress=False)


def test_a_run_stopped_before_its_first_checkpoint_resumes_pretrained(data, tmp_path, monkeypatch):
    """The pretrained network is saved before IC training starts, so a run killed in its first
    steps (HPC preemption) resumes from it instead of pretraining again."""
    ds = data["gum"]
    net = tmp_path / "gum.pt"
    opts = TrainOptions(traces=640, pretrain_steps=100, threads=1, progress=False)

    def stop(step: int, loss: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("gum", dataset=ds, output=net, options=opts, on_step=stop)
    saved, blob = load_checkpoint(net)
    assert blob["train_state"]["step"] == 0 and blob["train_state"]["pretrain"]["steps"] == 100

    def refuse(*a, **k):
        raise AssertionError("pretraining ran again on resume")

    monkeypatch.setattr("probexec.nn.training.pretrain_embedding", refuse)
    res = train("gum", dataset=ds, output=net, options=opts, resume=True)
    assert res.traces == 640 and res.pretrain == blob["train_state"]["pretrain"]
    # It went on from the pretrained embedding: 10 IC steps later its weights are far nearer
    # the saved ones than the initial ones pretraining started from (seed 0, as `fresh`).
    init = fresh(ds).state_dict()
    keys = [k for k in init if k.startswith("obs_embeddings.") and k.endswith("weight")]
    end, pre = res.network.state_dict(), saved.state_dict()
    to_saved = sum(float((end[k] - pre[k]).norm()) for k in keys)
    to_init = sum(float((end[k] - init[k]).norm()) for k in keys)
    assert to_saved < 0.5 * to_init, (to_saved, to_init)
