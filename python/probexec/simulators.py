"""The built-in simulators: their executables, latent and observed names, default observations.
`get_simulator` also takes the path of a simulator of your own (`own_simulator.py`)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

BIN_DIR = Path(__file__).resolve().parent / "bin"


@dataclass(frozen=True)
class SimulatorInfo:
    name: str
    executable: str
    description: str
    latents: tuple[str, ...]
    observed: dict[str, tuple[int, ...]]
    default_observations: dict[str, list[float]] = field(default_factory=dict)
    test_only: bool = False
    args: tuple[str, ...] = ()  # command-line options the executable is started with

    def path(self) -> Path:
        """The server executable: installed with the package, or PROBEXEC_SIM_DIR, or on PATH."""
        candidates = [BIN_DIR / self.executable]
        if os.environ.get("PROBEXEC_SIM_DIR"):
            candidates.insert(0, Path(os.environ["PROBEXEC_SIM_DIR"]) / self.executable)
        for c in candidates:
            if c.is_file() and os.access(c, os.X_OK):
                return c
        found = shutil.which(self.executable)
        if found:
            return Path(found)
        raise FileNotFoundError(
            f"simulator {self.name!r}: executable {self.executable!r} not found in {BIN_DIR} or on PATH "
            "(is the package installed with `pip install .`?)"
        )


# tau_decay's `channel` values, in the order of simulators/physics/constants.hpp (TauChannel).
TAU_CHANNELS = (
    "e nu nu",
    "mu nu nu",
    "pi nu",
    "pi pi0 nu",
    "pi 2pi0 nu",
    "3pi nu",
    "3pi pi0 nu",
    "K nu",
    "K pi0 nu",
    "pi K0 nu",
)


def _tau(name: str, description: str, *args: str) -> SimulatorInfo:
    """The tau decay executable run with `args`: variants differ only in their options."""
    return SimulatorInfo(
        name,
        "probexec-sim-tau_decay",
        description,
        ("px", "py", "pz", "channel"),
        {"calorimeter": (20, 35, 35)},
        args=args,
    )


_HMM_OBS = [0.9, 0.8, 0.7, 0.0, -0.025, -5.0, -2.0, -0.1, 0.0, 0.13, 0.45, 6.0, 0.2, 0.3, -1.0, -1.0]

SIMULATORS: dict[str, SimulatorInfo] = {
    s.name: s
    for s in [
        SimulatorInfo(
            "gum",
            "probexec-sim-gum",
            "Gaussian with unknown mean: mu ~ N(1, sqrt 5), obs ~ N(mu, sqrt 2) twice",
            ("mu",),
            {"obs": (2,)},
            {"obs": [8.0, 9.0]},
        ),
        SimulatorInfo(
            "gum_marsaglia",
            "probexec-sim-gum_marsaglia",
            "Gaussian with unknown mean, mu drawn by the Marsaglia polar rejection loop",
            ("mu",),
            {"obs": (2,)},
            {"obs": [8.0, 9.0]},
        ),
        SimulatorInfo(
            "hmm",
            "probexec-sim-hmm",
            "3-state hidden Markov model, 16 Gaussian observations",
            tuple(f"state_{t}" for t in range(17)),
            {f"obs_{t}": () for t in range(1, 17)},
            {f"obs_{t}": [v] for t, v in enumerate(_HMM_OBS, start=1)},
        ),
        SimulatorInfo(
            "branching",
            "probexec-sim-branching",
            "r ~ Poisson(4); the trace structure depends on r; obs ~ Poisson",
            ("r",),
            {"obs": ()},
            {"obs": [6.0]},
        ),
        _tau(
            "tau_decay",
            "tau lepton of uniform momentum decaying (10 channels) into a 35x35x20 voxel calorimeter",
        ),
        _tau(
            "tau_decay_fixed_spots",
            "tau_decay with shower spots from a fixed random stream: the image mean is a function of the controlled draws",
            "--fixed-spots",
        ),
        _tau(
            "tau_decay_coarse",
            "tau_decay_fixed_spots with a 200 MeV noise floor per voxel instead of 5 MeV (a coarse "
            "detector): with every other latent held, px moves the likelihood within about 0.1 GeV, not a few MeV",
            "--fixed-spots",
            "--noise-floor",
            "0.2",
        ),
        SimulatorInfo(
            "calorimeter",
            "probexec-sim-calorimeter",
            "particle gun (e, gamma, pi, K) showering in a 35x35x20 voxel calorimeter",
            ("particle", "energy", "x", "y", "theta", "phi"),
            {"calorimeter": (20, 35, 35)},
        ),
        SimulatorInfo(
            "many_draws",
            "probexec-sim-many_draws",
            "100 controlled Normal draws (benchmark)",
            (),
            {},
            test_only=True,
        ),
        SimulatorInfo(
            "kitchen_sink",
            "probexec-sim-kitchen_sink",
            "every distribution type (protocol tests)",
            ("normal", "vector"),
            {"obs": ()},
            test_only=True,
        ),
        SimulatorInfo(
            "faulty",
            "probexec-sim-faulty",
            "throws mid-trace when x > 0.9 (error handling tests)",
            ("x",),
            {"obs": ()},
            test_only=True,
        ),
        SimulatorInfo(
            "slow",
            "probexec-sim-slow",
            "GUM with a 1 ms busy loop per trace (worker pool benchmark)",
            ("mu",),
            {"obs": (2,)},
            {"obs": [8.0, 9.0]},
            test_only=True,
        ),
    ]
}


def get_simulator(spec: str | SimulatorInfo) -> SimulatorInfo:
    """A built-in simulator by name, or your own by the path of its executable (`./my_simulator`,
    anything with a `/`), described from a few of its prior traces. A `SimulatorInfo` is returned
    as it is, so that one described executable can be handed on to pools and driver processes."""
    if isinstance(spec, SimulatorInfo):
        return spec
    if spec in SIMULATORS:
        return SIMULATORS[spec]
    from probexec.own_simulator import describe_executable, is_executable_path

    if is_executable_path(spec):
        return describe_executable(spec)
    known = ", ".join(sorted(SIMULATORS))
    raise KeyError(
        f"unknown simulator {spec!r}; built-in simulators: {known}; or give the path of your own "
        f"simulator's executable (with a /, e.g. ./{spec})"
    )
