"""Spill files: where the prediction-log writer keeps rows the database cannot take now.

One row per line (JSON lines). Spill files are per process (pid and a random suffix in the
name) in a shared directory. A process holds an exclusive `flock` on every file it writes
or replays; a file nobody holds a lock on belongs to a process that died (or closed it),
and any process claims it by locking it and renaming it. The rename is the claim: of two
processes racing for the same file, only one rename succeeds. So a new worker replays what
a dead one left behind, and no file is replayed by two processes at once.

Replay reads a file as bytes, one line at a time, and decodes and parses each line on its
own: a damaged line (cut inside a multibyte character by a full disk, a NUL tail left by a
machine crash, a flipped byte) is put in quarantine (`ctloop.predlog.quarantine`) and the
rest of the file is replayed. Reading the whole file as text used to raise on the first
invalid byte outside the per-line handling, which left the file claimed and stopped every
replay after it, on every restart.

This module owns the files (format, locking, claiming, reading back); when to spill and
when to replay is the writer's policy (`ctloop.predlog.writer`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from ctloop.predlog.quarantine import DamagedLine, quarantine
from ctloop.predlog.row import JSON_FIELDS, encode_json, encode_row

log = logging.getLogger(__name__)

SPILL_SUFFIX = ".jsonl"

Claimed = tuple[Path, IO[bytes]]
"""A claimed spill file: its new name and the open, locked handle that holds the claim."""

TEXT_FIELDS = ("request_id", "feature_view", "model_version", "prediction")
"""Columns every row has as text (the table's NOT NULL text columns but the JSON ones)."""

Sink = Callable[[list[dict[str, Any]]], int]
"""Inserts rows in one transaction, skipping stored request ids; returns rows inserted."""


class ShortWriteError(OSError):
    """An append that a full disk (or another write error) cut short; `lines` whole lines of
    it are in the file, which was cut back to end after the last of them."""

    def __init__(self, lines: int, cause: OSError) -> None:
        super().__init__(cause.errno, f"{cause.strerror or cause}; {lines} whole line(s) written")
        self.lines = lines


def open_locked(path: Path) -> int:
    """Create a file of lines for appending, 0600 (the rows hold customer ids and features,
    issue 18 item 12) in a 0700 folder, and hold an exclusive lock on it: a file nobody
    holds a lock on belongs to a dead process, and another may claim it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_lines(fd: int, data: bytes) -> None:
    """Append `data` (whole lines) with as few `write` calls as the OS allows: handed to the
    kernel, lines survive a kill -9 of this process.

    When a write fails midway (a full disk), the file is cut back to the end of the last
    whole line written and `ShortWriteError` says how many lines that is: a cut line would be
    read back as damaged and counted lost a second time (issue 18, item 9), and the next
    append would glue its first line to it.
    """
    start = os.lseek(fd, 0, os.SEEK_END)
    done = 0
    view = memoryview(data)
    try:
        while done < len(data):
            done += _os_write(fd, view[done:])
    except OSError as exc:
        keep = data.rfind(b"\n", 0, done) + 1
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start + keep)
        raise ShortWriteError(data.count(b"\n", 0, keep), exc) from exc


_os_write = os.write  # the file-write boundary, replaced by the unit tests' full disk


def batches(rows: Sequence[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Rows in lists of at most `size`: one insert transaction each."""
    for start in range(0, len(rows), size):
        yield list(rows[start : start + size])


@dataclass
class Replayed:
    """What replaying one claimed file did, for the writer's counters."""

    rows: int
    damaged: list[DamagedLine] = field(default_factory=list)
    quarantined: int = 0  # damaged lines kept in quarantine (the others are lost)
    inserted: int = 0
    complete: bool = False  # every row went in: the file can go
    error: Exception | None = None  # the insert that failed (the database is down again)
    failed_rows: int = 0  # rows of the batch that failed

    @property
    def unreadable(self) -> int:
        """Lines of the file that were not rows: their rows are not in the table."""
        return len(self.damaged)


def to_line(row: dict[str, Any]) -> str:
    """One spill line. orjson writes naive datetimes as isoformat() does; `from_line` reads
    them back. A row orjson refuses (an integer beyond 64 bits, a float subclass) is written
    with its JSON fields as text, so that replay stores exactly what the live insert would
    have: read back as objects, such values would come back changed (a big integer as a
    float)."""
    try:
        return orjson.dumps(row).decode() + "\n"
    except TypeError:
        return encode_json(encode_row(row)) + "\n"


def from_line(line: str) -> dict[str, Any]:
    """A row back from its spill line; ValueError for a line that is not a row (one cut
    short by a crash mid-write, or damaged).

    The row's shape is checked here, not left to the insert: a flipped byte can leave
    valid JSON that lacks a column (a key renamed), and such a row would fail its whole
    batch on every replay."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:  # e.g. NaN written by the json fallback
        data = json.loads(line)
    if not isinstance(data, dict) or not isinstance(data.get("request_id"), str):
        raise ValueError("not a prediction log row")
    missing = [k for k in TEXT_FIELDS if not isinstance(data.get(k), str)]
    missing += [k for k in JSON_FIELDS if not isinstance(data.get(k), dict | str)]
    latency = data.get("latency_ms")
    if not isinstance(latency, int | float) or isinstance(latency, bool):
        missing.append("latency_ms")
    if not isinstance(data.get("entity_id"), str | None):
        missing.append("entity_id")
    if not isinstance(data.get("created_at"), str):
        missing.append("created_at")
    if missing:
        raise ValueError(f"not a prediction log row: {', '.join(missing)} missing or mistyped")
    data["created_at"] = dt.datetime.fromisoformat(data["created_at"])
    return data


def parse_line(raw: bytes) -> dict[str, Any]:
    """A row from one spill line read as bytes; ValueError saying why it is not one."""
    if not raw.strip(b"\x00"):
        raise ValueError(f"{len(raw)} NUL bytes (a tail a crash left unwritten)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # cut inside a character, or a damaged byte
        raise ValueError(f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        return from_line(text)
    except RecursionError as exc:  # nesting too deep for the json fallback: garbage
        raise ValueError("not JSON: nested too deep") from exc


def read_rows(handle: IO[bytes]) -> tuple[list[dict[str, Any]], list[DamagedLine]]:
    """Every readable row of a claimed file, and the lines that were not rows.

    Bytes, one line at a time, each decoded and parsed on its own: no byte of the file can
    make the read itself fail (see the module docstring)."""
    handle.seek(0)
    rows: list[dict[str, Any]] = []
    damaged: list[DamagedLine] = []
    offset = 0
    for number, line in enumerate(handle, start=1):
        raw = line.rstrip(b"\n")
        if raw.strip():
            try:
                rows.append(parse_line(raw))
            except ValueError as exc:
                damaged.append(DamagedLine(number, offset, raw, str(exc)))
        offset += len(line)
    return rows, damaged


def quarantine_damaged(path: Path, damaged: list[DamagedLine]) -> int:
    """Keep a replayed file's damaged lines in quarantine and say so once for the file;
    how many were kept (0 when the quarantine cannot be written: they are lost, and the
    replay goes on regardless, or one bad disk would stop every later file again)."""
    if not damaged:
        return 0
    first = damaged[0]
    try:
        target = quarantine(path.parent, path, damaged)
    except OSError as exc:
        log.error("%s: %d damaged line(s) lost, the quarantine cannot be written (%s); "
                  "first: line %d, %s", path.name, len(damaged), exc, first.number,
                  first.reason)  # fmt: skip
        return 0
    log.warning("%s: %d damaged line(s) quarantined in %s; first: line %d, %s", path.name,
                len(damaged), target, first.number, first.reason)  # fmt: skip
    return len(damaged)


def replay_file(
    path: Path, handle: IO[bytes], write: Sink, batch_size: int, deadline: float | None
) -> Replayed:
    """Insert every row of a claimed file in batches, until done, a failed insert, or the
    deadline. What went in before a stop is counted; the file itself is left to the caller
    (deleted when complete, else kept: the sink skips stored request ids, so the next
    attempt is safe). Damaged lines are quarantined only once the file is complete, so a
    file replayed in several attempts quarantines (and counts) each of them once."""
    rows, damaged = read_rows(handle)
    outcome = Replayed(len(rows), damaged)
    for batch in batches(rows, batch_size):
        if deadline is not None and time.monotonic() > deadline:
            log.info("%s: out of time after %d rows; kept for the next process",
                     path.name, outcome.inserted)  # fmt: skip
            return outcome
        try:
            outcome.inserted += write(batch)
        except Exception as exc:  # keep the file; dedup makes the next attempt safe
            outcome.error, outcome.failed_rows = exc, len(batch)
            return outcome
    outcome.quarantined = quarantine_damaged(path, damaged)
    outcome.complete = True
    log.info("replayed %s: %d rows inserted, %d already stored", path.name, outcome.inserted,
             len(rows) - outcome.inserted)  # fmt: skip
    return outcome


class SpillFiles:
    """This process's spill file and the files it claimed for replay, in one directory.

    The own file is written by the request threads and the writer thread: `append`,
    `close_own` and `claim_own` take a lock. The claimed files are the writer thread's
    (and, once it stopped, `close`'s).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.claimed: list[Claimed] = []
        self._own: tuple[Path, int] | None = None  # a raw descriptor: one write() per append
        self._lock = threading.Lock()

    @property
    def own_name(self) -> str | None:
        """The name of this process's open spill file, if it has one (for stats)."""
        own = self._own
        return own[0].name if own else None

    @property
    def has_own(self) -> bool:
        """Whether this process has spilled since its file was last claimed for replay."""
        return self._own is not None

    def append(self, text: str) -> None:
        """Append lines to this process's file (opened and locked on first use), handed to
        the OS at once, so they survive a crash of this process. Raises OSError; a
        `ShortWriteError` when a full disk cut the write (the file then ends at a whole line)."""
        with self._lock:
            if self._own is None:
                name = f"spill-{os.getpid()}-{time.time_ns()}-{uuid.uuid4().hex[:8]}{SPILL_SUFFIX}"
                self._own = (self.directory / name, open_locked(self.directory / name))
            write_lines(self._own[1], text.encode("utf-8"))

    def spill(self, rows: list[dict[str, Any]], reason: str) -> tuple[int, int]:
        """Append rows to this process's file: (rows kept, rows lost). A row that cannot be
        encoded is reported and lost alone; a failed write loses the lot."""
        lines = []
        for row in rows:
            try:
                lines.append(to_line(row))
            except (TypeError, ValueError) as exc:  # not JSON-able: report, keep the rest
                log.error("prediction log row %s cannot be encoded: %s", row.get("request_id"),
                          exc)  # fmt: skip
        lost = len(rows) - len(lines)
        if not lines:
            return 0, lost
        try:
            self.append("".join(lines))
        except OSError as exc:
            # a full disk may have taken some of the lines: those are kept (and replayed),
            # only the rest is lost, and no cut line is left behind to be counted again
            kept = exc.lines if isinstance(exc, ShortWriteError) else 0
            log.error("could not spill %d of %d prediction log rows (%s): %s",
                      len(lines) - kept, len(lines), reason, exc)  # fmt: skip
            return kept, len(rows) - kept
        return len(lines), lost

    def close_own(self) -> None:
        """Close this process's spill file; unlocked, it becomes claimable for replay."""
        with self._lock:
            self._close_own()

    def _close_own(self) -> None:
        if self._own is not None:
            path, fd = self._own
            os.close(fd)
            self._own = None
            if path.exists() and path.stat().st_size == 0:
                path.unlink(missing_ok=True)

    def claim_own(self) -> bool:
        """Close this process's spill file (later rows start a new one) and claim it for
        replay; False when there is none or another process claimed it first."""
        with self._lock:
            own = self._own[0] if self._own else None
            self._close_own()
        if own is None or (claimed := self._claim(own)) is None:
            return False
        self.claimed.append(claimed)
        return True

    def claim_orphans(self) -> None:
        """Claim every file of the directory nobody holds (our own open file is locked)."""
        for path in sorted(self.directory.glob(f"*{SPILL_SUFFIX}")):
            claimed = self._claim(path)
            if claimed is not None:
                self.claimed.append(claimed)

    def _claim(self, path: Path) -> Claimed | None:
        """Lock and rename a spill file nobody holds; None when it is someone else's."""
        if any(path == p for p, _ in self.claimed):
            return None
        try:
            handle = path.open("rb")  # bytes: each line is decoded alone (read_rows)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()  # a live process is writing or replaying it
            return None
        target = path.with_name(f"replay-{os.getpid()}-{uuid.uuid4().hex[:12]}{SPILL_SUFFIX}")
        try:
            path.rename(target)
        except FileNotFoundError:
            handle.close()  # another process claimed (or finished) it first
            return None
        log.info("replaying prediction log spill file %s as %s", path.name, target.name)
        return target, handle

    def replay_claimed(
        self,
        write: Sink,
        batch_size: int,
        go_on: Callable[[], bool],
        deadline: float | None,
        report: Callable[[Replayed], None],
    ) -> bool:
        """Replay claimed files in order, deleting each one done, while `go_on()` says so;
        on a failure release them all (unlocked, any process may claim them later) and
        return False. `report` hears what each file's replay did."""
        while self.claimed and go_on():
            path, handle = self.claimed[0]
            outcome = replay_file(path, handle, write, batch_size, deadline)
            report(outcome)
            if not outcome.complete:
                break
            self.claimed.pop(0)
            path.unlink(missing_ok=True)
            handle.close()
        if not self.claimed:
            return True
        self.release_claimed()
        return False

    def release_claimed(self) -> None:
        """Unlock every claimed file (kept on disk): any process may claim them later."""
        for _, handle in self.claimed:
            handle.close()
        self.claimed = []

    def close(self) -> None:
        """Release everything: the own file and the claimed ones stay for a later replay."""
        self.close_own()
        self.release_claimed()
