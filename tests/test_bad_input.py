"""Bad input on either side gets a clear error naming the problem, and nobody hangs."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
import zmq
from probexec.protocol.generated import (
    HandshakeResult,
    Message,
    MessageBody,
    Reset,
)

import probexec
from conftest import process_alive
from probexec import _core
from probexec.handlers import Draw, Handler
from probexec.inference.prior import sample_prior
from probexec.protocol.messages import MessageType
from probexec.trace import TraceBatchBuilder


class Server:
    """A simulator process we talk to with a raw REQ socket (no engine in between)."""

    def __init__(self, tmp_path, name: str = "gum", *extra: str):
        self.address = f"ipc://{tmp_path}/raw.sock"
        self.proc = subprocess.Popen(
            [str(probexec.get_simulator(name).path()), "--address", self.address, *extra],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        self.ctx = zmq.Context()
        self.connect()

    def connect(self) -> None:
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 5000)
        self.sock.connect(self.address)

    def request(self, data: bytes) -> tuple:
        self.sock.send(data)
        return _core.decode(self.sock.recv())

    def stop(self) -> str:
        self.sock.close(linger=0)
        self.ctx.term()
        self.proc.kill()
        _, err = self.proc.communicate(timeout=5)
        return err.decode(errors="replace")


@pytest.fixture
def server(tmp_path):
    servers: list[Server] = []

    def make(*args: str, name: str = "gum") -> Server:
        s = Server(tmp_path, name, *args)
        servers.append(s)
        return s

    yield make
    for s in servers:
        if s.proc.poll() is None:
            s.stop()


def handshake_v2() -> bytes:
    return _core.encode_handshake("test", 2, [])


def unknown_member_buffer(type_number: int = 99) -> bytes:
    b = flatbuffers.Builder(64)
    Reset.Start(b)
    body = Reset.End(b)
    Message.Start(b)
    Message.AddBodyType(b, type_number)
    Message.AddBody(b, body)
    b.Finish(Message.End(b))
    return bytes(b.Output())


# --- the C++ side refuses bad requests with an Error reply and keeps serving ---------------------


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"", "too short"),
        (b"\x00\x01garbage bytes that are not a flatbuffer", "verification"),
        (None, "verification"),  # a valid Handshake cut in half
        (unknown_member_buffer(), "unknown message type 99"),
    ],
)
def test_cpp_server_refuses_malformed_requests(server, payload, expected):
    s = server()
    if payload is None:
        payload = handshake_v2()[: len(handshake_v2()) // 2]
    reply = s.request(payload)
    assert reply[0] == MessageType.ERROR
    assert expected in reply[1]
    # ...and still serves a well-formed engine afterwards.
    assert s.request(handshake_v2())[0] == MessageType.HANDSHAKE_RESULT
    log = s.stop()
    assert "refused request" in log and expected in log


def test_cpp_server_refuses_incompatible_version(server):
    s = server()
    reply = s.request(_core.encode_handshake("future engine", 3, []))
    assert reply[0] == MessageType.HANDSHAKE_RESULT
    assert "incompatible protocol version" in reply[5] and "3" in reply[5] and "2" in reply[5]
    assert "incompatible protocol version" in s.stop()


def test_engine_reports_version_mismatch_from_cpp_server():
    with pytest.raises(probexec.VersionMismatchError, match=r"engine speaks 3.*speaks 2"):
        probexec.RemoteModel("gum", protocol_version=3)


def test_engine_reports_version_mismatch_from_future_simulator(tmp_path):
    """A simulator that answers with a protocol version this engine does not know."""
    address = f"ipc://{tmp_path}/future.sock"
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    rep.bind(address)

    def serve_once():
        if rep.poll(5000):
            rep.recv()
            b = flatbuffers.Builder(64)
            name = b.CreateString("future")
            HandshakeResult.Start(b)
            HandshakeResult.AddSystemName(b, name)
            HandshakeResult.AddModelName(b, name)
            HandshakeResult.AddProtocolVersion(b, 7)
            body = HandshakeResult.End(b)
            Message.Start(b)
            Message.AddBodyType(b, MessageBody.MessageBody.HandshakeResult)
            Message.AddBody(b, body)
            b.Finish(Message.End(b))
            rep.send(bytes(b.Output()))

    t = threading.Thread(target=serve_once)
    t.start()
    try:
        with pytest.raises(probexec.VersionMismatchError, match="speaks 7"):
            probexec.RemoteModel(address=address, timeout=5)
    finally:
        t.join()
        rep.close(linger=0)
        ctx.term()


# --- the engine's codec ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"", "too short"),
        (bytes(range(64)), "verification"),
        (unknown_member_buffer(77), "unknown message type 77"),
    ],
)
def test_engine_codec_refuses_malformed_messages(payload, expected):
    with pytest.raises(probexec.ProtocolError, match=expected):
        _core.decode(payload)


def test_engine_codec_refuses_truncated_messages():
    whole = _core.encode_sample_result(np.arange(6.0).reshape(2, 3))
    assert _core.decode(whole)[1].shape == (2, 3)
    for cut in (len(whole) // 3, len(whole) // 2, len(whole) - 4):
        with pytest.raises(probexec.ProtocolError):
            _core.decode(whole[:cut])


# --- failures of the simulator, seen from the engine ------------------------------------------------


class SetValue(Handler):
    def __init__(self, name: str, value) -> None:
        self.name, self.value = name, np.asarray(value, dtype=float)

    def on_sample(self, draw: Draw) -> None:
        if draw.name == self.name:
            draw.value = self.value


def test_model_that_throws_mid_trace(remote):
    model = remote("faulty")
    builder = TraceBatchBuilder(model.addresses)
    model.run_trace([SetValue("x", 0.5)], builder)
    with pytest.raises(probexec.SimulatorError, match=r"'faulty', trace 1: .*beyond the detector acceptance"):
        model.run_trace([SetValue("x", 0.95)], builder)
    # The simulator survived its model's exception and serves the next trace.
    model.run_trace([SetValue("x", 0.25)], builder)
    batch = builder.build()
    assert batch.num_traces == 2
    assert batch.values_of("x").tolist() == [0.5, 0.25]


def test_streamed_traces_that_throw_are_kept_with_their_error(remote):
    batch = remote("faulty").stream(2000, seed=0)
    failed = batch.failed
    assert 0 < failed.sum() < 2000
    p = 0.1
    assert abs(failed.mean() - p) < 4 * np.sqrt(p * (1 - p) / 2000)
    assert all("beyond the detector acceptance" in e for e, f in zip(batch.errors, failed, strict=True) if f)
    x = batch.values_of("x")
    assert np.isnan(x[failed]).all() and (x[~failed] <= 0.9).all()


def test_engine_sends_wrong_number_of_values(remote):
    model = remote("gum")
    builder = TraceBatchBuilder(model.addresses)
    with pytest.raises(probexec.SimulatorError, match="engine sent 3 values for a draw of 1"):
        model.run_trace([SetValue("mu", [1.0, 2.0, 3.0])], builder)
    sample_prior(model, 3, mode="per_draw")  # still usable


class KillOnSample(Handler):
    def __init__(self, pid: int, sig: int) -> None:
        self.pid, self.sig = pid, sig

    def on_sample(self, draw: Draw) -> None:
        os.kill(self.pid, self.sig)
        time.sleep(0.05)
        draw.value = np.asarray(1.0)


def test_simulator_killed_mid_trace(remote):
    model = remote("gum", timeout=30)
    sample_prior(model, 3, mode="per_draw")
    t0 = time.monotonic()
    with pytest.raises(
        probexec.SimulatorDiedError, match=r"'gum' \(pid \d+\) was killed by SIGKILL during trace 3"
    ):
        model.run_trace([KillOnSample(model.pid, signal.SIGKILL)], TraceBatchBuilder(model.addresses))
    assert time.monotonic() - t0 < 5, "death must be noticed long before the 30 s timeout"
    model.restart()
    assert sample_prior(model, 10, mode="per_draw").num_traces == 10


def test_a_connection_that_fails_or_closes_leaves_the_others_working(remote):
    """All connections of a process share one ZeroMQ context: a simulator that dies, a socket
    reopened after it, and a model closed must not disturb the other simulators' connections."""
    a, b, c = remote("gum", timeout=30), remote("gum", timeout=30), remote("gum", timeout=30)
    assert a._conn._ctx is b._conn._ctx  # one context (and one I/O thread) for all
    with pytest.raises(probexec.SimulatorDiedError):
        a.run_trace([KillOnSample(a.pid, signal.SIGKILL)], TraceBatchBuilder(a.addresses))
    b.close()
    assert sample_prior(c, 20, mode="per_draw").num_traces == 20
    a.restart()
    assert sample_prior(a, 20, mode="per_draw").num_traces == 20


