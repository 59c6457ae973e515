"""Saving and loading proposal networks with their optimizer and learning-rate schedule.

A checkpoint is a dict of tensors and plain data (no classes), so it loads with
`torch.load(weights_only=True)`: the config, the per-address sites in creation order (the order
of their parameters in the optimizer), the state dicts, and where training was.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from probexec.data.layout import TypeLayout
from probexec.errors import ProbexecError
from probexec.nn.network import NetworkConfig, ProposalLSTM
from probexec.own_simulator import simulator_name
from probexec.simulators import SimulatorInfo

FORMAT = "probexec-proposal-network"
VERSION = 1


class NetworkMismatchError(ProbexecError, ValueError):
    """A saved network made for another simulator or other observations."""


@dataclass
class LearningRateSchedule:
    """Linear warm-up then cosine decay to `final_fraction` of `lr` over `total_steps` (constant
    when `total_steps` is 0). Our own, not torch's LRScheduler, because parameter groups are added
    during training and must follow the same schedule."""

    lr: float
    warmup_steps: int = 0
    total_steps: int = 0
    final_fraction: float = 0.1
    step_count: int = 0

    def current(self) -> float:
        s = self.step_count
        if self.warmup_steps and s < self.warmup_steps:
            return self.lr * (s + 1) / self.warmup_steps
        if self.total_steps <= 0:
            return self.lr
        p = min(1.0, (s - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.lr * (self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + math.cos(math.pi * p)))

    def apply(self, optimizer: torch.optim.Optimizer) -> float:
        lr = self.current()
        for g in optimizer.param_groups:
            g["lr"] = lr
        return lr

    def step(self) -> None:
        self.step_count += 1

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        for k, v in d.items():
            setattr(self, k, v)


def make_optimizer(net: ProposalLSTM, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam over every parameter as one group: the shared ones, then each address's in creation
    order (`ProposalLSTM.ensure_sites` adds later addresses' parameters with `add_parameters`).

    One group, because an optimizer step pays for each group apart: the fused kernel is one
    launch per group, and the tau decay has ~70 addresses, so a group per address kept the GPU
    waiting on the CPU. The fused kernel on the CPU too, where torch's default runs a loop over
    the tensors: a step is 2.4-3.9x faster on the tau decay, and GUM trains 1.3-1.5x faster
    (`bench/optimizer_groups.py`)."""
    params = [*net.shared_parameters(), *(p for g in net.site_parameter_groups() for p in g)]
    devices = {p.device.type for p in params}
    fused = len(devices) == 1 and devices <= {"cuda", "cpu"}
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True if fused else None)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """`optimizer.load_state_dict(state)`, keeping the optimizer's own implementation flags
    (fused, foreach, capturable): the saved ones come from where the checkpoint was written (an
    older CPU run used no fused kernel) and torch would otherwise take them over, with the step counters
    placed for that implementation.

    A checkpoint written before the optimizer became one group (a group per address) is merged
    into one: its parameters are numbered across groups in the same order, so only the grouping
    changes."""
    own = optimizer.param_groups[0]
    keys = [k for k in ("fused", "foreach", "capturable") if k in own]
    saved = list(state["param_groups"])
    if len(optimizer.param_groups) == 1 and len(saved) > 1:
        saved = [{**saved[0], "params": [i for g in saved for i in g["params"]]}]
    groups = [{**g, **{k: own[k] for k in keys}} for g in saved]
    optimizer.load_state_dict({**state, "param_groups": groups})


def save_checkpoint(
    path: str | Path,
    net: ProposalLSTM,
    optimizer: torch.optim.Optimizer | None = None,
    schedule: LearningRateSchedule | None = None,
    train_state: Mapping[str, Any] | None = None,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "config": net.config.to_dict(),
        "sites": [TypeLayout((s,)).to_json()[0] for s in net.sites.values()],
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "schedule": schedule.state_dict() if schedule is not None else None,
        "train_state": dict(train_state or {}),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(
    path: str | Path,
    *,
    simulator: str | SimulatorInfo | None = None,
    observations: Mapping[str, Sequence[int]] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[ProposalLSTM, dict[str, Any]]:
    """The network (on `device`) and the raw checkpoint dict. With `simulator` / `observations`
    (name -> shape) given, refuses a network made for something else."""
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch raises many types for a damaged file
        raise NetworkMismatchError(
            f"{path}: not a readable probexec network ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise NetworkMismatchError(f"{path}: not a probexec proposal network")
    if blob.get("version") != VERSION:
        raise NetworkMismatchError(
            f"{path}: network format version {blob.get('version')}, this probexec reads {VERSION}"
        )
    config = NetworkConfig.from_dict(blob["config"])
    wanted = simulator_name(simulator) if simulator is not None else None
    if wanted is not None and config.simulator != wanted:
        raise NetworkMismatchError(f"{path} was trained for simulator {config.simulator!r}, not {wanted!r}")
    if observations is not None:
        want = {o.name: tuple(o.shape) for o in config.observations}
        for name, shape in want.items():
            if name not in observations:
                raise NetworkMismatchError(f"{path} needs observation {name!r}, which was not given")
            got = tuple(int(s) for s in observations[name])
            # Same number of values is enough (a scalar may arrive as shape (1,)).
            if math.prod(got) != math.prod(shape):
                raise NetworkMismatchError(
                    f"{path} was trained on observation {name!r} of shape {shape}, not {got}"
                )
    net = ProposalLSTM(config)
    net.ensure_sites([TypeLayout.from_json(blob["sites"])])
    net.load_state_dict(blob["model"])
    return net.to(device), blob
