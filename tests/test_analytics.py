"""Analytics of the test models: what the address table, trace types, lengths and the transition
graph must show follows from each model's code (simulators/testmodels/testmodels.cpp)."""

from __future__ import annotations

import math
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from probexec.analytics import analyse, open_source
from probexec.analytics.addresses import AddressStats
from probexec.analytics.graph import TransitionGraph
from probexec.analytics.location import locate, resolve_missing
from probexec.analytics.sources import Chunk, TraceSource, memory_source
from probexec.analytics.tracetypes import TraceTypeStats, compress
from probexec.simulators import get_simulator
from probexec.trace import AddressRecord

SOURCE = Path(__file__).resolve().parents[1] / "simulators" / "testmodels" / "testmodels.cpp"


def line_of(pattern: str) -> int:
    """The (single) line of testmodels.cpp matching `pattern`."""
    hits = [i for i, text in enumerate(SOURCE.read_text().splitlines(), start=1) if re.search(pattern, text)]
    assert len(hits) == 1, f"{pattern!r} matches lines {hits}"
    return hits[0]


def by_label(analysis) -> dict:
    return {s.label: s for s in analysis.addresses.by_id.values()}


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / n)


@pytest.fixture(scope="module")
def gum_analysis():
    import probexec

    with probexec.RemoteModel("gum") as m:
        batch = m.stream(20_000, seed=11)
    return analyse(memory_source(batch, "gum"), progress=False)


def test_gum_address_table_and_single_trace_type(gum_analysis):
    a = gum_analysis
    n = 20_000
    assert a.num_traces == n
    rows = {r["label"]: r for r in a.addresses.table()}
    assert list(rows) == ["mu", "obs"]  # in the order the code runs them
    mu, obs = rows["mu"], rows["obs"]
    assert (mu["kind"], mu["distribution"], mu["controlled"], mu["observed"]) == (
        "sample",
        "Normal",
        True,
        False,
    )
    assert (obs["kind"], obs["distribution"], obs["observed"], obs["value_size"]) == (
        "observe",
        "Normal",
        True,
        2,
    )
    for r in (mu, obs):
        assert r["count"] == n and r["per_trace"] == 1.0 and r["trace_fraction"] == 1.0
        assert r["function"] == "probexec::testmodels::gum()"
    # mu ~ N(1, sqrt 5): the value summary agrees within 4 standard errors.
    assert abs(mu["value_mean"] - 1.0) < 4 * math.sqrt(5 / n)
    assert abs(mu["value_std"] - math.sqrt(5)) < 4 * math.sqrt(5 / (2 * n))
    # file:line is the sample / observe call in the model's source.
    mu_line = line_of(r'sample\(Normal\(1\.0, kSqrt5\), "mu"\)')
    obs_line = line_of(r"^Tensor gum\(\)") + 2
    assert mu["file_line"].endswith(f"simulators/testmodels/testmodels.cpp:{mu_line}")
    assert obs["file_line"].endswith(f"simulators/testmodels/testmodels.cpp:{obs_line}")
    types, tail = a.types.table(a.label_of)
    assert len(types) == 1 and tail["other_types"] == 0
    assert types[0]["count"] == n and types[0]["sequence"] == "mu → obs"
    assert (types[0]["length"], types[0]["controlled_length"]) == (2, 1)
    assert a.graph.cycles() == []
    edges = {(r["from"], r["to"]): r["count"] for r in a.graph.table(a.label_of)}
    assert edges == {("START", "mu"): n, ("mu", "obs"): n, ("obs", "END"): n}


