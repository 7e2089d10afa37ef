"""The prediction log's day partitions on MariaDB/MySQL: made ahead of time, dropped whole.

Retention at volume is why. At 300 requests/s a day holds 26M log rows; deleting them
with DELETE writes undo and redo for every row and holds the table's purge thread for
minutes, while the serving writers keep inserting. With the table partitioned by day
(`RANGE (TO_DAYS(created_at))`), an expired day is one `ALTER TABLE ... DROP PARTITION`:
its file is removed, whatever its size.

The layout: `p_start` (everything before the first day partition), one `pYYYYMMDD` per
day, and `p_future` (MAXVALUE), so an insert never fails for want of a partition; a row
past the last day made lands in `p_future` and is moved to its day the next time the days
ahead are made (`ensure_days`, on `init-db`, each serving start and each prune). A day
partition holds rows logged before its end: that day's, and rows of days already dropped
(a late replay), so dropping it whole is right whenever its end is before the cutoff.

The log is shared by all views, a partition by all of them: a day is dropped only when
no other view has a row in it (checked under a write lock, so no insert slips in between);
otherwise the view's rows go by chunked DELETE as on an unpartitioned table. SQLite and
PostgreSQL keep the plain table.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ctloop.store import tables
from ctloop.store.engine import MYSQL_DIALECTS, Database

log = logging.getLogger(__name__)

START, FUTURE = "p_start", "p_future"
DAYS_AHEAD = 7  # day partitions made past today: a week without maintenance costs nothing
_DAY_NAME = re.compile(r"^p(\d{8})$")
# one process changes a database's partitions at a time (names are at most 64 characters)
_LOCK_NAME = "CONCAT('ctloop_log_parts:', LEFT(MD5(DATABASE()), 20))"
_LOCK_SECONDS = 60
# how long a drop or a reorganize waits behind a long query on the log; writers queue
# behind the waiting ALTER meanwhile, so this is also the longest stall it costs them
METADATA_WAIT_SECONDS = 3
# TO_DAYS(date) = the proleptic Gregorian ordinal + 365 (TO_DAYS('0000-01-01') = 1)
_TO_DAYS_OFFSET = 365


def to_days(day: dt.date) -> int:
    """MariaDB's TO_DAYS of a date (what the partitions' bounds hold)."""
    return day.toordinal() + _TO_DAYS_OFFSET


def day_name(day: dt.date) -> str:
    """The partition holding `day`'s rows."""
    return f"p{day:%Y%m%d}"


def utc_today() -> dt.date:
    """Today in UTC, the log's time zone."""
    return dt.datetime.now(dt.UTC).date()


def days_ahead(today: dt.date | None = None) -> list[dt.date]:
    """Yesterday (a clock a little behind), today and `DAYS_AHEAD` days after it."""
    today = today or utc_today()
    return _days(today - dt.timedelta(days=1), today + dt.timedelta(days=DAYS_AHEAD))


def partition_clause(days: Sequence[dt.date]) -> str:
    """`PARTITION BY` text for a log made with these day partitions (p_start below the
    first, p_future above the last; no days: p_start ends today)."""
    days = sorted(set(days))
    first = days[0] if days else utc_today()
    parts = [f"PARTITION {START} VALUES LESS THAN ({to_days(first)})"]
    parts += [_day_partition(d) for d in days]
    parts.append(f"PARTITION {FUTURE} VALUES LESS THAN MAXVALUE")
    return f"RANGE (TO_DAYS(created_at)) ({', '.join(parts)})"


def _day_partition(day: dt.date) -> str:
    return f"PARTITION {day_name(day)} VALUES LESS THAN ({to_days(day + dt.timedelta(days=1))})"


def supported(db: Database) -> bool:
    """Whether this database partitions the log (MariaDB/MySQL)."""
    return db.dialect in MYSQL_DIALECTS


def is_partitioned(conn: Connection, table: str = tables.PREDICTION_LOG) -> bool:
    """Whether a log table in this connection's database is partitioned."""
    return bool(_partitions(conn, table))


def unpartitioned_log(db: Database) -> bool:
    """Whether this MariaDB/MySQL database holds a log made before day partitions."""
    if not supported(db):
        return False
    with db.connect() as conn:
        return sa.inspect(conn).has_table(tables.PREDICTION_LOG) and not is_partitioned(conn)


def _partitions(conn: Connection, table: str) -> list[tuple[str, str]]:
    """(name, upper bound) of a log table's partitions, in order ([] when not
    partitioned)."""
    rows = conn.execute(
        sa.text(
            "SELECT PARTITION_NAME, PARTITION_DESCRIPTION FROM information_schema.PARTITIONS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t AND PARTITION_NAME IS NOT NULL "
            "ORDER BY PARTITION_ORDINAL_POSITION"
        ),
        {"t": table},
    )
    return [(str(name), str(bound)) for name, bound in rows]