def _traces_in_forked_child(queue) -> None:
    with probexec.RemoteModel("gum", timeout=30) as m:
        queue.put(sample_prior(m, 5, mode="per_draw").num_traces)


def test_a_forked_child_connects_with_its_own_context(remote):
    """A context does not survive a fork: a child forked after the parent connected makes its own."""
    parent = remote("gum", timeout=30)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_traces_in_forked_child, args=(queue,))
    child.start()
    assert queue.get(timeout=60) == 5
    child.join(timeout=30)
    assert child.exitcode == 0
    assert sample_prior(parent, 5, mode="per_draw").num_traces == 5


def test_simulator_that_hangs_times_out(remote):
    model = remote("gum", timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(probexec.SimulatorTimeoutError, match="within 1 s"):
        model.run_trace([KillOnSample(model.pid, signal.SIGSTOP)], TraceBatchBuilder(model.addresses))
    assert time.monotonic() - t0 < 5
    os.kill(model.pid, signal.SIGCONT)
    model.restart()
    assert model.stream(10).num_traces == 10


def test_cpp_server_survives_engine_that_vanishes_mid_trace(server):
    s = server("--timeout", "1")
    assert s.request(handshake_v2())[0] == MessageType.HANDSHAKE_RESULT
    reply = s.request(_core.encode_run(0, 1, None))
    assert reply[0] == MessageType.SAMPLE
    s.sock.close(linger=0)  # the engine is gone without answering
    time.sleep(1.5)
    s.connect()
    assert s.request(handshake_v2())[0] == MessageType.HANDSHAKE_RESULT
    assert s.request(_core.encode_run(0, 1, None))[0] == MessageType.SAMPLE
    assert "engine did not answer within" in s.stop()


def _run_to_observe(s: Server, seed: int) -> tuple:
    """Runs one per-draw trace of a calorimeter simulator, every draw made by the simulator, up to
    its image Observe (392 kB: a message the server lends to ZeroMQ instead of copying)."""
    reply = s.request(_core.encode_run(0, 1, seed))
    while reply[0] != MessageType.OBSERVE:
        if reply[0] == MessageType.SAMPLE:
            reply = s.request(_core.encode_sample_result(np.zeros(0), draw_locally=True))
        else:
            assert reply[0] == MessageType.TAG, reply
            reply = s.request(_core.encode_empty(int(MessageType.TAG_RESULT)))
    return reply


def _assert_image_intact(observe: tuple) -> None:
    # The simulator's stddev is sqrt(max(mean, 0) + floor^2) per voxel: bytes overwritten or cut
    # while ZeroMQ held them would break that relation.
    mean, sd = (np.asarray(p) for p in observe[4])
    assert mean.size == sd.size == 20 * 35 * 35
    floor2 = sd**2 - np.maximum(mean, 0.0)
    np.testing.assert_allclose(floor2, floor2.flat[0], rtol=1e-9, atol=1e-12)
    assert floor2.flat[0] > 0


def test_cpp_server_lends_large_messages_and_survives_an_engine_that_vanishes(server):
    s = server("--timeout", "1", name="tau_decay_coarse")
    assert s.request(handshake_v2())[0] == MessageType.HANDSHAKE_RESULT
    _assert_image_intact(_run_to_observe(s, seed=1))
    s.sock.close(linger=0)  # gone without answering the lent Observe
    time.sleep(1.5)
    s.connect()
    assert s.request(handshake_v2())[0] == MessageType.HANDSHAKE_RESULT
    for seed in (2, 3):  # the buffer is reused for each message after the first lent one
        _assert_image_intact(_run_to_observe(s, seed=seed))
        assert s.request(_core.encode_empty(int(MessageType.OBSERVE_RESULT)))[0] == MessageType.RUN_RESULT
    assert "engine did not answer within" in s.stop()


# An engine that starts a simulator and is then SIGKILLed (the OOM killer, a Slurm job's time
# limit): the server must not idle on its core for ever.
_DOOMED_ENGINE = """
import os, signal, sys, time
import numpy as np
import probexec
from probexec.handlers import Handler
from probexec.trace import TraceBatchBuilder

class DieOnSample(Handler):
    def on_sample(self, draw):
        os.kill(os.getpid(), signal.SIGKILL)

m = probexec.RemoteModel("gum", timeout=600)
m.prior(2, mode="per_draw")
print(m.pid, m._log_path, flush=True)
sys.stdin.readline()
if sys.argv[1] == "mid-trace":
    m.run_trace([DieOnSample()], TraceBatchBuilder(m.addresses))
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("when", ["between-traces", "mid-trace"])
def test_simulator_exits_when_its_engine_is_killed(when):
    with subprocess.Popen(
        [sys.executable, "-c", _DOOMED_ENGINE, when], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as engine:
        sim_pid, log_path = engine.stdout.readline().split()
        _watch_orphan(engine, int(sim_pid), Path(log_path), when)


def _watch_orphan(engine: subprocess.Popen, sim_pid: int, log_path: Path, when: str) -> None:
    try:
        assert process_alive(sim_pid)
        engine.stdin.write("go\n")
        engine.stdin.flush()
        assert engine.wait(timeout=30) == -signal.SIGKILL
        # The server waits up to 600 s inside a trace and for ever between traces; its stdin
        # ending must stop it within its one-second slices.
        deadline = time.monotonic() + 10
        while process_alive(sim_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_alive(sim_pid), f"simulator {sim_pid} outlived its engine ({when})"
        log = log_path.read_text()
        expected = "stdin closed mid-trace" if when == "mid-trace" else "stdin closed: the engine"
        assert expected in log, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(sim_pid, signal.SIGKILL)
        shutil.rmtree(log_path.parent, ignore_errors=True)


def test_cpp_server_idle_timeout(server):
    s = server("--idle-timeout", "0.5")
    assert s.request(handshake_v2())[0] == MessageType.HANDSHAKE_RESULT
    assert s.proc.wait(timeout=10) == 0
    assert "no request for 0.5 s (--idle-timeout); exiting" in s.stop()


def test_cpp_server_keeps_serving_while_requests_come(server):
    """The idle limit counts between traces only: a trace longer than it is not cut."""
    s = server("--idle-timeout", "1", "--timeout", "30")
    assert s.request(handshake_v2())[0] == MessageType.HANDSHAKE_RESULT
    assert s.request(_core.encode_run(0, 1, None))[0] == MessageType.SAMPLE
    time.sleep(1.5)  # the engine thinks, mid-trace, for longer than the idle limit
    assert s.proc.poll() is None
    assert s.request(_core.encode_sample_scalar(1.0))[0] == MessageType.OBSERVE


def test_new_engine_taking_over_mid_trace_is_served(server):
    """An engine that restarts sends Handshake while the simulator waits inside a trace."""
    s = server()
    s.request(handshake_v2())
    assert s.request(_core.encode_run(0, 1, None))[0] == MessageType.SAMPLE
    # Same REQ socket, but speaking first again is impossible on REQ: use a second engine socket.
    other = s.ctx.socket(zmq.REQ)
    other.setsockopt(zmq.LINGER, 0)
    other.setsockopt(zmq.RCVTIMEO, 5000)
    other.connect(s.address)
    other.send(handshake_v2())
    # The simulator is waiting for a SampleResult; the newcomer's Handshake is answered instead.
    assert _core.decode(other.recv())[0] == MessageType.HANDSHAKE_RESULT
    other.close(linger=0)


def test_observation_errors_are_clear(remote):
    model = remote("gum")
    with pytest.raises(probexec.ObservationError, match="'obs' contains NaN"):
        model.prior(10, observe={"obs": [float("nan"), 1.0]}, mode="per_draw")
    with pytest.raises(probexec.ObservationError, match="'obs' has 3 value"):
        model.prior(10, observe={"obs": [1.0, 2.0, 3.0]}, mode="per_draw")
    with pytest.raises(probexec.ObservationError, match="'obs' has 1 value"):
        model.prior(10, observe={"obs": [1.0]}, mode="stream")


def test_unknown_simulator_and_bad_arguments():
    with pytest.raises(KeyError, match=r"unknown simulator 'nope'.*gum"):
        probexec.RemoteModel("nope")
    with pytest.raises(ValueError, match="transport"):
        probexec.RemoteModel("gum", transport="udp")
    r = subprocess.run(
        [str(probexec.get_simulator("gum").path()), "--bogus"], capture_output=True, timeout=10
    )
    assert r.returncode == 2 and b"unknown argument --bogus" in r.stderr


def test_a_pool_whose_simulator_fails_to_start_closes_the_others():
    """Pool members start side by side; when one of them fails, the pool raises that error and
    leaves none of the started servers running."""
    from probexec.inference.pool import ModelPool
    from probexec.remote import RemoteModel

    lock = threading.Lock()
    made: list[int] = []  # their server pids, taken while they run
    calls = [0]

    def factory(addresses):
        with lock:
            calls[0] += 1
            fail = calls[0] == 3
        if fail:
            raise probexec.ProtocolError("simulator 3 refused the handshake (test)")
        m = RemoteModel("gum", addresses=addresses)
        assert m.pid is not None and process_alive(m.pid)
        with lock:
            made.append(m.pid)
        return m

    with pytest.raises(probexec.ProtocolError, match="simulator 3 refused"):
        ModelPool(factory, 6)
    assert len(made) == 5
    pids = made
    deadline = time.monotonic() + 10
    while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if process_alive(p)], "servers of a failed pool left running"