def test_marsaglia_lengths_follow_the_geometric_law_and_the_graph_has_the_loop(remote):
    n = 40_000
    batch = remote("gum_marsaglia").stream(n, seed=5)
    a = analyse(memory_source(batch, "marsaglia"), progress=False)
    # Each loop iteration draws x and y (replace) and ends with probability pi/4 (s < 1); then the
    # tag mu and the observation: length 2K + 2 with K ~ Geometric(pi/4).
    p = math.pi / 4
    lengths = {r["length"]: r["traces"] for r in a.types.length_table() if r["traces"]}
    assert all(k % 2 == 0 and k >= 4 for k in lengths)
    for k in range(1, 6):
        expected = (1 - p) ** (k - 1) * p
        got = lengths.get(2 * k + 2, 0) / n
        assert abs(got - expected) < 4 * binomial_se(expected, n), (k, got, expected)
    controlled = {r["length"]: r["controlled_traces"] for r in a.types.length_table()}
    assert controlled.get(2, 0) == lengths[4]  # controlled: the 2K uniforms only
    # One trace type per loop length, the most frequent one iteration.
    top = a.types.ranked()[0]
    assert top.length == 4
    assert len(a.types.types) == len(lengths)
    # The two uniforms: replace-flagged, at the lines of marsaglia_normal, and a loop between them.
    x_line = line_of(r"double x = sample\(Uniform\(-1\.0, 1\.0\), o\)")
    y_line = line_of(r"double y = sample\(Uniform\(-1\.0, 1\.0\), o\)")
    uniforms = [s for s in a.addresses.summaries() if s.dist_type == 2]
    assert [s.location.line for s in uniforms] == [x_line, y_line]
    assert all(s.replace and s.controlled and s.node_kind == "replaced" for s in uniforms)
    mean_iterations = 1 / p
    for s in uniforms:
        assert abs(s.draws / n - mean_iterations) < 4 * math.sqrt((1 - p) / p**2 / n)
    loops = a.graph.cycles()
    assert len(loops) == 1 and set(loops[0]) == {uniforms[0].id, uniforms[1].id}
    edges = {(r["from_id"], r["to_id"]): r["count"] for r in a.graph.table(a.label_of)}
    x, y = f"{uniforms[0].id:016x}", f"{uniforms[1].id:016x}"
    assert edges[(y, x)] == uniforms[0].draws - n  # back edges: one per extra iteration
    assert edges[(x, y)] == uniforms[0].draws
    second = a.types.table(a.label_of)[0][1]["sequence"]
    assert "×2" in second  # the loop written once with its count


def test_branching_trace_types_for_r_up_to_4_and_above(remote):
    n = 30_000
    batch = remote("branching").stream(n, seed=3)
    a = analyse(memory_source(batch, "branching"), progress=False)
    types, _ = a.types.table(a.label_of)
    seqs = {t["sequence"]: t["count"] for t in types}
    assert set(seqs) == {"r → s → obs", "r → obs"}
    p_low = sum(math.exp(-4) * 4**k / math.factorial(k) for k in range(5))  # P(r <= 4)
    assert abs(seqs["r → s → obs"] / n - p_low) < 4 * binomial_se(p_low, n)
    r = by_label(a)["r"]
    assert r.discrete and r.node_kind == "controlled"
    for k in range(0, 9):
        pk = math.exp(-4) * 4**k / math.factorial(k)
        assert abs(r.categories.get(float(k), 0) / n - pk) < 4 * binomial_se(pk, n)
    s = by_label(a)["s"]
    assert s.traces == seqs["r → s → obs"]
    assert s.location.line == line_of(r'sample\(Poisson\(4\.0\), "s"\)')
    rows = {row["label"]: row for row in a.addresses.table()}
    assert rows["s"]["trace_fraction"] == pytest.approx(seqs["r → s → obs"] / n)
    assert a.graph.cycles() == []


def test_chunking_does_not_change_any_result(remote):
    batch = remote("branching").stream(5000, seed=9)
    whole = analyse(memory_source(batch, "b"), progress=False)
    src = memory_source(batch, "b")
    acc = (AddressStats(), TraceTypeStats(), TransitionGraph())
    for chunk in src.chunks(max_traces=333):
        for x in acc:
            x.update(chunk)
    assert acc[0].table() == whole.addresses.table()
    assert acc[1].table(whole.label_of) == whole.types.table(whole.label_of)
    assert acc[2].edges.keys() == whole.graph.edges.keys()
    for s in whole.addresses.by_id.values():
        other = acc[0].by_id[s.id]
        if s.reservoir is not None:
            np.testing.assert_array_equal(np.sort(other.reservoir.values), np.sort(s.reservoir.values))


def test_streaming_memory_does_not_grow_with_the_number_of_traces(remote):
    """The state is per address and per trace type: analysing 10x more GUM traces, chunk by
    chunk, must not need more memory (tracemalloc counts NumPy's buffers)."""
    model = remote("gum")
    chunk = model.stream(20_000, seed=1)

    def peak(num_chunks: int) -> tuple[int, int]:
        def chunks():
            for _ in range(num_chunks):
                yield chunk

        tracemalloc.start()
        a = analyse(memory_source(chunks(), "gum"), progress=False, reservoir_capacity=5000)
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return p, a.num_traces

    small, n_small = peak(2)
    large, n_large = peak(20)
    assert n_large == 10 * n_small
    assert large < 1.3 * small + (1 << 20), (small, large)


