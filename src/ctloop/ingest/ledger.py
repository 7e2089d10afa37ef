"""Ingestion's bookkeeping in the feature store: the file ledger, the rejected rows, the
ingest runs and the SQL sources' watermarks (tables defined in `ctloop.store.tables`,
created by `ctloop init-db`).

Writes that belong to a batch take the batch's open connection, so the rows, the ledger
entry, the rejects and the watermark commit in one transaction: a crash leaves either
all of them or none, and a file or an interval is never half taken.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ctloop.features.frames import Problem
from ctloop.store import tables
from ctloop.store.dates import utc_now
from ctloop.store.features import FeatureStore

TAKEN_OUTCOMES = ("taken", "partial")
"""Ledger outcomes that mean the file's rows are in the store: its checksum is not taken
again. A rejected file can be fixed and dropped again (its checksum changes), or dropped
unchanged after the view changed: rejection never blocks a replay."""


@dataclass(frozen=True)
class FileEntry:
    """One ledger row: a file, what became of it, and where it went."""

    feature_view: str
    source: str
    file_name: str
    sha256: str
    size_bytes: int
    rows_read: int
    rows_taken: int
    rows_rejected: int
    outcome: str
    reason: str | None
    moved_to: str
    run_id: str


@dataclass(frozen=True)
class RunEntry:
    """What one source did in one ingest run (one row of `ingest_runs`)."""

    feature_view: str
    source: str
    kind: str
    interval_start: dt.datetime | None
    interval_end: dt.datetime | None
    run_id: str
    batches: int
    taken: int
    rejected: int
    duplicates: int
    late_labels: int


def _table(store: FeatureStore, name: str) -> sa.Table:
    return store.metadata.tables[name]


def taken_before(store: FeatureStore, view: str, source: str, sha256: str) -> int | None:
    """Rows landed from a file with this checksum (None: never taken)."""
    ledger = _table(store, tables.INGEST_FILES)
    query = sa.select(ledger.c.rows_taken).where(
        ledger.c.feature_view == view,
        ledger.c.source == source,
        ledger.c.sha256 == sha256,
        ledger.c.outcome.in_(TAKEN_OUTCOMES),
    )
    with store.connect() as conn:
        row = conn.execute(query.limit(1)).first()
    return None if row is None else int(row[0])


def record_file(conn: Connection, store: FeatureStore, entry: FileEntry) -> None:
    """Add a file to the ledger (inside the batch's transaction when rows landed)."""
    conn.execute(
        sa.insert(_table(store, tables.INGEST_FILES)), [{**asdict(entry), "taken_at": utc_now()}]
    )


def record_rejects(
    conn: Connection,
    store: FeatureStore,
    *,
    view: str,
    source: str,
    batch: str,
    run_id: str,
    problems: Sequence[Problem],
) -> None:
    """One row per bad value: which batch (file or SQL interval), row, column and why."""
    if not problems:
        return
    now = utc_now()
    rows = [
        {"feature_view": view, "source": source, "batch": batch[-512:], "row_number": p.row,
         "column_name": p.column[:255], "reason": p.reason, "run_id": run_id, "created_at": now}
        for p in problems
    ]  # fmt: skip
    conn.execute(sa.insert(_table(store, tables.INGEST_REJECTS)), rows)


def record_runs(store: FeatureStore, entries: Sequence[RunEntry]) -> None:
    """The run's summary per source, for `ctloop status` and whoever audits the loads."""
    if not entries:
        return
    now = utc_now()
    with store.begin() as conn:
        conn.execute(
            sa.insert(_table(store, tables.INGEST_RUNS)),
            [{**asdict(e), "finished_at": now} for e in entries],
        )


def watermark(store: FeatureStore, view: str, source: str) -> dt.datetime | None:
    """The highest value of a SQL source's incremental column landed so far."""
    marks = _table(store, tables.INGEST_WATERMARKS)
    query = sa.select(marks.c.watermark).where(
        marks.c.feature_view == view, marks.c.source == source
    )
    with store.connect() as conn:
        value = conn.execute(query).scalar_one_or_none()
    return value


def advance_watermark(
    conn: Connection, store: FeatureStore, view: str, source: str, value: dt.datetime
) -> None:
    """Move the watermark forward to `value` (never back: a re-run of an old interval
    leaves it where it is)."""
    marks = _table(store, tables.INGEST_WATERMARKS)
    key = (marks.c.feature_view == view) & (marks.c.source == source)
    current = conn.execute(sa.select(marks.c.watermark).where(key)).scalar_one_or_none()
    now = utc_now()
    if current is None:
        conn.execute(
            sa.insert(marks),
            [{"feature_view": view, "source": source, "watermark": value, "updated_at": now}],
        )
    elif value > current:
        conn.execute(sa.update(marks).where(key).values(watermark=value, updated_at=now))


def interval_taken_before(
    store: FeatureStore, view: str, source: str, start: dt.datetime, end: dt.datetime
) -> bool:
    """Whether an earlier run already landed rows of this source for this exact interval
    (a re-run: its rows count as duplicates)."""
    runs = _table(store, tables.INGEST_RUNS)
    query = sa.select(sa.func.count()).where(
        runs.c.feature_view == view,
        runs.c.source == source,
        runs.c.interval_start == start,
        runs.c.interval_end == end,
        runs.c.taken > 0,
    )
    with store.connect() as conn:
        return bool(conn.execute(query).scalar_one())


def last_runs(store: FeatureStore, view: str, limit: int = 10) -> list[dict]:
    """The newest ingest runs of a view, newest first (empty before `init-db`)."""
    with store.connect() as conn:
        if not sa.inspect(conn).has_table(tables.INGEST_RUNS):
            return []
        runs = _table(store, tables.INGEST_RUNS)
        query = (
            sa.select(runs)
            .where(runs.c.feature_view == view)
            .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
            .limit(limit)
        )
        return [dict(row._mapping) for row in conn.execute(query)]


def rejects_of(store: FeatureStore, view: str, batch: str | None = None) -> list[dict]:
    """The rejected rows of a view (of one batch when given), in row order."""
    table = _table(store, tables.INGEST_REJECTS)
    query = sa.select(table).where(table.c.feature_view == view)
    if batch is not None:
        query = query.where(table.c.batch == batch)
    with store.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query.order_by(table.c.id))]


def ledger_of(store: FeatureStore, view: str) -> list[dict]:
    """The ledger rows of a view, oldest first."""
    table = _table(store, tables.INGEST_FILES)
    query = sa.select(table).where(table.c.feature_view == view).order_by(table.c.id)
    with store.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
