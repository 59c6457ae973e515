"""TensorBoard event files: byte for byte what TensorBoard's own writer makes, read back by
ours, damage named, and a training run's CSV figures logged there step for step."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import pytest

from probexec.nn import TrainOptions, train
from probexec.nn.tensorboard import (
    EventFileError,
    EventFileWriter,
    crc32c,
    frame,
    read_scalars,
    scalar_event,
    version_event,
)
from test_ic import make_dataset

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "tensorboard_reference.tfevents"


def _reference_events() -> tuple[float, list]:
    """The events that tests/data/make_tensorboard_reference.py wrote into REFERENCE with
    TensorBoard, read from that script (which imports TensorBoard only when run)."""
    spec = importlib.util.spec_from_file_location(
        "make_tensorboard_reference", DATA / "make_tensorboard_reference.py"
    )
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.VERSION_TIME, module.EVENTS


VERSION_TIME, EVENTS = _reference_events()


def test_event_file_bytes_are_tensorboards_own():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    ours = frame(version_event(VERSION_TIME)) + b"".join(
        frame(scalar_event(wall, step, scalars)) for wall, step, scalars in EVENTS
    )
    assert ours == REFERENCE.read_bytes()


def test_reading_tensorboards_file_gives_every_scalar_at_its_step():
    got = read_scalars(REFERENCE)
    assert got["loss"][:2] == [(0, 26.5), (20, 25.25)] and got["loss"][2][0] == 40
    assert math.isnan(got["loss"][2][1])
    assert got["lr"] == [(0, pytest.approx(0.001)), (20, 0.0009765625), (2**40, -1.5)]
    assert got["traces_per_s"] == [(20, 418.0)] and got["valid_loss"] == [(40, 24.125)]


def test_a_damaged_event_file_names_the_file_and_the_record(tmp_path):
    with EventFileWriter(tmp_path) as w:
        w.scalars(1, {"loss": 3.0})
        w.scalars(2, {"loss": 2.0})
    data = w.path.read_bytes()
    first = len(frame(version_event(0.0)))  # where the second record starts
    bad = tmp_path / "flipped.tfevents"
    bad.write_bytes(data[: first + 20] + bytes([data[first + 20] ^ 1]) + data[first + 21 :])
    with pytest.raises(
        EventFileError, match=rf"flipped.tfevents: the record at byte {first} has a bad payload checksum"
    ):
        read_scalars(bad)
    cut = tmp_path / "cut.tfevents"
    cut.write_bytes(data[:-3])
    with pytest.raises(EventFileError, match=r"cut.tfevents: the record at byte \d+ is cut short"):
        read_scalars(cut)
    assert read_scalars(w.path) == {"loss": [(1, 3.0), (2, 2.0)]}


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_training_logs_its_csv_figures_to_tensorboard_and_resumes_in_a_new_file(tmp_path):
    ds = make_dataset(tmp_path / "b", "branching", 2000)
    tb = tmp_path / "tb"
    opts = dict(batch_size=64, lr=3e-3, seed=1, progress=False, threads=1, log_every=3, tensorboard=tb)
    net, log = tmp_path / "net.pt", tmp_path / "net.csv"
    first = train(
        "branching", dataset=ds, output=net, log_path=log, options=TrainOptions(traces=64 * 10, **opts)
    )
    (one,) = tb.glob("events.out.tfevents.*")
    logged = read_scalars(one)
    rows = _csv_rows(log)
    assert len(rows) >= 4  # every third step, and the last
    for tag in ("loss", "lr", "traces_per_s", "wait_fraction", "epoch", "traces"):
        assert [s for s, _ in logged[tag]] == [int(r["step"]) for r in rows], tag
        for (_, v), r in zip(logged[tag], rows, strict=True):
            assert v == pytest.approx(float(r[tag]), rel=1e-6), tag  # float32 in the file
    assert "valid_loss" not in logged  # no validation set: nothing measured, no NaN points
    assert logged["loss"][-1][0] == first.steps
    second = train(
        "branching",
        dataset=ds,
        output=net,
        log_path=log,
        resume=True,
        options=TrainOptions(traces=64 * 20, **opts),
    )
    (two,) = set(tb.glob("events.out.tfevents.*")) - {one}
    steps = [s for s, _ in read_scalars(two)["loss"]]
    assert steps[0] > first.steps and steps[-1] == second.steps
    assert [int(r["step"]) for r in _csv_rows(log)][len(rows) :] == steps  # the CSV went on too
