"""Quarantine: where replay keeps the spill-file lines it cannot read.

A spill file can be damaged: a disk that fills up mid-write cuts the last line (inside a
multibyte character, when the row holds non-ASCII text), a machine crash can leave a tail
of NUL bytes, a flipped byte can make a line invalid UTF-8 or rename a column. Replay
reads each line on its own (`ctloop.predlog.spill`), so one such line must neither stop
the file nor the files after it. The line is not dropped either: it may hold most of an
answered row that an operator can still piece together by hand, so its exact bytes are
appended here, with the reason, before the source file is deleted.

One quarantine file per source file, under `<spill_dir>/quarantine/` and named after the
claimed source, one JSON record per damaged line. The bytes are kept as base64 (a damaged
line need not be text); `text` is a readable rendering for a human. Mode 0600 (folder
0700), because a spill line holds customer ids and features.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from ctloop.store.dates import utc_now

QUARANTINE_DIR = "quarantine"


@dataclass(frozen=True)
class DamagedLine:
    """One line of a spill file that is not a row, and why."""

    number: int  # 1-based line number in the source file
    offset: int  # where the line starts, in bytes
    raw: bytes  # the line as read, without its newline
    reason: str


def record(source: str, line: DamagedLine, at: dt.datetime) -> bytes:
    """The quarantine record of one damaged line, as one JSON line."""
    return orjson.dumps({
        "source": source,
        "line": line.number,
        "offset": line.offset,
        "length": len(line.raw),
        "reason": line.reason,
        "quarantined_at": at.isoformat(),
        "base64": base64.b64encode(line.raw).decode("ascii"),
        "text": line.raw.decode("utf-8", errors="backslashreplace"),
    }) + b"\n"  # fmt: skip


def quarantine(spill_dir: Path, source: Path, lines: Sequence[DamagedLine]) -> Path:
    """Append the damaged lines of `source` to its quarantine file, on disk (fsync'd)
    before the caller deletes the source. Returns the file; raises OSError (a full disk,
    a folder that cannot be made), which the caller reports and counts as lost."""
    directory = spill_dir / QUARANTINE_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    target = directory / source.name
    at = utc_now()
    data = b"".join(record(source.name, line, at) for line in lines)
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "ab") as handle:
        os.fchmod(fd, 0o600)  # also when the file existed with another mode
        handle.write(data)
        handle.flush()
        os.fsync(fd)
    return target
