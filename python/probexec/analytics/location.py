"""Where in the C++ code an address is: its function and the `file:line` of its `sample`/`observe`.

The C++ front end resolves each address once, when it first sees it (addr2line over the binary's
DWARF line tables), and sends the frames with the address: `AddressRecord.address` holds the
demangled `function+0xoffset` of each frame and `AddressRecord.source` their `file:line`, innermost
first, joined by `|`. Here that is read back. Where the front end could not resolve (addr2line
missing at simulation time, `PROBEXEC_NO_ADDR2LINE`, a PPX v1 peer), `resolve_missing` does it
afterwards from the binary, once per address: a frame is `symbol+0xoff` (the symbol's address
from `nm`, plus the offset) or `module@0xoff`/`function@0xoff` (an offset in the module), and
`addr2line` maps the call instruction (one byte before the return address) to its line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from probexec.trace import AddressRecord

_OFFSET = re.compile(r"^(?P<fn>.*?)(?P<sep>[+@])(?P<off>0x[0-9a-fA-F]+)$")


@dataclass(frozen=True)
class Location:
    """The readable form of one address."""

    function: str  # demangled, innermost user frame ("" for an explicit address)
    file: str
    line: int  # 0 when unknown
    frames: tuple[str, ...]  # the whole stack, innermost first, as the front end wrote it
    sources: tuple[str, ...]  # file:line per frame ("" where unknown)
    explicit: bool  # the simulator gave the address itself (no call stack was captured)

    @property
    def file_line(self) -> str:
        return f"{self.file}:{self.line}" if self.file and self.line else ""

    @property
    def short(self) -> str:
        """`file.cpp:123` without directories (for graph labels)."""
        return f"{os.path.basename(self.file)}:{self.line}" if self.file and self.line else ""


def _split_frames(text: str) -> list[str]:
    return text.split("|") if text else []


def function_of(frame: str) -> str:
    """`ns::f(int)+0x1c` -> `ns::f(int)`; an explicit address is returned as it is."""
    m = _OFFSET.match(frame)
    return m.group("fn") if m else frame


def locate(record: AddressRecord, source: str | None = None) -> Location:
    """`source` overrides the record's (a line resolved afterwards by `resolve_missing`)."""
    frames = _split_frames(record.address)
    sources = _split_frames(record.source if source is None else source)
    explicit = bool(frames) and not any(_OFFSET.match(f) for f in frames)
    file, line = "", 0
    for s in sources:
        if not s:
            continue
        f, _, ln = s.rpartition(":")
        if f and ln.isdigit() and int(ln) > 0:
            file, line = f, int(ln)
        break
    function = "" if explicit or not frames else function_of(frames[0])
    return Location(function, file, line, tuple(frames), tuple(sources), explicit)


def _symbol_addresses(binary: Path) -> dict[str, int]:
    """Demangled symbol -> address (relative to the module's base for a PIE), from `nm -C`."""
    out = subprocess.run(
        ["nm", "-C", "--defined-only", str(binary)], capture_output=True, text=True, check=False
    ).stdout
    table: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW":
            table.setdefault(parts[2], int(parts[0], 16))
    return table


def _addr2line(binary: Path, addresses: list[int]) -> list[str]:
    if not addresses:
        return []
    out = subprocess.run(
        ["addr2line", "-e", str(binary), *[hex(a) for a in addresses]],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    result = []
    for i in range(len(addresses)):
        loc = out[i].split(" (discriminator")[0].strip() if i < len(out) else ""
        result.append("" if loc.startswith("??") else loc)
    return result


def resolve_missing(records: Iterable[AddressRecord], binary: str | Path) -> dict[int, str]:
    """`source` (as the front end writes it) for the records of `binary` that arrived without one
    (see the module docstring), by address id. Frames in other modules (shared libraries) stay
    unresolved. Needs binutils (`nm`, `addr2line`)."""
    binary = Path(binary)
    if not binary.is_file():
        raise FileNotFoundError(f"{binary}: no such binary")
    if shutil.which("addr2line") is None or shutil.which("nm") is None:
        raise RuntimeError("resolving source lines needs addr2line and nm (Debian package binutils)")
    todo = [r for r in records if not r.source and r.address and _OFFSET.match(r.address.split("|")[0])]
    if not todo:
        return {}
    symbols = _symbol_addresses(binary)
    lookups: list[tuple[int, int]] = []  # (record index, frame index) per looked-up address
    pcs: list[int] = []
    for i, rec in enumerate(todo):
        for j, frame in enumerate(_split_frames(rec.address)):
            m = _OFFSET.match(frame)
            if m is None:
                continue
            off = int(m.group("off"), 16)
            if m.group("sep") == "+" and m.group("fn") in symbols:
                pc = symbols[m.group("fn")] + off
            elif m.group("sep") == "@":
                pc = off  # already an offset in the module
            else:
                continue
            lookups.append((i, j))
            pcs.append(pc - 1)  # the call instruction, not the return address after it
    found: dict[int, dict[int, str]] = {}
    for (i, j), loc in zip(lookups, _addr2line(binary, pcs), strict=True):
        found.setdefault(i, {})[j] = loc
    out = {}
    for i, rec in enumerate(todo):
        frames = found.get(i, {})
        if any(frames.values()):
            out[rec.id] = "|".join(frames.get(j, "") for j in range(len(_split_frames(rec.address))))
    return out
