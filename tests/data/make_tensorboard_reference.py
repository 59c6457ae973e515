"""Writes `tensorboard_reference.tfevents` with TensorBoard's own protobuf classes and record
writer, for `tests/test_tensorboard.py` to hold probexec's writer and reader against. Needs the
`tensorboard` package, which probexec does not; run it in a throw-away venv:

    python -m venv /tmp/tbv && /tmp/tbv/bin/pip install tensorboard
    /tmp/tbv/bin/python tests/data/make_tensorboard_reference.py

The test reads `VERSION_TIME` and `EVENTS` from this file, so TensorBoard is imported only
when the file runs.
"""

from pathlib import Path

VERSION_TIME = 1700000000.25
# (wall time, step, scalars): a zero step, a large one, NaN and a negative value.
EVENTS = [
    (1700000001.5, 0, {"loss": 26.5, "lr": 0.001}),
    (1700000002.5, 20, {"loss": 25.25, "lr": 0.0009765625, "traces_per_s": 418.0}),
    (1700000003.5, 40, {"loss": float("nan"), "valid_loss": 24.125}),
    (1700000004.5, 2**40, {"lr": -1.5}),
]

if __name__ == "__main__":
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    out = Path(__file__).with_name("tensorboard_reference.tfevents")
    with open(out, "wb") as f:
        w = RecordWriter(f)
        w.write(event_pb2.Event(wall_time=VERSION_TIME, file_version="brain.Event:2").SerializeToString())
        for wall, step, scalars in EVENTS:
            values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
            event = event_pb2.Event(wall_time=wall, step=step, summary=summary_pb2.Summary(value=values))
            w.write(event.SerializeToString())
        w.flush()
    print(f"wrote {out} ({out.stat().st_size} bytes)")
