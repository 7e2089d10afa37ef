"""The prediction-log writer: every answered request becomes exactly one row, off the request
path, whatever the database is doing.

A request hands its row to `submit`, which only puts it on a bounded in-memory queue (a few
microseconds, never blocks, never raises). One background thread per process drains the
queue in batches (`batch_size` rows or `flush_seconds` after the first, whichever comes
first) and inserts each batch in one transaction through the sink, normally
`PredictionLog.write` (`ctloop.predlog.store`).

When the database is down or slow, requests are still answered:

- a batch whose insert fails is appended to a spill file (JSON lines) right away, so it
  survives a crash of this process; while the database stays down (`retry_seconds`
  between attempts) later batches go straight to the spill file;
- a slow database makes rows wait in the queue; when the queue is full the request thread
  appends its row to the spill file itself instead of waiting;
- once a write or a probe (a ping) succeeds again, spill files are replayed in batches.
  The sink skips request ids already stored, so replaying a file twice (a crash halfway
  through a replay, a batch that committed although its connection then failed) can never
  write a row twice.

Spill files are per process and claimed by renaming under a lock, so a new worker replays
what a dead one left behind and no file is replayed by two processes at once: see
`ctloop.predlog.spill`, which owns the files; this module decides when to use them.

`close` (called from the service's shutdown hook, and at interpreter exit as a fallback)
stops taking rows, writes or spills everything still queued, and releases the files.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctloop.predlog.counters import Counters
from ctloop.predlog.journal import Journal
from ctloop.predlog.spill import Replayed, Sink, SpillFiles, batches, to_line
from ctloop.redact import redact
from ctloop.store.dates import utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriterConfig:
    """How the writer batches, bounds memory and spills."""

    spill_dir: Path
    batch_size: int = 500
    flush_seconds: float = 1.0
    max_queue: int = 10_000
    retry_seconds: float = 5.0
    orphan_scan_seconds: float = 60.0
    close_timeout: float = 20.0
    journal: bool = True  # rows on disk before the answer leaves (ctloop.predlog.journal)
    journal_fsync_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_queue < 1:
            raise ValueError("batch_size and max_queue must be positive")
        if self.flush_seconds <= 0 or self.retry_seconds <= 0:
            raise ValueError("flush_seconds and retry_seconds must be positive")
        if self.journal_fsync_seconds < 0:
            raise ValueError("journal_fsync_seconds must be 0 (every write) or more")


class PredictionLogWriter:
    """One process's prediction-log writer: a bounded queue, a thread, spill files."""

    def __init__(
        self,
        sink: Sink,
        config: WriterConfig,
        *,
        prepare: Callable[[], None] | None = None,
        probe: Callable[[], None] | None = None,
        on_count: Callable[[str, int], None] | None = None,
    ) -> None:
        self.sink = sink
        self.config = config
        self._prepare = prepare
        self._probe = probe
        # A deque, not a queue.Queue: append/popleft are atomic under the GIL and wake
        # nobody. queue.Queue notifies the waiting writer on every put, which costs a
        # thread switch and a GIL hand-off per row and cut batch throughput by half.
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = threading.Event()  # set when a full batch is waiting, or on close
        self._batch_started: float | None = None  # when the oldest queued row arrived
        self._counters = Counters(on_count)
        self._count = self._counters.add
        self._files = SpillFiles(config.spill_dir)
        # The journal's lock is also what makes "a segment's rows were queued before its
        # seal" true: submit_many journals and queues under it (a no-op lock without one).
        self._journal = (
            Journal(config.spill_dir, config.journal_fsync_seconds) if config.journal else None
        )
        self._lock = self._journal.lock if self._journal is not None else threading.Lock()
        self._enqueued = 0  # rows put on the queue, ever
        self._delivered = 0  # rows the thread took off the queue and wrote or spilled, ever
        self._inflight: list[dict[str, Any]] = []
        self._db_ok = True
        self._next_try = 0.0
        self._next_scan = 0.0  # scan for orphaned spill files at once on start
        self._stop = threading.Event()
        self._closed = False
        self._replay_deadline = 0.0  # set by close(): how long shutdown may replay
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.last_error_at: dt.datetime | None = None

    # ------------------------------------------------------------------ public

    def start(self) -> PredictionLogWriter:
        """Start the background thread (idempotent)."""
        if self._thread is None:
            self.config.spill_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._thread = threading.Thread(
                target=self._run, name="prediction-log-writer", daemon=True
            )
            self._thread.start()
            atexit.register(self.close)
        return self

    def submit(self, row: dict[str, Any]) -> None:
        """Take one row for the log; never blocks the request, never raises."""
        self.submit_many([row])

    def submit_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """Take the rows of one request (a batch call answers many records) at once.

        With the journal on, the rows are in this process's journal segment (handed to the
        kernel) when this returns, so the answer the caller sends next survives a kill -9
        of the process. A journal that cannot be written (a full disk) is reported and the
        rows go on as before: the answer is not refused for it.

        Counted once per call, not once per row: at batch throughput the counter hook
        (a Prometheus multiprocess counter) cost as much as the insert itself.
        """
        if not rows:
            return
        self._count("queued", len(rows))
        data = self._journal_lines(rows) if self._journal is not None else None
        with self._lock:
            if data is not None and self._journal is not None:
                try:
                    self._journal.write(data)
                except OSError as exc:
                    self._count("journal_errors", 1)
                    self.last_error = f"journal: {type(exc).__name__}: {exc}"[:500]
                    self.last_error_at = utc_now()
                    log.error("prediction log journal write failed: %s", exc)
            if self._closed:
                self._spill_rows(list(rows), "writer closed")
                return
            room = self.config.max_queue - len(self._queue)
            if room < len(rows):
                # the database is slower than the traffic: keep the rows, not the request
                # waiting
                overflow = rows[max(room, 0) :]
                rows = rows[: max(room, 0)]
                self._spill_rows(list(overflow), "queue full")
            self._queue.extend(rows)
            self._enqueued += len(rows)
        if len(self._queue) >= self.config.batch_size:
            self._wake.set()

    @staticmethod
    def _journal_lines(rows: Sequence[dict[str, Any]]) -> bytes | None:
        """The rows as journal lines; a row that cannot be encoded is left out here (the
        spill path reports it if it ever needs to)."""
        lines = []
        for row in rows:
            with contextlib.suppress(TypeError, ValueError):
                lines.append(to_line(row))
        return "".join(lines).encode("utf-8") if lines else None

    @property
    def pending(self) -> int:
        """Rows waiting in memory (cheap: for a gauge)."""
        return len(self._queue)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted row was written or spilled; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._counters.settled():
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float | None = None) -> None:
        """Stop, write (or spill) everything queued, release the spill files. Idempotent."""
        if self._closed:
            return
        with self._lock:  # no row enters the queue after this: later ones are spilled
            self._closed = True
        timeout = self.config.close_timeout if timeout is None else timeout
        self._replay_deadline = time.monotonic() + 0.75 * timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is not None and self._thread.is_alive():
            # stuck in a database call: keep its batch and the queue on disk. If the
            # stuck insert commits after all, replay skips those rows (same request ids).
            log.warning("prediction log writer did not stop in %.1fs; spilling", timeout)
            leftover = list(self._inflight) + self._pop()
            self._spill_rows(leftover, "shutdown timeout")
            stuck = True
        else:  # also rows a request added after the thread's last look at the queue
            self._deliver_all(self._pop())
            stuck = False
        if self._journal is not None:
            # every row was written or spilled (or counted lost, which keeps its segment):
            # the journal goes; after a stuck thread it stays for the next process
            with self._lock:
                self._journal.close(discard=not stuck)
        self._files.close()
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        log.info("prediction log writer closed: %s", self.stats())

    def stats(self) -> dict[str, Any]:
        """Counters and state of this process's writer (for /metadata)."""
        counts = self._counters.snapshot()
        own = self._files.own_name
        return {
            **counts,
            "pending": len(self._queue),
            "database_ok": self._db_ok,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None,
            "spill_file": own,
            "journal": self._journal is not None,
            "spill_dir": str(self.config.spill_dir),
            "pid": os.getpid(),
        }

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            try:
                batch = self._take()
                if batch:
                    try:
                        self._deliver(batch)
                    finally:
                        self._delivered += len(batch)
                self._journal_tick()
                if self._stop.is_set() and not self._queue:
                    break
                self._maybe_replay()
            except Exception:  # a bug here must not end logging for the process's lifetime
                log.exception("prediction log writer error; carrying on")
                time.sleep(0.5)
        try:
            self._replay_at_shutdown()
        except Exception:  # the file stays on disk for the next process to replay
            log.exception("prediction log replay at shutdown failed")
        self._files.close_own()  # close() may have given up on us: release what we opened

    def _journal_tick(self) -> None:
        """Rotate the journal, delete the segments whose rows are all delivered, and fsync
        the newest writes at most every `journal_fsync_seconds`."""
        if self._journal is None:
            return
        with self._lock:
            self._journal.seal(self._enqueued)
        self._journal.release(self._delivered)
        self._journal.sync()

    def _replay_at_shutdown(self) -> None:
        """At shutdown, put what this process spilled (while the database was down or
        behind) into the table: its own spill file and any file it had claimed, if the
        database answers, until `close` has used three quarters of its timeout.

        Without this a worker stopped after an overload left its rows on disk until the
        next process adopted the file. What is not replayed in time stays on disk, renamed
        and unlocked once the process exits: the next process claims it, and rows already
        inserted are skipped by request id.
        """
        if not self._db_ok:
            return
        self._files.claim_own()
        self._replay_claimed(self._replay_deadline)

    def _take(self) -> list[dict[str, Any]]:
        """Up to batch_size rows, once a batch is full or flush_seconds after the oldest
        queued row arrived. Waits in slices of at most 0.25 s to notice close and replay."""
        if len(self._queue) < self.config.batch_size and not self._stop.is_set():
            now = time.monotonic()
            if self._queue and self._batch_started is None:
                self._batch_started = now
            if self._batch_started is None:
                wait = 0.25
            else:
                wait = min(0.25, self._batch_started + self.config.flush_seconds - now)
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
                if len(self._queue) < self.config.batch_size and not self._stop.is_set():
                    started = self._batch_started
                    if started is None or time.monotonic() < started + self.config.flush_seconds:
                        return []
        batch = self._pop(self.config.batch_size)
        self._batch_started = time.monotonic() if self._queue else None
        return batch

    def _pop(self, limit: int | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        while self._queue and (limit is None or len(rows) < limit):
            rows.append(self._queue.popleft())
        return rows

    def _deliver_all(self, rows: list[dict[str, Any]]) -> None:
        for batch in batches(rows, self.config.batch_size):
            self._deliver(batch)

    def _deliver(self, rows: list[dict[str, Any]]) -> None:
        """Insert one batch, or spill it when the database is down or refuses it.

        The rows go to the sink as the service built them: the store encodes their JSON
        fields only where its insert path needs text, and `_spill_rows` reports any row
        that cannot be encoded at all while keeping the rest.
        """
        self._inflight = rows
        try:
            if not self._db_ok and time.monotonic() < self._next_try:
                self._spill_rows(rows, "database down")
                return
            try:
                inserted = self._write(rows)
            except Exception as exc:  # any failure: the rows are kept on disk, not dropped
                self._failed_write(exc, f"insert of {len(rows)} rows")
                self._spill_rows(rows, "insert failed")
                return
            self._count("written", inserted, handled=len(rows))
            if len(rows) > inserted:
                self._count("duplicates", len(rows) - inserted)
        finally:
            self._inflight = []

    def _write(self, rows: list[dict[str, Any]]) -> int:
        if self._prepare is not None:
            self._prepare()
            self._prepare = None
        inserted = self.sink(rows)
        if not self._db_ok:
            log.info("prediction log database is reachable again")
        self._db_ok = True
        return inserted

    def _failed_write(self, exc: BaseException, what: str) -> None:
        self._count("write_errors", 1)
        first = self._db_ok
        self._db_ok = False
        self._next_try = time.monotonic() + self.config.retry_seconds
        self.last_error = redact(f"{type(exc).__name__}: {exc}")[:500]
        self.last_error_at = utc_now()
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "prediction log %s failed (%s); spilling to %s, retrying every %.1fs",
                what, self.last_error, self.config.spill_dir,
                self.config.retry_seconds)  # fmt: skip

    # ------------------------------------------------------------------ spill files

    def _spill_rows(self, rows: list[dict[str, Any]], reason: str) -> None:
        """Keep rows on disk; a row that cannot be encoded, or a disk that refuses them, is
        counted as lost (`failed`, which should stay 0)."""
        if rows:
            spilled, lost = self._files.spill(rows, reason)
            if lost and self._journal is not None:
                # the journal still holds them: keep its segments for a replay (stored
                # rows are skipped) rather than delete them as delivered
                self._journal.keep_all()
            self._count("failed", lost, handled=lost)
            self._count("spilled", spilled, handled=spilled)

    def _maybe_replay(self) -> None:
        """Replay spill files once the database answers again, and adopt orphans.

        While the database is down nothing is claimed (the `probe`, normally a ping, says
        when it is back), so a process cut off from the database never sits on files a
        healthy one could replay. This process's own spill file is rotated and replayed
        only after the claimed ones went in.

        Live rows go first: while a full batch is waiting in the queue there is no replay.
        Replaying a large file while traffic exceeds what the database takes would only
        overflow the queue into a new spill file (measured: a worker under saturating batch
        load spilled 90% of its rows that way); the files wait on disk until there is slack.
        """
        if self._stop.is_set() or len(self._queue) >= self.config.batch_size:
            return
        now = time.monotonic()
        if not self._db_ok and (now < self._next_try or not self._probe_ok()):
            return
        scan = now >= self._next_scan
        if not (scan or self._files.has_own):
            return
        if scan:
            self._next_scan = now + self.config.orphan_scan_seconds
            self._files.claim_orphans()
        if not self._replay_claimed() or not self._files.has_own:
            return
        if self._files.claim_own():
            self._replay_claimed()

    def _probe_ok(self) -> bool:
        if self._probe is None:
            return True  # the replay itself is the probe
        try:
            self._probe()
        except Exception as exc:  # still down: try again after retry_seconds
            self._failed_write(exc, "probe")
            return False
        log.info("prediction log database is reachable again")
        self._db_ok = True
        return True

    def _replay_claimed(self, deadline: float | None = None) -> bool:
        """Replay claimed files; False when one failed (all released). Without a deadline
        it stops when the writer is closing; with one (shutdown) it runs until the deadline
        instead."""

        def go_on() -> bool:
            return not self._stop.is_set() if deadline is None else time.monotonic() < deadline

        return self._files.replay_claimed(
            self._write, self.config.batch_size, go_on, deadline, self._replayed
        )

    def _replayed(self, outcome: Replayed) -> None:
        """Count what a file's replay did: what went in also when the rest of it waits."""
        self._count("replayed", outcome.inserted)
        if outcome.error is not None:
            self._failed_write(outcome.error, f"replay of {outcome.failed_rows} rows")
        if outcome.complete:
            self._count("duplicates", outcome.rows - outcome.inserted)
            # a damaged line's row is not in the table: lost (`failed`) even when its
            # bytes are kept in quarantine (`quarantined`, for a human to look at)
            self._count("failed", outcome.unreadable)
            self._count("quarantined", outcome.quarantined)
