"""The journal: every answered row is on disk before its answer leaves the process.

The writer's queue lives in memory, so a `kill -9` (an OOM kill, a crashed worker) lost the
rows it held: 8-16% of the last seconds' answers in issue 18's test. The journal closes
that gap. The request thread appends its rows to this process's journal segment, in the
spill-file format, before the response is returned; the segment is deleted once every row
in it is in the table (or in a spill file, which is just as durable).

A segment is an ordinary spill file (`journal-<pid>-...jsonl` in the spill folder, 0600,
held under an exclusive `flock` while this process lives): when the process dies the lock
goes with it, and any worker's orphan scan (at once on start, then every minute) claims
and replays it like a spill file. Rows already stored are skipped by request id, so a
replayed journal never doubles a row.

Durability: `write` hands the bytes to the kernel (one `write` call per request), which
is what survives a process crash. It does not `fsync`: that would cost a disk flush per
answer. Instead the writer thread calls `sync` every `fsync_seconds` (group commit), so a
machine crash or power loss can lose the answers of the last `fsync_seconds` before it,
plus whatever the disk itself had not persisted. `fsync_seconds=0` syncs every write.

Segments rotate by rows and by age, so each one goes soon after its rows are delivered and
the folder holds little more than the rows in flight. This module owns the segments; the
writer (`ctloop.predlog.writer`) says when their rows are delivered.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ctloop.predlog.spill import SPILL_SUFFIX, open_locked, write_lines

log = logging.getLogger(__name__)

JOURNAL_PREFIX = "journal-"


@dataclass
class Segment:
    """One journal file: its rows are those the writer accepted up to `sealed_at`."""

    path: Path
    fd: int
    started: float
    rows: int = 0
    sealed_at: int | None = None  # rows the writer had queued when this segment was sealed
    keep: bool = False  # some rows of its time may be lost elsewhere: leave it for replay


class Journal:
    """This process's journal segments. `lock` is the writer's: `write` and `seal` run
    under it, so a segment's rows are exactly the rows queued before its seal."""

    def __init__(
        self,
        directory: Path,
        fsync_seconds: float = 1.0,
        rotate_rows: int = 5000,
        rotate_seconds: float = 2.0,
    ) -> None:
        self.directory = directory
        self.fsync_seconds = fsync_seconds
        self.rotate_rows = rotate_rows
        self.rotate_seconds = rotate_seconds
        self.lock = threading.Lock()
        self.current: Segment | None = None
        self.sealed: list[Segment] = []
        self.errors = 0
        self._dirty: Segment | None = None  # written since its last fsync
        self._next_sync = 0.0
        self._closed = False

    def write(self, data: bytes) -> None:
        """Append whole lines to the current segment (opened on first use). Caller holds
        `lock`. Raises OSError; a segment a failed write touched is sealed, so no later
        line is glued to a cut one."""
        if self._closed:
            return
        if self.current is None:
            name = f"{JOURNAL_PREFIX}{os.getpid()}-{time.time_ns()}-{uuid.uuid4().hex[:8]}"
            path = self.directory / f"{name}{SPILL_SUFFIX}"
            self.current = Segment(path, open_locked(path), time.monotonic())
        segment = self.current
        try:
            write_lines(segment.fd, data)
        except OSError:
            self.errors += 1
            segment.keep = True  # its rows may be needed: replay it rather than delete it
            raise
        finally:
            segment.rows += data.count(b"\n")
        if self.fsync_seconds == 0:
            os.fsync(segment.fd)
        else:
            self._dirty = segment

    def seal(self, queued: int, force: bool = False) -> None:
        """Start a new segment when the current one is big or old enough (or `force`).
        Caller holds `lock`; `queued` counts the rows the writer queued so far."""
        segment = self.current
        if segment is None or segment.rows == 0:
            return
        if force or segment.rows >= self.rotate_rows or segment.keep or (
            time.monotonic() - segment.started >= self.rotate_seconds
        ):  # fmt: skip
            segment.sealed_at = queued
            self.sealed.append(segment)
            self.current = None

    def keep_all(self) -> None:
        """Rows were lost elsewhere (a spill that failed): keep every live segment for a
        replay instead of deleting it. Caller holds `lock` or is the writer thread."""
        for segment in [*self.sealed, *([self.current] if self.current else [])]:
            segment.keep = True

    def release(self, delivered: int) -> None:
        """Drop the sealed segments whose rows were all delivered (`delivered` counts rows
        the writer took off its queue and wrote or spilled). Writer thread only."""
        while self.sealed and (self.sealed[0].sealed_at or 0) <= delivered:
            self._drop(self.sealed.pop(0))

    def sync(self) -> None:
        """Fsync what was written since the last call, at most every `fsync_seconds`
        (writer thread): the group commit that bounds a machine crash's loss."""
        now = time.monotonic()
        segment = self._dirty
        if segment is None or now < self._next_sync:
            return
        self._next_sync = now + self.fsync_seconds
        self._dirty = None
        try:
            os.fsync(segment.fd)
        except OSError as exc:  # a closed segment (delivered meanwhile) or a failing disk
            log.debug("journal fsync of %s: %s", segment.path.name, exc)

    def close(self, discard: bool) -> None:
        """At shutdown: delete every segment (`discard`: all rows delivered) or leave them,
        unlocked, for the next process to replay. Caller holds `lock`."""
        self._closed = True
        segments = [*self.sealed, *([self.current] if self.current else [])]
        self.sealed, self.current, self._dirty = [], None, None
        for segment in segments:
            segment.keep = segment.keep or not discard
            self._drop(segment)

    def _drop(self, segment: Segment) -> None:
        """Delete a delivered segment; one marked `keep` is only closed, so its unlocked
        file is claimed and replayed (stored rows skipped) like a dead process's."""
        if self._dirty is segment:
            self._dirty = None
        if segment.keep:
            log.warning("prediction log journal %s kept for replay (%d rows)",
                        segment.path.name, segment.rows)  # fmt: skip
        else:
            segment.path.unlink(missing_ok=True)  # unlinked while still locked: never claimed
        os.close(segment.fd)
