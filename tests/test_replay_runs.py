"""Replay runs (`Run{mode: Replay}`): one trace whose controlled draws reuse the engine's values,
answered whole. MCMC steps use them instead of a round trip per draw, so they must give the very
trace the per-draw path gives, and fall back to it where they cannot."""

from __future__ import annotations

import flatbuffers
import numpy as np
import pytest
from probexec.protocol.generated import DrawBatch, Message, MessageBody, Run, RunMode

import probexec
import probexec.remote as remote_module
from probexec import _core
from probexec.inference import remote_pool, rmh
from probexec.inference.rmh import Replay, _Chain, _state_of
from probexec.protocol.messages import MessageType
from probexec.trace import FLAG_CONTROLLED, FLAG_OBSERVED, SAMPLE

OBS = {"obs": [8.0, 9.0]}


def controlled_values(batch) -> dict[tuple[int, int], float]:
    rows = np.nonzero((batch.kind == SAMPLE) & ((batch.flags & FLAG_CONTROLLED) != 0))[0]
    return {
        (int(batch.address_id[r]), int(batch.instance[r])): float(batch.values[batch.value_offsets[r]])
        for r in rows
    }


def test_given_values_are_used_and_the_others_drawn_from_the_prior():
    with probexec.RemoteModel("branching") as model:  # s is drawn only when r <= 4
        assert model.supports_replay
        first = model.replay({}, seed=1)  # nothing given: a prior trace
        assert first.errors == [""] and len(controlled_values(first)) >= 1
        r = (model.addresses.ids_named("r", SAMPLE)[0], 1)
        low = controlled_values(model.replay({r: 2.0}, seed=5))
        assert low[r] == 2.0 and len(low) == 2  # s: a fresh prior draw
        s = next(k for k in low if k != r)
        assert controlled_values(model.replay(low, seed=6)) == low  # all replayed, whatever the seed
        assert controlled_values(model.replay({**low, r: 6.0}, seed=6)) == {r: 6.0}  # s not reached
        fresh = [controlled_values(model.replay({r: 2.0}, seed=k))[s] for k in range(40)]
        assert len(set(fresh)) > 5 and all(v >= 0 and v == int(v) for v in fresh)  # Poisson(4) draws
        # A key the trace never reaches is ignored.
        assert controlled_values(model.replay({**low, (12345, 1): 1.0}, seed=2)) == low


def test_observations_the_engine_conditions_on_come_back_as_nan():
    with probexec.RemoteModel("gum") as model:
        simulated = model.replay({}, seed=4)
        assert np.isfinite(simulated.values_of("obs")).all()  # not conditioned: simulated
        mu_id = model.addresses.ids_named("mu", SAMPLE)[0]
        held = model.replay({(mu_id, 1): 7.0}, seed=4, observed={"obs": [1.0, 2.0]})
        assert np.isnan(held.values_of("obs")).all()
        assert held.values_of("mu").tolist() == [7.0]
        held.condition(OBS)
        np.testing.assert_allclose(held.values_of("obs"), [[8.0, 9.0]])


def test_a_value_of_the_wrong_size_and_a_model_error_are_named():
    with probexec.RemoteModel("gum") as model:
        model.replay({}, seed=0)
        mu_id = model.addresses.ids_named("mu", SAMPLE)[0]
        with pytest.raises(probexec.SimulatorError, match="engine sent 3 values for a draw of 1"):
            model.replay({(mu_id, 1): np.array([1.0, 2.0, 3.0])}, seed=0)
        assert model.replay({(mu_id, 1): 2.0}, seed=0).values_of("mu").tolist() == [2.0]  # still serving
    with probexec.RemoteModel("faulty") as model:
        model.replay({}, seed=0)
        x_id = model.addresses.ids_named("x", SAMPLE)[0]
        with pytest.raises(probexec.SimulatorError, match="beyond the detector acceptance"):
            model.replay({(x_id, 1): 0.95}, seed=0)
        assert model.replay({(x_id, 1): 0.5}, seed=0).values_of("x").tolist() == [0.5]


def test_a_malformed_replay_table_is_refused_and_the_server_goes_on():
    with probexec.RemoteModel("gum") as model:
        b = flatbuffers.Builder(256)
        ids = b.CreateNumpyVector(np.array([1, 2], dtype=np.uint64))
        inst = b.CreateNumpyVector(np.array([1], dtype=np.uint32))  # one instance for two ids
        offsets = b.CreateNumpyVector(np.array([0, 1, 2], dtype=np.uint32))
        values = b.CreateNumpyVector(np.array([1.0, 2.0]))
        DrawBatch.Start(b)
        DrawBatch.AddAddressId(b, ids)
        DrawBatch.AddInstance(b, inst)
        DrawBatch.AddValueOffsets(b, offsets)
        DrawBatch.AddValues(b, values)
        rows = DrawBatch.End(b)
        Run.Start(b)
        Run.AddMode(b, RunMode.RunMode.Replay)
        Run.AddReplay(b, rows)
        run = Run.End(b)
        Message.Start(b)
        Message.AddBodyType(b, MessageBody.MessageBody.Run)
        Message.AddBody(b, run)
        b.Finish(Message.End(b))
        reply = model._request(bytes(b.Output()))
        assert reply[0] == MessageType.ERROR and "replay rows" in reply[1]
        assert model.replay({}, seed=0).num_traces == 1
    with pytest.raises(probexec.ProbexecError, match="one more value offset"):
        _core.encode_replay_run(
            0,
            False,
            np.array([1], np.uint64),
            np.array([1], np.uint32),
            np.array([0], np.uint32),
            np.zeros(1),
            [],
            [],
        )


