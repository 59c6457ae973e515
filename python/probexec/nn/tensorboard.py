"""TensorBoard event files written and read without TensorBoard.

Training logs its scalars here so that a long run (a GPU node under Slurm, say) can be watched
with `tensorboard --logdir DIR` from wherever TensorBoard is installed, while probexec itself
needs neither tensorboard nor protobuf. The format is small enough to own: a file is a sequence
of TFRecord frames (length, masked CRC-32C of the length, payload, masked CRC-32C of the
payload), each payload a protobuf `Event` message. The first event names the file version; the
others hold a `Summary` with one `simple_value` per scalar. Only the fields written here are
encoded; `read_scalars` skips any other field, so it also reads scalars that TensorBoard's own
writers wrote as `simple_value`.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from probexec.errors import ProbexecError

FILE_VERSION = b"brain.Event:2"
_MASK_DELTA = 0xA282EAD8


class EventFileError(ProbexecError):
    """An event file that cannot be read: a bad checksum or a record cut short."""


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        table.append(c)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord frames carry. Byte at a time: the records
    are tens of bytes, written every `log_every` steps."""
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def frame(payload: bytes) -> bytes:
    """One TFRecord frame around `payload`."""
    length = struct.pack("<Q", len(payload))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + payload
        + struct.pack("<I", masked_crc32c(payload))
    )


# --- protobuf, the few wire types an Event needs -------------------------------------------------
def _varint(n: int) -> bytes:
    if n < 0:  # int64 in two's complement, as protobuf encodes it
        n += 1 << 64
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def scalar_event(wall_time: float, step: int, scalars: Mapping[str, float]) -> bytes:
    """An `Event` (wall_time = 1, step = 2, summary = 5) whose `Summary` holds one `Value`
    (tag = 1, simple_value = 2) per scalar. A zero step is left out, as proto3 does."""
    summary = b"".join(
        _length_delimited(1, _length_delimited(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
        for tag, value in scalars.items()
    )
    step_field = b"\x10" + _varint(step) if step else b""
    return b"\x09" + struct.pack("<d", wall_time) + step_field + _length_delimited(5, summary)


def version_event(wall_time: float) -> bytes:
    """The `Event` that opens a file: wall_time = 1 and file_version = 3."""
    return b"\x09" + struct.pack("<d", wall_time) + _length_delimited(3, FILE_VERSION)


class EventFileWriter:
    """Appends scalar events to a new `events.out.tfevents.*` file in `logdir`.

    Each call writes whole frames and flushes, so a run that dies leaves every event logged
    before it; a resumed run writes a second file beside the first, which TensorBoard merges by
    step."""

    def __init__(self, logdir: str | Path) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        stem = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}"
        for n in itertools.count():  # a resumed run in the same second and process: the next name
            self.path = self.logdir / f"{stem}.{n}"
            try:
                self._file = open(self.path, "xb")  # noqa: SIM115 - closed by close()
                break
            except FileExistsError:
                continue
        self._file.write(frame(version_event(now)))
        self._file.flush()

    def scalars(self, step: int, values: Mapping[str, float], wall_time: float | None = None) -> None:
        """Logs `values` (tag -> number) at `step`. NaN is logged as NaN; skip what was not
        measured rather than pass NaN for it."""
        event = scalar_event(time.time() if wall_time is None else wall_time, step, values)
        self._file.write(frame(event))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EventFileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reading ---------------------------------------------------------------------------------
def read_records(path: str | Path) -> Iterator[bytes]:
    """The payloads of `path`'s frames, each checked against its checksums."""
    path = Path(path)
    data = path.read_bytes()
    at = 0
    while at < len(data):
        if at + 12 > len(data):
            raise EventFileError(f"{path}: the record at byte {at} is cut short (its header)")
        header = data[at : at + 8]
        (length,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", data[at + 8 : at + 12])
        if crc != masked_crc32c(header):
            raise EventFileError(f"{path}: the record at byte {at} has a bad length checksum")
        end = at + 12 + length + 4
        if end > len(data):
            raise EventFileError(
                f"{path}: the record at byte {at} is cut short ({length} bytes announced, "
                f"{len(data) - at - 12} there)"
            )
        payload = data[at + 12 : at + 12 + length]
        (crc,) = struct.unpack("<I", data[end - 4 : end])
        if crc != masked_crc32c(payload):
            raise EventFileError(f"{path}: the record at byte {at} has a bad payload checksum")
        yield payload
        at = end


def _read_varint(buf: bytes, at: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if at >= len(buf):
            raise EventFileError("a protobuf varint runs past its message")
        b = buf[at]
        at += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, at


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) of a protobuf message: varints as ints, the rest as the
    raw bytes of the field."""
    at = 0
    while at < len(buf):
        key, at = _read_varint(buf, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _read_varint(buf, at)
            yield field, wire, value
            continue
        if wire == 1:
            size = 8
        elif wire == 5:
            size = 4
        elif wire == 2:
            size, at = _read_varint(buf, at)
        else:
            raise EventFileError(f"protobuf wire type {wire} is not one an Event uses")
        if at + size > len(buf):
            raise EventFileError("a protobuf field runs past its message")
        yield field, wire, buf[at : at + size]
        at += size


def read_scalars(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] in file order, from the `simple_value` scalars of an event file
    (ours or TensorBoard's); other summaries are skipped."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in read_records(path):
        step = 0
        values: list[tuple[str, float]] = []
        for field, wire, value in _fields(record):
            if field == 2 and wire == 0:
                step = value - (1 << 64) if value >= 1 << 63 else value  # type: ignore[operator]
            elif field == 5 and wire == 2:
                for vf, vw, v in _fields(value):  # type: ignore[arg-type]
                    if vf != 1 or vw != 2:
                        continue
                    tag: str | None = None
                    number: float | None = None
                    for f, w, x in _fields(v):  # type: ignore[arg-type]
                        if f == 1 and w == 2:
                            tag = bytes(x).decode()  # type: ignore[arg-type]
                        elif f == 2 and w == 5:
                            (number,) = struct.unpack("<f", x)  # type: ignore[arg-type]
                    if tag is not None and number is not None:
                        values.append((tag, number))
        for tag, number in values:
            out.setdefault(tag, []).append((step, number))
    return out