def day_partitions(conn: Connection, table: str = tables.PREDICTION_LOG) -> list[dt.date]:
    """The days that have a partition of their own, oldest first."""
    return [_day(name) for name, _ in _partitions(conn, table) if _DAY_NAME.match(name)]


def _day(name: str) -> dt.date:
    return dt.datetime.strptime(name[1:], "%Y%m%d").date()


class _Lock:
    """MariaDB's named lock around a partition change (two monitors, or a monitor and a
    starting service, must not reorganize the same partition at once; named per database,
    so two stores on one server do not wait for each other), and with `metadata_wait` a
    short wait for the table's metadata lock: an ALTER queued behind a long read holds up
    every insert queued behind it (the server waits a year by default); past that many
    seconds it fails instead and the change is left for the next time."""

    def __init__(self, conn: Connection, metadata_wait: float | None = None) -> None:
        self.conn = conn
        self.metadata_wait = metadata_wait

    def __enter__(self) -> None:
        got = self.conn.execute(sa.text(f"SELECT GET_LOCK({_LOCK_NAME}, :s)"),
                                {"s": _LOCK_SECONDS}).scalar()  # fmt: skip
        if got != 1:
            raise TimeoutError(f"the prediction log's partition lock was busy {_LOCK_SECONDS} s")
        if self.metadata_wait is not None:
            try:
                self.conn.execute(sa.text("SET SESSION lock_wait_timeout = :s"),
                                  {"s": self.metadata_wait})  # fmt: skip
            except BaseException:
                self._release()
                raise

    def __exit__(self, *exc: object) -> None:
        try:
            if self.metadata_wait is not None:
                self.conn.execute(sa.text("SET SESSION lock_wait_timeout = DEFAULT"))
        finally:
            self._release()

    def _release(self) -> None:
        self.conn.execute(sa.text(f"SELECT RELEASE_LOCK({_LOCK_NAME})"))


def _bound_day(bound: str) -> dt.date:
    """The first day a partition's upper bound (a TO_DAYS number) leaves out."""
    return dt.date.fromordinal(int(bound) - _TO_DAYS_OFFSET)


def ensure_days(
    db: Database, first: dt.date, last: dt.date, table: str = tables.PREDICTION_LOG
) -> list[dt.date]:
    """Give every day from `first` to `last` a partition of its own where a log table has
    none yet; returns the days added. Days past the top (what p_future holds) are split
    off it, one partition per day from the top's bound on; days below p_start's bound are
    split off p_start, one per day up to that bound (rows already there move to their
    day). A day between two existing partitions that was dropped stays merged into the
    next: it is past retention."""
    if not supported(db) or last < first:
        return []
    with db.connect() as conn, _Lock(conn, metadata_wait=METADATA_WAIT_SECONDS):
        parts = _partitions(conn, table)
        if len(parts) < 2:  # not partitioned (an older log)
            return []
        start, top = _bound_day(parts[0][1]), _bound_day(parts[-2][1])
        after = _days(top, last)  # contiguous from the top's bound
        below = _days(first, start - dt.timedelta(days=1)) if first < start else []
        if after:
            future = f"PARTITION {FUTURE} VALUES LESS THAN MAXVALUE"
            _reorganize(conn, table, FUTURE, [*map(_day_partition, after), future])
        if below:
            bottom = f"PARTITION {START} VALUES LESS THAN ({to_days(below[0])})"
            _reorganize(conn, table, START, [bottom, *map(_day_partition, below)])
    added = sorted(below + after)
    if added:
        log.info("%s: day partitions %s to %s made", table, added[0], added[-1])
    return added


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _reorganize(conn: Connection, table: str, name: str, into: list[str]) -> None:
    conn.execute(sa.text(f"ALTER TABLE {_quoted(conn, table)} REORGANIZE PARTITION {name} "
                         f"INTO ({', '.join(into)})"))  # fmt: skip


def ensure_ahead(
    db: Database, today: dt.date | None = None, table: str = tables.PREDICTION_LOG
) -> list[dt.date]:
    """Partitions for `days_ahead` (yesterday to a week ahead) where missing."""
    days = days_ahead(today)
    return ensure_days(db, days[0], days[-1], table)


def _quoted(conn: Connection, table: str) -> str:
    """A log table's name as SQL (a view's name is an identifier already; quoted anyway)."""
    return conn.dialect.identifier_preparer.quote_identifier(table)


MAX_DAYS_BACK = 366  # partitions a conversion makes for old rows (older ones stay in p_start)