def test_reservoir_is_uniform_and_bounded():
    from probexec.analytics.reservoir import Reservoir

    r = Reservoir(1000, seed=0)
    for k in range(100):
        r.add(np.arange(k * 1000, (k + 1) * 1000, dtype=np.float64))
    assert len(r) == 1000 and r.seen == 100_000
    # A uniform sample of 0..99999: its mean is 49999.5 with SE ~ 28868 / sqrt(1000).
    assert abs(r.values.mean() - 49_999.5) < 4 * 28_868 / math.sqrt(1000)
    assert len(np.unique(r.values)) == 1000


def test_compress_writes_loops_once():
    assert compress(list("abcbcbcd")) == "a → (b → c)×3 → d"
    assert compress(["x", "x", "x"]) == "x×3"
    assert compress(["a", "b"]) == "a → b"


def test_file_line_resolved_from_the_binary_matches_the_front_end(remote):
    """Addresses that arrive without file:line (a front end without addr2line) are resolved
    afterwards from the executable's debug info, to the same line."""
    batch = remote("gum_marsaglia").stream(50, seed=1)
    records = [r for r in batch.addresses if r.dist_type == 2 or r.name]
    stripped = [AddressRecord(r.id, r.address, r.name, r.dist_type, r.kind, "") for r in records]
    found = resolve_missing(stripped, get_simulator("gum_marsaglia").path())
    assert set(found) == {r.id for r in records}
    for r in records:
        assert locate(r, found[r.id]).file_line == locate(r).file_line != ""


def test_explicit_addresses_have_no_line():
    loc = locate(
        AddressRecord(1, "probexec::calo::shower/particle_0/spot_depth", "particle_0/spot_depth", 8, 0)
    )
    assert loc.explicit and loc.file_line == "" and loc.function == ""


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_source(str(tmp_path / "missing.npz"))
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match=r"broken\.npz: not a readable probexec trace file"):
        next(open_source(str(bad)).chunks())
    (tmp_path / "post").mkdir()
    np.savez(tmp_path / "post" / "posterior.npz", log_weights=np.zeros(3))
    with pytest.raises(ValueError, match=r"no traces\.npz"):
        open_source(str(tmp_path / "post"))
    with pytest.raises(ValueError, match="sim:NAME:N"):
        open_source("sim:gum")
    with pytest.raises(KeyError, match="unknown simulator"):
        open_source("sim:nope:10")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a posterior"):
        open_source(str(tmp_path / "empty"))


def test_dataset_directory_is_read_shard_by_shard(tmp_path, remote):
    data = pytest.importorskip("probexec.data")
    batch = remote("branching").stream(3000, seed=2)
    writer = data.DatasetWriter(tmp_path / "ds", "branching", batch.addresses)
    writer.write(batch.select(slice(0, 1500)))
    writer.write(batch.select(slice(1500, 3000)))
    src = open_source(str(tmp_path / "ds"))
    assert src.kind == "dataset"
    a = analyse(src, progress=False)
    ref = analyse(memory_source(batch, "b"), progress=False)
    assert a.num_traces == 3000
    counts = {t.hash: t.count for t in a.types.types.values()}
    assert counts == {t.hash: t.count for t in ref.types.types.values()}
    assert {s.label: s.draws for s in a.addresses.by_id.values()} == {
        s.label: s.draws for s in ref.addresses.by_id.values()
    }


def test_sources_accept_a_trace_file_and_a_prior_directory(tmp_path, remote):
    batch = remote("gum").stream(500, seed=4)
    batch.save(tmp_path / "t.npz")
    src = open_source(str(tmp_path / "t.npz"))
    assert (src.kind, src.label) == ("traces", "t")
    (tmp_path / "d").mkdir()
    batch.save(tmp_path / "d" / "traces-00000.npz")
    batch.save(tmp_path / "d" / "traces-00001.npz")
    a = analyse(open_source(f"mine={tmp_path / 'd'}"), progress=False)
    assert a.source.label == "mine" and a.num_traces == 1000


def test_chunk_type_is_what_accumulators_take():
    # An empty chunk changes nothing and raises nothing.
    from probexec.trace import TraceBatch

    src = TraceSource("e", "memory", lambda: iter([(TraceBatch.empty(), None)]))
    chunks = list(src.chunks())
    assert len(chunks) == 1 and isinstance(chunks[0], Chunk)
    a = analyse(src, progress=False)
    assert a.num_traces == 0 and a.addresses.table() == []
