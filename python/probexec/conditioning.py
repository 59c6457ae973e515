"""Observations by name: parsing them from the command line or a file, and checking them against
what the model observes *before* any trace runs (a typo should cost seconds, not a night)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probexec.errors import ObservationError


def parse_observe_items(items: Sequence[str]) -> dict[str, np.ndarray]:
    """`name=value` items: a number, a JSON list (`obs=[8,9]`) or comma-separated numbers (`obs=8,9`)."""
    out: dict[str, np.ndarray] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ObservationError(f"--observe wants NAME=VALUE, got {item!r}")
        try:
            value = json.loads(text) if text.strip().startswith("[") else [float(v) for v in text.split(",")]
        except ValueError as e:
            raise ObservationError(f"--observe {name}: cannot read {text!r} as numbers ({e})") from None
        out[name.strip()] = np.asarray(value, dtype=np.float64)
    return out


def load_observe_file(path: str | Path) -> dict[str, np.ndarray]:
    """Observations from a `.npz` (one array per name) or `.json` (an object of name -> number/list)."""
    p = Path(path)
    if not p.exists():
        raise ObservationError(f"observation file {p} does not exist")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as f:
                return {k: np.asarray(f[k], dtype=np.float64) for k in f.files}
        if p.suffix == ".json":
            data = json.loads(p.read_text())
            if not isinstance(data, dict):
                raise ObservationError(f"{p}: expected a JSON object of name -> value")
            return {k: np.asarray(v, dtype=np.float64) for k, v in data.items()}
    except ObservationError:
        raise
    except Exception as e:
        raise ObservationError(f"cannot read observations from {p}: {e}") from None
    raise ObservationError(f"observation file {p}: use .npz or .json")


def check_observations(
    observations: Mapping[str, Any], declared: Mapping[str, tuple[int, ...] | None] | None, model: str
) -> dict[str, np.ndarray]:
    """Values as float64 arrays, checked: known names (when `declared` is known), matching sizes
    (when the declared shape is not None), no NaN or infinity. Raises ObservationError naming the
    observation and the model."""
    out: dict[str, np.ndarray] = {}
    for name, value in observations.items():
        v = np.asarray(value, dtype=np.float64)
        if declared is not None:
            if name not in declared:
                known = ", ".join(sorted(declared)) or "nothing"
                raise ObservationError(
                    f"model {model!r} has no observation or latent named {name!r}; names: {known}"
                )
            shape = declared[name]
            if shape is None:
                pass
            elif v.size != int(np.prod(shape)):
                raise ObservationError(
                    f"observation {name!r} of model {model!r} has {v.size} value(s); the model observes shape {list(shape)}"
                )
            else:
                v = v.reshape(shape)
        if not np.isfinite(v).all():
            raise ObservationError(f"observation {name!r} contains NaN or infinity: {v.tolist()}")
        out[name] = v
    return out
