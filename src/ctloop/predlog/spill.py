"""Spill files: where the prediction-log writer keeps rows the database cannot take now.

One row per line (JSON lines). Spill files are per process (pid and a random suffix in the
name) in a shared directory. A process holds an exclusive `flock` on every file it writes
or replays; a file nobody holds a lock on belongs to a process that died (or closed it),
and any process claims it by locking it and renaming it. The rename is the claim: of two
processes racing for the same file, only one rename succeeds. So a new worker replays what
a dead one left behind, and no file is replayed by two processes at once.

This module owns the files (format, locking, claiming, reading back); when to spill and
when to replay is the writer's policy (`ctloop.predlog.writer`).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from ctloop.predlog.row import encode_json, encode_row

log = logging.getLogger(__name__)

SPILL_SUFFIX = ".jsonl"

Claimed = tuple[Path, IO[str]]
"""A claimed spill file: its new name and the open, locked handle that holds the claim."""

Sink = Callable[[list[dict[str, Any]]], int]
"""Inserts rows in one transaction, skipping stored request ids; returns rows inserted."""


def batches(rows: Sequence[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Rows in lists of at most `size`: one insert transaction each."""
    for start in range(0, len(rows), size):
        yield list(rows[start : start + size])


@dataclass
class Replayed:
    """What replaying one claimed file did, for the writer's counters."""

    rows: int
    unreadable: int
    inserted: int = 0
    complete: bool = False  # every row went in: the file can go
    error: Exception | None = None  # the insert that failed (the database is down again)
    failed_rows: int = 0  # rows of the batch that failed


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
    short by a crash mid-write)."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:  # e.g. NaN written by the json fallback
        data = json.loads(line)
    if not isinstance(data, dict) or "request_id" not in data:
        raise ValueError("not a prediction log row")
    if isinstance(data.get("created_at"), str):
        data["created_at"] = dt.datetime.fromisoformat(data["created_at"])
    return data


def read_rows(path: Path, handle: IO[str]) -> tuple[list[dict[str, Any]], int]:
    """Every readable row of a claimed file, and how many lines were not rows (skipped and
    reported here; the writer counts them as lost)."""
    handle.seek(0)
    rows, bad = [], 0
    for line in handle:
        if not line.strip():
            continue
        try:
            rows.append(from_line(line))
        except ValueError:  # a line cut short by a crash mid-write
            bad += 1
    if bad:
        log.warning("%s: skipped %d unreadable line(s)", path.name, bad)
    return rows, bad


def replay_file(
    path: Path, handle: IO[str], write: Sink, batch_size: int, deadline: float | None
) -> Replayed:
    """Insert every row of a claimed file in batches, until done, a failed insert, or the
    deadline. What went in before a stop is counted; the file itself is left to the caller
    (deleted when complete, else kept: the sink skips stored request ids, so the next
    attempt is safe)."""
    rows, bad = read_rows(path, handle)
    outcome = Replayed(len(rows), bad)
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
        self._own: Claimed | None = None
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
        """Append lines to this process's file (opened and locked on first use) and flush
        them to the OS, so they survive a crash of this process. Raises OSError."""
        with self._lock:
            if self._own is None:
                name = f"spill-{os.getpid()}-{time.time_ns()}-{uuid.uuid4().hex[:8]}{SPILL_SUFFIX}"
                path = self.directory / name
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = path.open("a", encoding="utf-8")
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._own = (path, handle)
            handle = self._own[1]
            handle.write(text)
            handle.flush()

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
            log.error("could not spill %d prediction log rows (%s): %s", len(lines), reason,
                      exc)  # fmt: skip
            return 0, len(rows)
        return len(lines), lost

    def close_own(self) -> None:
        """Close this process's spill file; unlocked, it becomes claimable for replay."""
        with self._lock:
            self._close_own()

    def _close_own(self) -> None:
        if self._own is not None:
            path, handle = self._own
            handle.close()
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
            handle = path.open("r", encoding="utf-8")
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
