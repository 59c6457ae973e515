"""Remote models: a C++ (or any PPX) simulator server driven over ZeroMQ.

`RemoteModel("gum")` starts the built-in simulator as a subprocess on a private `ipc://` address;
`RemoteModel(address="tcp://host:5555")` connects to a server someone else started. Two ways to
get traces:

* per draw: `Run`, then one request/reply per controlled draw, each passed through the engine's
  handler stack (the engine chooses values);
* streaming (protocol v2 only): `Run{mode: Stream, num_traces: K}` and the simulator answers with
  K complete trace records in one message (the engine chooses nothing);
* replay (protocol v2, capability "replay"): `Run{mode: Replay}` carries controlled values by
  address id and instance, the simulator draws the rest from the prior and answers with the
  trace's record: what an MCMC step needs, in one round trip.

Failures are reported by name: the simulator, the trace number, and what the process said last.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from probexec import _core
from probexec.errors import ProtocolError, SimulatorDiedError, SimulatorError, VersionMismatchError
from probexec.handlers import Draw, Handler, apply
from probexec.model import Model
from probexec.protocol.messages import CAPABILITIES, PROTOCOL_VERSION, MessageType, RunMode
from probexec.protocol.transport import Connection
from probexec.simulators import SimulatorInfo, get_simulator
from probexec.trace import (
    FLAG_CONTROLLED,
    FLAG_OBSERVED,
    FLAG_REPLACE,
    FLAG_SIMULATED,
    OBSERVE,
    SAMPLE,
    TAG,
    AddressRecord,
    AddressTable,
    TraceBatch,
    TraceBatchBuilder,
    string_address_id,
)

_SAMPLE, _OBSERVE, _TAG = int(MessageType.SAMPLE), int(MessageType.OBSERVE), int(MessageType.TAG)
_RUN_RESULT, _ERROR, _RESET = int(MessageType.RUN_RESULT), int(MessageType.ERROR), int(MessageType.RESET)
_OBSERVE_RESULT = _core.encode_empty(int(MessageType.OBSERVE_RESULT))
_TAG_RESULT = _core.encode_empty(int(MessageType.TAG_RESULT))
_DRAW_LOCALLY = _core.encode_sample_result(np.zeros(0), True)
_EMPTY = np.zeros(0)


def encode_value(value: Any) -> bytes:
    """A SampleResult carrying `value` (a float skips NumPy's conversion: most draws are scalars)."""
    return _core.encode_sample_scalar(value) if type(value) is float else _core.encode_sample_result(value)


def _kill(proc: subprocess.Popen[bytes], tmpdir: str | None) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    if proc.poll() is None:
        proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
    if tmpdir:
        shutil.rmtree(tmpdir, ignore_errors=True)


class RemoteModel(Model):
    """A simulator server, started here or reached at `address`.

    Parameters
    ----------
    simulator: name of a built-in simulator (`probexec simulators` lists them), the path of your
        own simulator's executable (`./my_simulator`), or a `SimulatorInfo`.
    address: connect to this server instead of starting one (`ipc://...`, `tcp://host:port`).
    executable: start this server executable instead of a built-in one.
    transport: "ipc" (default) or "tcp" (loopback, a free port) for simulators started here.
    timeout: seconds to wait for any single reply before declaring the simulator hung.
    protocol_version: what the engine announces; 0 drives the simulator as a plain PPX v1 engine.
    local_tags: let the simulator send its tags with its next message instead of waiting for a
        reply to each (v2 peers that announce "local_tags"); False keeps one round trip per tag.
    """

    def __init__(
        self,
        simulator: str | SimulatorInfo | None = None,
        *,
        address: str | None = None,
        executable: str | os.PathLike[str] | None = None,
        args: Sequence[str] = (),
        transport: str = "ipc",
        timeout: float = 60.0,
        startup_timeout: float = 30.0,
        protocol_version: int = PROTOCOL_VERSION,
        addresses: AddressTable | None = None,
        record_uncontrolled_values: bool = False,
        local_tags: bool = True,
        replay_runs: bool = True,
    ) -> None:
        if simulator is None and address is None and executable is None:
            raise ValueError("RemoteModel needs a simulator name, an address or an executable")
        self.info = get_simulator(simulator) if simulator is not None else None
        self.name = self.info.name if self.info else (Path(executable).name if executable else str(address))
        self._external_address = address
        self._executable = Path(executable) if executable else (self.info.path() if self.info else None)
        self._args = [*(self.info.args if self.info else ()), *args]
        if transport not in ("ipc", "tcp"):
            raise ValueError(f"transport must be 'ipc' or 'tcp', not {transport!r}")
        self._transport = transport
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.requested_version = protocol_version
        self.local_tags = local_tags
        self.replay_runs = replay_runs  # False: MCMC steps go draw by draw even where replay runs exist
        # Uncontrolled draws (a shower's thousands of spots) are kept as a count per address and
        # trace unless their values are asked for.
        self.record_uncontrolled_values = record_uncontrolled_values
        self.addresses = addresses if addresses is not None else AddressTable()
        self.peer_version = 0
        self.capabilities: tuple[str, ...] = ()
        self.model_name = ""
        self.traces_run = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: str | None = None
        self._log_path: Path | None = None
        self._finalizer: weakref.finalize | None = None
        self._conn: Connection | None = None
        self._where = "start-up"
        self._draw = Draw()
        self._v1_ids: dict[tuple[str, str, int, int], int] = {}
        self._v1_instances: dict[int, int] = {}
        self.start()

    # --- life cycle ----------------------------------------------------------------------------
    @property
    def supports_streaming(self) -> bool:
        return self.peer_version >= 2 and "stream" in self.capabilities

    @property
    def supports_replay(self) -> bool:
        return self.replay_runs and self.peer_version >= 2 and "replay" in self.capabilities

    @property
    def address(self) -> str:
        return self._address

    def start(self) -> None:
        if self._external_address is not None:
            self._address = self._external_address
        else:
            self._spawn()
        self._conn = Connection(
            self._address, timeout=self.timeout, alive=self._check_alive if self._proc else None
        )
        try:
            self._handshake()
        except BaseException:
            # A refused handshake must not leave a server process or a ZeroMQ context behind.
            self._close_process(graceful=False)
            raise

    def _spawn(self) -> None:
        assert self._executable is not None
        self._tmpdir = tempfile.mkdtemp(prefix="probexec-")
        if self._transport == "ipc":
            self._address = f"ipc://{self._tmpdir}/sim.sock"
            bind = self._address
        else:
            port = _free_port()
            self._address = f"tcp://127.0.0.1:{port}"
            bind = self._address
        self._log_path = Path(self._tmpdir) / "simulator.log"
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(self._executable),
                    "--address",
                    bind,
                    "--timeout",
                    str(max(self.timeout * 5, 300)),
                    "--exit-on-stdin-eof",
                    *self._args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its stdin is a pipe whose only write end is ours: however this process ends
                # (SIGKILL and the OOM killer included) the server reads end of file and exits,
                # instead of idling on its cores.
                stdin=subprocess.PIPE,
            )
        # Kill the server if this object is dropped without close() (and at interpreter exit).
        self._finalizer = weakref.finalize(self, _kill, self._proc, self._tmpdir)

    def _log_tail(self, lines: int = 8) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        rc = proc.returncode
        how = f"was killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with code {rc}"
        tail = self._log_tail()
        raise SimulatorDiedError(
            f"simulator {self.name!r} (pid {proc.pid}) {how} during {self._where}"
            + (f"; its last output:\n{tail}" if tail else "")
        )

    def restart(self) -> None:
        """Replaces the server process by a fresh one (after a crash or a hang)."""
        self._close_process(graceful=False)
        self.start()

    def close(self) -> None:
        self._close_process(graceful=True)

    def _close_process(self, graceful: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if graceful and self.peer_version >= 2 and self._proc is not None and self._proc.poll() is None:
                with contextlib.suppress(Exception):
                    conn.request(_core.encode_empty(int(MessageType.SHUTDOWN)), timeout=2.0, what="shutdown")
                    self._proc.wait(timeout=2.0)
            conn.close()
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._proc = None

    def __enter__(self) -> RemoteModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # --- protocol ------------------------------------------------------------------------------
    def _request(self, data: bytes) -> tuple:
        assert self._conn is not None, f"simulator {self.name!r} is closed"
        raw = self._conn.request(data, what=f"{self.name!r} {self._where}")
        try:
            return _core.decode(raw)
        except ProtocolError as e:
            raise ProtocolError(f"simulator {self.name!r}, {self._where}: {e}") from None

    def _handshake(self) -> None:
        self._where = "handshake"
        v = self.requested_version
        caps = [c for c in CAPABILITIES if self.local_tags or c != "local_tags"] if v else []
        reply = self._request(_core.encode_handshake("probexec engine", v, caps))
        if reply[0] == _ERROR:
            raise ProtocolError(f"simulator {self.name!r} refused the handshake: {reply[1]}")
        if reply[0] != int(MessageType.HANDSHAKE_RESULT):
            raise ProtocolError(f"simulator {self.name!r} answered the handshake with {_name(reply[0])}")
        _, _system, model_name, version, caps, error = reply
        if error:
            raise VersionMismatchError(f"simulator {self.name!r} refused the handshake: {error}")
        if version not in (0, PROTOCOL_VERSION):
            raise VersionMismatchError(
                f"incompatible protocol version: simulator {self.name!r} speaks {version}, "
                f"this engine speaks {PROTOCOL_VERSION} (and PPX v1)"
            )
        self.peer_version = version if v else 0
        self.capabilities = tuple(caps)
        self.model_name = model_name

    def run_trace(
        self, handlers: Sequence[Handler], builder: TraceBatchBuilder, seed: int | None = None
    ) -> None:
        """One trace, draw by draw, each through `handlers`; rows go to `builder`."""
        self._where = f"trace {self.traces_run}"
        for h in handlers:
            h.begin_trace()
        self._v1_instances.clear()
        t0 = time.perf_counter()
        assert self._conn is not None, f"simulator {self.name!r} is closed"
        conn = self._conn
        where = self._where

        def request(data: bytes) -> tuple:
            # The socket directly when the reply is there within one receive slice (the common
            # case); otherwise the connection's patient receive with its liveness checks.
            sock = conn.socket
            sock.send(data)
            try:
                return decode(sock.recv())
            except zmq.Again:
                return decode(conn.recv(what=where))

        decode = _core.decode
        draw = self._draw
        v1 = self.peer_version < 2
        draw.can_draw_locally = not v1 and "draw_locally" in self.capabilities
        try:
            reply = request(_core.encode_run(int(RunMode.PER_DRAW), 1, seed, self.record_uncontrolled_values))
            while True:
                kind = reply[0]
                if kind == _SAMPLE:
                    self._begin_sample(builder, reply, v1, draw, handlers)
                    if draw.draw_locally:
                        out = _DRAW_LOCALLY
                    else:
                        if draw.value is None:
                            raise ProtocolError(f"no handler chose a value for {draw.name or reply[1]!r}")
                        out = self._record_sample(builder, draw)
                    reply = request(out)
                elif kind == _OBSERVE:
                    self._begin_observe(builder, reply, v1, draw, handlers)
                    builder.add(
                        draw.address_id,
                        draw.instance,
                        OBSERVE,
                        FLAG_SIMULATED if draw.simulated else 0,
                        draw.dist_type,
                        draw.params,
                        draw.value,
                    )
                    reply = request(_OBSERVE_RESULT)
                elif kind == _TAG:
                    self._record_tag(builder, reply, v1)
                    reply = request(_TAG_RESULT)
                elif kind == _RUN_RESULT:
                    self._finish_trace(builder, reply, t0)
                    return
                elif kind == _ERROR:
                    raise SimulatorError(f"simulator {self.name!r}, {self._where}: {reply[1]}")
                elif kind == _RESET:
                    raise ProtocolError(
                        f"simulator {self.name!r} answered Reset during {self._where}: out of sync"
                    )
                else:
                    raise ProtocolError(f"simulator {self.name!r} sent {_name(kind)} during {self._where}")
        except ProtocolError as e:
            builder.abandon_trace()
            if not str(e).startswith(f"simulator {self.name!r}"):
                raise ProtocolError(f"simulator {self.name!r}, {self._where}: {e}") from None
            raise
        except BaseException:
            builder.abandon_trace()
            raise

    # The steps of a trace that the blocking loop above and `stepping.TraceStepper` share.

    def _begin_sample(
        self, builder: TraceBatchBuilder, reply: tuple, v1: bool, draw: Draw, handlers: Sequence[Handler]
    ) -> None:
        """A Sample message into `draw`, shown to `handlers` (which may choose its value)."""
        _, address, name, dt, params, control, replace, aid, inst, local = reply
        aid, inst = self._site(builder, local, v1, address, name, dt, SAMPLE, aid, inst)
        draw.kind, draw.address_id, draw.instance, draw.name = SAMPLE, aid, inst, name
        draw.dist_type, draw.params, draw.control, draw.replace = dt, params, control, replace
        draw.value, draw.draw_locally, draw.observed = None, False, False
        apply(handlers, draw)

    @staticmethod
    def _record_sample(builder: TraceBatchBuilder, draw: Draw) -> bytes:
        """Records the sample's chosen value; returns the reply that sends it."""
        flags = (
            (FLAG_CONTROLLED if draw.control else 0)
            | (FLAG_REPLACE if draw.replace else 0)
            | (FLAG_OBSERVED if draw.observed else 0)
        )
        v = draw.value
        builder.add(draw.address_id, draw.instance, SAMPLE, flags, draw.dist_type, draw.params, v)
        return encode_value(v)

    def _begin_observe(
        self, builder: TraceBatchBuilder, reply: tuple, v1: bool, draw: Draw, handlers: Sequence[Handler]
    ) -> None:
        """An Observe message into `draw`, shown to `handlers` (which may condition it)."""
        _, address, name, dt, params, value, aid, inst, local = reply
        aid, inst = self._site(builder, local, v1, address, name, dt, OBSERVE, aid, inst)
        draw.kind, draw.address_id, draw.instance, draw.name = OBSERVE, aid, inst, name
        draw.dist_type, draw.params, draw.value, draw.simulated = dt, params, value, False
        apply(handlers, draw)

    def _record_tag(self, builder: TraceBatchBuilder, reply: tuple, v1: bool) -> None:
        _, address, name, value, aid, inst, local = reply
        aid, inst = self._site(builder, local, v1, address, name, 0, TAG, aid, inst)
        builder.add(aid, inst, TAG, 0, 0, (), value if value is not None else _EMPTY)

    def _finish_trace(self, builder: TraceBatchBuilder, reply: tuple, t0: float) -> None:
        """A RunResult: the draws made locally since the last message, then the trace's end."""
        if reply[2] is not None:
            builder.add_wire(reply[2])
        builder.end_trace(reply[1], time.perf_counter() - t0)
        self.traces_run += 1

    def _site(
        self,
        builder: TraceBatchBuilder,
        local: Any,
        v1: bool,
        address: str,
        name: str,
        dist_type: int,
        kind: int,
        aid: int,
        inst: int,
    ) -> tuple[int, int]:
        """Records the draws made locally before this message, and returns the message's address id
        and instance (computed here for a v1 peer, which sends only the address string)."""
        if local is not None:
            builder.add_wire(local)
        if v1:
            return self._v1_site(address, name, dist_type, kind)
        if address and aid not in self.addresses:
            self.addresses.add(AddressRecord(aid, address, name, dist_type, kind))
        return aid, inst

    def _v1_site(self, address: str, name: str, dist_type: int, kind: int) -> tuple[int, int]:
        """Address id and instance for a v1 peer, which sends only the address string."""
        key = (address, name, dist_type, kind)
        aid = self._v1_ids.get(key)
        if aid is None:
            aid = string_address_id(*key)
            self._v1_ids[key] = aid
            self.addresses.add(AddressRecord(aid, address, name, dist_type, kind))
        inst = self._v1_instances.get(aid, 0) + 1
        self._v1_instances[aid] = inst
        return aid, inst

    def stream(
        self, num_traces: int, seed: int | None = None, record_uncontrolled_values: bool | None = None
    ) -> TraceBatch:
        """`num_traces` complete traces drawn by the simulator itself, in one message."""
        if not self.supports_streaming:
            raise ProtocolError(
                f"simulator {self.name!r} (protocol {self.peer_version or 'v1'}) cannot stream traces"
            )
        self._where = f"streamed traces {self.traces_run}..{self.traces_run + num_traces - 1}"
        if record_uncontrolled_values is None:
            record_uncontrolled_values = self.record_uncontrolled_values
        request = _core.encode_run(int(RunMode.STREAM), num_traces, seed, record_uncontrolled_values)
        return self._traces(request, "streaming", num_traces)

    def _traces(self, request: bytes, mode: str, num_traces: int) -> TraceBatch:
        """Sends a Run answered by whole trace records (streaming, replay) and reads the records."""
        reply = self._request(request)
        if reply[0] == _ERROR:
            raise SimulatorError(f"simulator {self.name!r}, {self._where}: {reply[1]}")
        if reply[0] != int(MessageType.TRACE_BATCH):
            raise ProtocolError(f"simulator {self.name!r} answered a {mode} Run with {_name(reply[0])}")
        batch = TraceBatch.from_wire(reply[1], reply[2], self.addresses)
        if batch.num_traces != num_traces:
            raise ProtocolError(
                f"simulator {self.name!r} answered a {mode} Run with {batch.num_traces} traces, "
                f"{num_traces} were asked for"
            )
        self.traces_run += num_traces
        return batch

    def replay(
        self,
        values: Mapping[tuple[int, int], Any],
        seed: int | None = None,
        observed: Mapping[str, Any] | None = None,
    ) -> TraceBatch:
        """One trace whose controlled draws take `values` (keyed by address id and instance); the
        simulator draws the others from their prior and sends the whole trace in one message.

        `observed`: the user's observations by name. Observations of those names come back as NaN
        for the caller to condition on (the simulator does not simulate what would be replaced).
        A controlled sample of such a name is fixed to its value and flagged FLAG_OBSERVED; values
        of more than `_SENT_OBSERVATION_VALUES` numbers (images) are not sent, so a sample of that
        size stays unflagged. A model error raises SimulatorError."""
        if not self.supports_replay:
            raise ProtocolError(
                f"simulator {self.name!r} (protocol {self.peer_version or 'v1'}) cannot replay a trace in one run"
            )
        self._where = f"trace {self.traces_run} (replayed)"
        ids, inst, offsets, flat = _replay_rows(values)
        names = list(observed or {})
        sent = [_observation_sent(observed[n]) for n in names] if observed else []
        request = _core.encode_replay_run(
            seed, self.record_uncontrolled_values, ids, inst, offsets, flat, names, sent
        )
        batch = self._traces(request, "replay", 1)
        if batch.errors[0]:
            raise SimulatorError(f"simulator {self.name!r}, {self._where}: {batch.errors[0]}")
        return batch


_SENT_OBSERVATION_VALUES = 4096  # larger observations travel by name only: they fix no sample


def _observation_sent(value: Any) -> np.ndarray | None:
    v = np.asarray(value, dtype=np.float64)
    return v if v.size <= _SENT_OBSERVATION_VALUES else None


def _replay_rows(
    values: Mapping[tuple[int, int], Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The replay table's columns: address ids, instances, value offsets and the values flat."""
    n = len(values)
    ids = np.fromiter((k[0] for k in values), np.uint64, n)
    inst = np.fromiter((k[1] for k in values), np.uint32, n)
    vals = list(values.values())
    if all(type(v) is float for v in vals):  # the common case: every draw a scalar
        return ids, inst, np.arange(n + 1, dtype=np.uint32), np.array(vals, dtype=np.float64)
    arrays = [np.asarray(v, dtype=np.float64).ravel() for v in vals]
    offsets = np.zeros(n + 1, dtype=np.uint32)
    np.cumsum([a.size for a in arrays], out=offsets[1:])
    flat = np.concatenate(arrays) if arrays else np.zeros(0)
    return ids, inst, offsets, flat


def _name(kind: int) -> str:
    try:
        return MessageType(kind).name
    except ValueError:
        return f"message type {kind}"


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
