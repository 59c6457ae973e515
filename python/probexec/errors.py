"""Exceptions of the engine. Every one names what failed (simulator, trace, address) so that a
physicist reading a traceback from a 10-hour run knows where to look."""

from __future__ import annotations


class ProbexecError(Exception):
    """Base of every error the engine raises on purpose."""


class ProtocolError(ProbexecError):
    """A message failed verification, had an unknown type, or arrived out of sequence."""


class VersionMismatchError(ProtocolError):
    """The peers speak incompatible protocol versions."""


class SimulatorError(ProbexecError):
    """The simulator's model threw; its message is carried over the wire."""


class SimulatorDiedError(ProbexecError):
    """The simulator process exited (crash, kill) while the engine waited for it."""


class SimulatorTimeoutError(ProbexecError):
    """The simulator did not answer within the timeout."""


class ObservationError(ProbexecError, ValueError):
    """An observation the user gave cannot apply: unknown name, wrong shape, NaN."""


class NoFiniteTraceError(ProbexecError):
    """No prior trace has a finite joint density with these observations: an MCMC chain or SMC
    particle has nowhere to start (for example a stratum value the model can never take)."""