def convert(db: Database, today: dt.date | None = None) -> int:
    """Partition an unpartitioned log by day (a log made before partitions existed);
    returns the day partitions made, 0 when there is nothing to do.

    MariaDB copies the whole table to do it, so this runs only when asked (`ctloop
    init-db --partition-log`), never on its own: on a big log it takes a while and
    blocks the writers' inserts meanwhile (they queue, then spill; nothing is lost). It
    waits for long reads to end, as any ALTER does; one statement, so an interrupted
    conversion leaves the table as it was.
    """
    if not supported(db):
        return 0
    today = today or utc_today()
    table = tables.PREDICTION_LOG
    with db.connect() as conn, _Lock(conn):
        if is_partitioned(conn):
            return 0
        oldest = conn.execute(sa.text(f"SELECT MIN(created_at) FROM {table}")).scalar()  # noqa: S608
        first = today - dt.timedelta(days=1)
        if oldest is not None:
            first = min(first, max(oldest.date(), today - dt.timedelta(days=MAX_DAYS_BACK)))
        days = _days(first, today + dt.timedelta(days=DAYS_AHEAD))
        inspector = sa.inspect(conn)
        indexes = inspector.get_indexes(table)
        primary = inspector.get_pk_constraint(table).get("constrained_columns") or []
        changes = []
        if primary != ["id", "created_at"]:
            changes += ["DROP PRIMARY KEY", "ADD PRIMARY KEY (id, created_at)"]
        changes += [f"DROP INDEX `{i['name']}`" for i in indexes
                    if i.get("unique") and i["column_names"] == ["request_id"]]  # fmt: skip
        if not any(i["name"] == "uq_prediction_log_request" for i in indexes):
            changes.append(
                "ADD CONSTRAINT uq_prediction_log_request UNIQUE (request_id, created_at)"
            )
        # one statement, one copy of the table: it succeeds whole or changes nothing
        conn.execute(sa.text(f"ALTER TABLE {table} {', '.join(changes)} "
                             f"PARTITION BY {partition_clause(days)}"))  # fmt: skip
    log.warning("prediction_log: partitioned by day (%d day partitions, %s to %s)",
                len(days), days[0], days[-1])  # fmt: skip
    return len(days)


def drop_expired(
    db: Database, view_name: str, before: dt.datetime, table: str = tables.PREDICTION_LOG
) -> Iterator[tuple[dt.date, int]]:
    """Drop the day partitions of a log table that end at or before `before` and hold no
    other view's rows; yields (day, rows dropped) for each, oldest first. In the shared
    log, a day another view still has rows in is left to the chunked DELETE of the view's
    own rows; a view's own table (`table`) holds no other view's. A table held by a
    long query past `METADATA_WAIT_SECONDS`, or another process holding the partition
    lock, raises (OperationalError 1205, TimeoutError): the caller deletes by chunks."""
    if not supported(db):
        return
    with db.connect() as conn, _Lock(conn, metadata_wait=METADATA_WAIT_SECONDS):
        for day in day_partitions(conn, table):  # none in an unpartitioned log
            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
            if end > before:
                return
            if table != tables.PREDICTION_LOG:
                dropped = _drop_day(conn, table, day)
            else:
                dropped = _drop_if_alone(conn, day, view_name)
            if dropped is not None:
                yield day, dropped


def _drop_if_alone(conn: Connection, day: dt.date, view_name: str) -> int | None:
    """Drop one day's partition if only `view_name` has rows in it. The check and the drop
    run under LOCK TABLES ... WRITE, so no writer adds another view's row in between;
    both are quick (an index probe, a file removed), so writers wait a moment only. The
    rows are counted before, for the report: the day is over, so that count is the
    partition's (a replay of an old row in between would be dropped uncounted)."""
    # identifiers only from our constants and a date (pYYYYMMDD); the view is bound
    part = f"{tables.PREDICTION_LOG} PARTITION ({day_name(day)})"
    table = tables.PREDICTION_LOG
    other = f"SELECT 1 FROM {part} WHERE feature_view <> :v LIMIT 1"  # noqa: S608
    if conn.execute(sa.text(other), {"v": view_name}).first() is not None:
        return None
    count = f"SELECT COUNT(*) FROM {part}"  # noqa: S608
    rows = int(conn.execute(sa.text(count)).scalar() or 0)
    conn.commit()  # the count's snapshot ends before the table lock
    conn.execute(sa.text(f"LOCK TABLES {table} WRITE"))  # 1205 after METADATA_WAIT_SECONDS
    try:
        if conn.execute(sa.text(other), {"v": view_name}).first() is not None:
            return None
        conn.execute(sa.text(f"ALTER TABLE {table} DROP PARTITION {day_name(day)}"))
    finally:
        conn.execute(sa.text("UNLOCK TABLES"))
    log.info("prediction_log: day %s dropped (%d rows of %s)", day, rows, view_name)
    return rows


def _drop_day(conn: Connection, table: str, day: dt.date) -> int:
    """Drop one day's partition of a view's own log table (rows counted before, for the
    report, as in `_drop_if_alone`)."""
    quoted = _quoted(conn, table)
    count = f"SELECT COUNT(*) FROM {quoted} PARTITION ({day_name(day)})"  # noqa: S608
    rows = int(conn.execute(sa.text(count)).scalar() or 0)
    conn.commit()  # the count's snapshot ends before the drop
    conn.execute(sa.text(f"ALTER TABLE {quoted} DROP PARTITION {day_name(day)}"))
    log.info("%s: day %s dropped (%d rows)", table, day, rows)
    return rows
