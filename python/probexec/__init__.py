"""probexec: Bayesian inference inside existing C++ simulators.

import probexec
with probexec.RemoteModel("gum") as model:
    traces = model.prior(10_000, observe={"obs": [8.0, 9.0]})
"""

from probexec.errors import (
    NoFiniteTraceError,
    ObservationError,
    ProbexecError,
    ProtocolError,
    SimulatorDiedError,
    SimulatorError,
    SimulatorTimeoutError,
    VersionMismatchError,
)
from probexec.model import Model, PythonModel, observe, sample, tag
from probexec.remote import RemoteModel
from probexec.simulators import SIMULATORS, get_simulator
from probexec.trace import AddressTable, Trace, TraceBatch, Variable

__version__ = "0.1.0"

__all__ = [
    "SIMULATORS",
    "AddressTable",
    "Model",
    "NoFiniteTraceError",
    "ObservationError",
    "ProbexecError",
    "ProtocolError",
    "PythonModel",
    "RemoteModel",
    "SimulatorDiedError",
    "SimulatorError",
    "SimulatorTimeoutError",
    "Trace",
    "TraceBatch",
    "Variable",
    "VersionMismatchError",
    "get_simulator",
    "observe",
    "sample",
    "tag",
]