@pytest.mark.parametrize("sim", ["hmm", "tau_decay_coarse"])
def test_a_replayed_trace_is_the_per_draw_trace(sim):
    """With every controlled value given and the same seed, both paths make the same uncontrolled
    draws, so the traces and their densities agree (on tau: the image's likelihood too)."""
    with probexec.RemoteModel(sim) as model:
        event = model.stream(1, seed=11)
        observe = {"calorimeter": event.values_of("calorimeter")[0]} if sim != "hmm" else {}
        if sim == "hmm":
            observe = dict(probexec.get_simulator("hmm").default_observations)
        chain = _Chain(model, observe, np.random.default_rng(0), 0.5)
        state = chain.init()
        values = state.values
        replayed = _state_of(chain._run(Replay(values)))
        chain.one_message = False
        per_draw = _state_of(chain._run(Replay(values)))
    assert replayed.values.keys() == per_draw.values.keys() == values.keys()
    for k, v in values.items():
        np.testing.assert_array_equal(replayed.values[k], v)
        np.testing.assert_array_equal(per_draw.values[k], v)
    assert np.isfinite(replayed.log_joint)
    assert replayed.log_lik == pytest.approx(per_draw.log_lik, rel=1e-12, abs=1e-9)
    assert replayed.log_joint == pytest.approx(per_draw.log_joint, rel=1e-12, abs=1e-9)


def test_rmh_steps_are_one_exchange_each():
    with probexec.RemoteModel("gum") as model:

        def no_per_draw(*_args, **_kwargs):
            raise AssertionError("a per-draw run in an MCMC step")

        model.run_trace = no_per_draw  # type: ignore[method-assign]
        before = model.traces_run
        post = rmh(model, 300, OBS, chains=1, burn_in=0, seed=1, progress=False)
        assert post.num_traces == 300
        assert model.traces_run - before >= 300  # every step ran the simulator, by replay


def test_an_observed_sample_is_fixed_by_the_simulator(monkeypatch):
    """Stratified SMC observes a named sample (the channel): the replay run fixes it by name and
    flags it, and its density joins the likelihood as in the per-draw path."""
    obs = {"obs": [8.0, 9.0], "mu": 7.0}
    with probexec.RemoteModel("gum") as model:
        chain = _Chain(model, obs, np.random.default_rng(0), 0.5)
        state = chain.init()
        assert chain.one_message and not state.values  # mu is observed: nothing left to move
        post = rmh(model, 200, obs, chains=1, seed=2, progress=False)
        assert (post.traces.values_of("mu") == 7.0).all()
        replayed = chain._run(Replay({}))
        chain.one_message = False
        per_draw = chain._run(Replay({}))
        assert (replayed.flags & FLAG_OBSERVED).any()
        np.testing.assert_allclose(replayed.log_likelihood(), per_draw.log_likelihood(), rtol=1e-12)
        np.testing.assert_allclose(replayed.log_prior(), per_draw.log_prior(), atol=1e-12)
        # A value the engine does not send (too big, here by a lowered limit) leaves the sample
        # unfixed: the chain sees that and goes draw by draw, with the same answer.
        monkeypatch.setattr(remote_module, "_SENT_OBSERVATION_VALUES", 0)
        chain = _Chain(model, obs, np.random.default_rng(0), 0.5)
        state = chain.init()
        assert not chain.one_message and not state.values
        assert state.log_lik == pytest.approx(_state_of(per_draw).log_lik, rel=1e-12)
        # One of the wrong size is refused by the per-draw path, naming the observation.
        with pytest.raises(probexec.ObservationError, match="'mu' has 2 value"):
            _Chain(model, {"mu": [1.0, 2.0]}, np.random.default_rng(0), 0.5).init()


def test_per_draw_mcmc_still_matches_enumeration():
    """The per-draw path (simulators without replay runs) keeps its exact answer on the model whose
    trace structure changes with r."""
    from test_posterior import branching_exact, check_discrete

    with remote_pool("branching", workers=2, replay_runs=False) as pool:
        assert not pool.models[0].supports_replay
        post = rmh(pool, 8_000, {"obs": [6.0]}, chains=4, burn_in=500, seed=8, latents=["r"], progress=False)
    check_discrete(post, "r", branching_exact(), post.ess)
