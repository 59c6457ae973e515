"""Tags sent with the simulator's next message (capability "local_tags") instead of one round
trip each: the same traces, fewer requests, and engines that do not announce it keep replies."""

from __future__ import annotations

import numpy as np
import pytest

import probexec
from probexec import remote
from probexec.trace import TraceBatch

TAG = 2


def _traces_and_replies(
    sim: str, local_tags: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[TraceBatch, int]:
    """Per-draw prior traces of `sim`, and how many replies the engine decoded for them."""
    with probexec.RemoteModel(sim, local_tags=local_tags) as model:
        assert "local_tags" in model.capabilities  # what this front end offers either way
        replies = 0
        decode = remote._core.decode

        def counting(raw: bytes) -> tuple:
            nonlocal replies
            replies += 1
            return decode(raw)

        monkeypatch.setattr(remote._core, "decode", counting)
        try:
            batch = model.prior(40, mode="per_draw", seed=5)
        finally:
            monkeypatch.undo()
    return batch, replies


@pytest.mark.parametrize("sim", ["gum_marsaglia", "kitchen_sink"])
def test_local_tags_give_the_same_traces_with_one_request_less_per_tag(
    sim: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    replied, n_replied = _traces_and_replies(sim, False, monkeypatch)
    local, n_local = _traces_and_replies(sim, True, monkeypatch)
    tags = int(np.count_nonzero(replied.kind == TAG))
    assert tags >= replied.num_traces  # every trace tags at least once
    for column in ("address_id", "instance", "kind", "flags", "trace_offsets", "value_offsets", "values"):
        np.testing.assert_array_equal(getattr(local, column), getattr(replied, column), err_msg=column)
    # Equal rows in equal order: each tag sits where it was made, between the draws around it.
    name = "mu" if sim == "gum_marsaglia" else "noise_sum"
    assert np.isfinite(local.values_of(name)).all()
    assert n_replied - n_local == tags
