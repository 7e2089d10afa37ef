"""The dates a point-in-time read turns on: where "as of" a day stands, and parsing a day.

Shared by the training-set reads, the status counts and the pipeline's callers, so a run
"as of D" means the same instant everywhere.
"""

from __future__ import annotations

import datetime as dt

from ctloop.errors import CtloopError


def utc_now() -> dt.datetime:
    """Now, as naive UTC: how every timestamp column holds time (MariaDB's DATETIME has no
    zone), so a stored time and a fresh one always compare in the same zone."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def as_of_instant(as_of: dt.date) -> dt.datetime:
    """The moment a run "as of" date D stands at: the very start of D (naive UTC)."""
    return dt.datetime.combine(as_of, dt.time.min)


def to_date(value: dt.date | str) -> dt.date:
    """Accept a date or an ISO string, and say which when neither parses."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise CtloopError(f"'{value}' is not a date (expected YYYY-MM-DD)") from exc
