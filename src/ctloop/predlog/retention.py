"""Retention of the prediction log: whole old days dropped, never what the monitor still reads.

A log that only grows fills the disk and slows every read of it (at 300 requests/s a day
holds 26M rows). Rows older than `keep_days` whole days (UTC midnight boundaries, so a
day is kept or dropped whole) go. On MariaDB/MySQL the log is partitioned by day and an
expired day that holds only this view's rows is dropped as a partition (its file removed,
whatever its size; `ctloop.store.partitions`). Whatever is left (SQLite, a day other
views share, rows older than the first day partition) is deleted in chunks of
`chunk_rows`, each in its own short transaction, so the serving writers' inserts never
wait behind one long delete and an interrupted prune has deleted whole chunks, never half
of one.

What the monitor and the live gate read sets a floor: live accuracy looks back
`drift.accuracy_window_days`, a live trial reads its log since it began (at most
`rollout.max_trial_days`); a shorter retention is refused, naming both.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError

from ctloop.errors import CtloopError, StoreUnavailableError
from ctloop.features.view import FeatureView
from ctloop.predlog.store import PredictionLog
from ctloop.store import partitions

CHUNK_ROWS = 10_000
logger = logging.getLogger(__name__)  # (`log` is the prediction log here)


class RetentionError(CtloopError):
    """A retention shorter than what the monitor still reads."""


@dataclass(frozen=True)
class Pruned:
    """What one prune did: the view, rows older than `before` gone, how many."""

    view: str
    before: dt.datetime
    deleted: int
    dry_run: bool = False
    days_dropped: int = 0  # of `deleted`, whole day partitions dropped (MariaDB/MySQL)

    @property
    def days_text(self) -> str:
        """What the check and the CLI say of the days dropped ("" when none was)."""
        if not self.days_dropped:
            return ""
        return f"{self.days_dropped} whole day{'s' * (self.days_dropped > 1)} dropped"


def min_keep_days(view: FeatureView) -> int:
    """The fewest whole days of log the view's monitor and live gate still read, plus the
    day in progress."""
    return max(view.drift.accuracy_window_days, math.ceil(view.rollout.max_trial_days)) + 1


def check_keep(view: FeatureView, keep_days: int) -> None:
    """Refuse a retention shorter than what the view's monitor reads (RetentionError)."""
    floor = min_keep_days(view)
    if keep_days < floor:
        raise RetentionError(
            f"log retention of {keep_days} days is too short for view '{view.name}': its "
            f"monitor reads {view.drift.accuracy_window_days} days back "
            f"(drift.accuracy_window_days) and a live trial up to "
            f"{view.rollout.max_trial_days:g} days (rollout.max_trial_days); keep at least "
            f"{floor} days"
        )


def cutoff(keep_days: int, now: dt.datetime) -> dt.datetime:
    """The first moment kept: midnight (UTC, naive like the log) `keep_days` days ago."""
    return dt.datetime.combine(now.date() - dt.timedelta(days=keep_days), dt.time())


def prune(
    log: PredictionLog,
    view: FeatureView,
    keep_days: int,
    now: dt.datetime,
    dry_run: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
    keep_from: dt.datetime | None = None,
) -> Pruned:
    """Delete the view's log rows older than `keep_days` whole days before `now` (naive
    UTC), but nothing from `keep_from` on (where the view's next check starts reading: a
    window too small to judge is read again, with the traffic after it, however old);
    with `dry_run` only count them. `progress(deleted so far)` after each chunk."""
    check_keep(view, keep_days)
    before = cutoff(keep_days, now)
    if keep_from is not None:
        before = min(before, keep_from)
    if dry_run:
        return Pruned(view.name, before, log.count(view.name, before=before), dry_run=True)
    deleted, days = 0, set()
    layout = log.layout(view.name)
    names = [log.table.name] + ([] if layout is None else [layout.table.name])
    for name in names:
        try:
            for day, n in partitions.drop_expired(log.db, view.name, before, table=name):
                deleted += n
                if n:  # an empty day's partition goes too, but dropped no row of the view
                    days.add(day)
                if progress is not None:
                    progress(deleted)
        except (TimeoutError, DBAPIError, StoreUnavailableError) as exc:  # long query, lock
            logger.warning("%s of %s: day partitions not dropped (%s); the rows go by "
                           "chunked DELETE", name, view.name, _short(exc))  # fmt: skip
    for n in log.delete_before(view.name, before, chunk_rows):
        deleted += n
        if progress is not None:
            progress(deleted)
    for name in names:
        try:  # the days to come, while at it; a row past them still lands (in p_future)
            partitions.ensure_ahead(log.db, table=name)
        except (TimeoutError, DBAPIError, StoreUnavailableError) as exc:
            logger.warning("%s: day partitions ahead not made (%s)", name, _short(exc))
    return Pruned(view.name, before, deleted, days_dropped=len(days))


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__
