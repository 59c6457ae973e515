"""Where a training run's progress goes: a CSV file (one row per `log_every` steps and one at
the end) and, when asked, TensorBoard event files with the same figures per step."""

from __future__ import annotations

import csv
import math
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from probexec.nn.tensorboard import EventFileWriter


@dataclass(frozen=True)
class LogRow:
    step: int
    epoch: int
    traces: int
    loss: float  # mean over the steps since the last row
    valid_loss: float  # the last validation loss; NaN before the first
    lr: float
    traces_per_s: float  # since this run (or resume) began
    wait_fraction: float  # of the time since then spent waiting for minibatches
    seconds: float


COLUMNS = tuple(f.name for f in fields(LogRow))
# What TensorBoard plots against the step (the step itself is its x axis).
SCALARS = ("loss", "valid_loss", "lr", "traces_per_s", "wait_fraction", "epoch", "traces")


class TrainingLog:
    """The CSV log (appended to on resume, with its header only when new) and the optional
    TensorBoard directory (a new event file per run, which TensorBoard merges by step). Every
    row is flushed as it is written, so a run that stops with an error leaves all it logged."""

    def __init__(self, csv_path: str | Path | None, tensorboard: str | Path | None, resume: bool) -> None:
        self._file = None
        self._csv = None
        if csv_path is not None:
            path = Path(csv_path)
            new = not (resume and path.exists())
            self._file = open(path, "w" if new else "a", newline="")  # noqa: SIM115 - closed by close()
            self._csv = csv.writer(self._file)
            if new:
                self._csv.writerow(COLUMNS)
        self._events = EventFileWriter(tensorboard) if tensorboard is not None else None

    def write(self, row: LogRow) -> None:
        if self._csv is not None:
            self._csv.writerow(astuple(row))
            self._file.flush()  # type: ignore[union-attr]
        if self._events is not None:
            values = {k: float(getattr(row, k)) for k in SCALARS}
            if math.isnan(values["valid_loss"]):  # not measured yet: no point, not a NaN point
                del values["valid_loss"]
            self._events.scalars(row.step, values)

    def close(self) -> None:
        """Closes both; closing again does nothing."""
        if self._file is not None:
            self._file.close()
        if self._events is not None:
            self._events.close()
