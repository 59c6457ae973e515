"""The engine's end of a connection: a ZeroMQ REQ socket where every wait has a timeout.

A REQ socket that timed out is stuck in its send/receive lockstep, so after any failure the socket
is closed and a fresh one made. All connections of a process share one ZeroMQ context, which is
never terminated: closing a connection closes its socket alone and never touches another
(pyprob's client terminated the process-wide context on close).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import zmq

from probexec.errors import SimulatorTimeoutError

_shared: tuple[int, zmq.Context] | None = None  # (the process it belongs to, the context)


def shared_context() -> zmq.Context:
    """This process's context for every connection to a simulator.

    A context per connection gave each its own I/O thread (and reaper thread): an IC driver with
    32 simulators in flight ran 64 threads that each woke for their own socket, and their wake-ups
    took 0.9 ms of CPU per tau trace, a sixth of the driver's. One I/O thread serves all the
    sockets. A forked child makes its own (a context does not survive a fork)."""
    global _shared
    pid = os.getpid()
    if _shared is None or _shared[0] != pid:
        _shared = (pid, zmq.Context(io_threads=1))
    return _shared[1]


class Connection:
    """Request/reply with one simulator server.

    `alive` is called while waiting and raises (SimulatorDiedError) when the server process is
    gone, so a crash is reported at once instead of after the timeout.
    """

    def __init__(self, address: str, *, timeout: float = 60.0, alive: Callable[[], None] | None = None):
        self.address = address
        self.timeout = timeout
        self._alive = alive
        self._ctx = shared_context()
        self._socket: zmq.Socket | None = None
        self._open()

    def _open(self) -> None:
        s = self._ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        # A blocking receive in slices: one C call in the common case (pyzmq's poll() builds a
        # Poller per call and costs more than the round trip it waits for), and a chance every
        # slice to notice a dead server or the deadline.
        self._slice = 0.1 if self._alive is not None else 1.0
        s.setsockopt(zmq.RCVTIMEO, int(self._slice * 1000))
        s.connect(self.address)
        self._socket = s

    def reopen(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
        self._open()

    @property
    def socket(self) -> zmq.Socket:
        assert self._socket is not None, "connection is closed"
        return self._socket

    def send(self, data: bytes) -> None:
        assert self._socket is not None, "connection is closed"
        self._socket.send(data)

    def recv(self, timeout: float | None = None, what: str = "a reply") -> bytes:
        """Waits for the reply; raises SimulatorTimeoutError (or the `alive` error) and reopens the
        socket so the connection can be used again after a restart of the server."""
        assert self._socket is not None, "connection is closed"
        sock = self._socket
        limit = self.timeout if timeout is None else timeout
        waited = 0.0
        while True:
            try:
                return sock.recv()
            except zmq.Again:
                waited += self._slice
            self.check(waited, limit, what)

    def check(self, waited: float, limit: float | None = None, what: str = "a reply") -> None:
        """For a caller that waits on this socket itself (e.g. polling many): raises, and reopens
        the socket, when the server is gone or `waited` seconds passed the limit."""
        if self._alive is not None:
            try:
                self._alive()
            except Exception:
                self.reopen()
                raise
        limit = self.timeout if limit is None else limit
        if waited >= limit:
            self.reopen()
            raise SimulatorTimeoutError(
                f"no answer from {self.address} within {limit:g} s while waiting for {what}"
            )

    def request(self, data: bytes, timeout: float | None = None, what: str = "a reply") -> bytes:
        self.send(data)
        return self.recv(timeout, what)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
