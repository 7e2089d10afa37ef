"""The prediction-log writer's accounting: what happened to every row it accepted.

"Every answered request ends up as exactly one row" is checked with these numbers (the
service's /metadata and Prometheus counters, the load tests): every accepted row is
eventually written, spilled or lost, and `flush` waits until that sum catches up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

COUNTERS = ("queued", "written", "spilled", "replayed", "duplicates", "failed", "quarantined",
            "write_errors", "journal_errors")  # fmt: skip
"""queued: rows accepted; written: rows inserted from the live queue; spilled: rows put in a
spill file; replayed: rows inserted from spill files; duplicates: rows the sink skipped as
already stored (safe replays); failed: rows that could be neither written nor spilled, or
whose spill line was damaged (lost, should stay 0); quarantined: damaged spill lines kept
under `<spill_dir>/quarantine/` (counted in `failed` too); write_errors: failed insert
attempts; journal_errors: failed journal appends (the rows went on; only a kill -9 before
they are written could lose them)."""


class Counters:
    """Thread-safe counts, and a hook (a metrics counter) told of every increase."""

    def __init__(self, on_count: Callable[[str, int], None] | None = None) -> None:
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._handled = 0  # rows written, spilled or lost: flush() waits for it to reach queued
        self._lock = threading.Lock()
        self._on_count = on_count

    def add(self, name: str, n: int, handled: int = 0) -> None:
        """Count `n` more under `name`, of which `handled` rows are now settled."""
        if n == 0 and handled == 0:
            return
        with self._lock:
            self._counts[name] += n
            self._handled += handled
        if self._on_count is not None and n:
            try:
                self._on_count(name, n)
            except Exception:  # metrics must never break logging
                log.exception("prediction log counter hook failed")

    def settled(self) -> bool:
        """Whether every accepted row was written, spilled or lost."""
        with self._lock:
            return self._handled >= self._counts["queued"]

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts taken under the lock, so a reader never sees a half update."""
        with self._lock:
            return dict(self._counts)
