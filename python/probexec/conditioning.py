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


def load_events(
    path: str | Path, model: str, observed: Mapping[str, tuple[int, ...]], latents: Sequence[str]
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, Any]]]:
    """Many events to infer, from a `.npz` with one array per observation whose first axis counts
    the events: what `probexec simulate` writes (it also holds each event's latents, returned as
    its truth, and a `__meta__` naming the simulator, which must be `model`). Returns per event
    its observations (checked, as `check_observations`) and its true latents where the file has
    them (NaN where an event lacks one). An event with NaN in an observation is named, not run."""
    p = Path(path)
    if not p.exists():
        raise ObservationError(f"events file {p} does not exist")
    if p.suffix != ".npz":
        raise ObservationError(f"events file {p}: use an .npz (as `probexec simulate` writes)")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:
        raise ObservationError(f"cannot read events from {p}: {e}") from None
    if "__meta__" in arrays:
        meta = json.loads(str(arrays.pop("__meta__")))
        if meta.get("simulator") not in (None, model):
            raise ObservationError(f"{p} holds events of {meta['simulator']!r}, not of {model!r}")
    names = [n for n in observed if n in arrays]
    if not names:
        raise ObservationError(
            f"{p} has none of the observations of {model!r} ({', '.join(observed)}); it has {', '.join(arrays)}"
        )
    count = len(arrays[names[0]])
    for n in names:
        shape = (count, *observed[n]) if observed[n] else None
        a = arrays[n]
        if len(a) != count or (shape is not None and a.size != int(np.prod(shape))):
            raise ObservationError(
                f"{p}: observation {n!r} has shape {list(a.shape)}; expected {count} events of "
                f"{list(observed[n])} (the first array, {names[0]!r}, has {count})"
            )
    events, truths = [], []
    for i in range(count):
        try:
            events.append(check_observations({n: arrays[n][i] for n in names}, dict(observed), model))
        except ObservationError as e:
            raise ObservationError(f"{p}, event {i}: {e}") from None
        truths.append({n: np.asarray(arrays[n][i]).tolist() for n in latents if n in arrays})
    return events, truths
