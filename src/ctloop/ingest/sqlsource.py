"""A SQL source: a table or query in another database, read one interval at a time.

The read is bounded by the data interval on the source's incremental column (an event
date, or an updated-at time): `start <= column < end`. A re-run of an interval therefore
reads the same rows (what changed since with an updated-at column excepted: it belongs
to a later interval), and scheduled runs never read the same row twice. Without an
interval (`ctloop ingest` with no `--since`) the read starts after the stored watermark,
the highest value landed so far, and ends now.

The whole interval is read before anything is written, then written in one transaction
with its rejects and the new watermark: a source that goes down mid-read fails the task
(Airflow retries it) and leaves nothing half-written.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url

from ctloop.errors import StoreUnavailableError
from ctloop.features.spec import SqlSource
from ctloop.features.view import FeatureView
from ctloop.ingest import ledger
from ctloop.ingest.batch import check_batch, known_columns
from ctloop.store.features import FeatureStore

log = logging.getLogger(__name__)


@dataclass
class SqlResult:
    """What one interval of a SQL source did."""

    since: dt.datetime | None
    until: dt.datetime
    rows_read: int = 0
    taken: int = 0
    rejected: int = 0
    duplicates: int = 0
    late_labels: int = 0
    watermark: dt.datetime | None = None
    refused: str | None = None
    problems: list[str] = field(default_factory=list)


def _plain(value: object) -> str:
    """A cell as a person would write it (a whole float as an integer, times in ISO)."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text (NA for NULL), so the view's rules, not the driver's types,
    decide what a value means: the same footing as a CSV file."""
    return pd.DataFrame(
        {
            str(name): frame[name].astype(object).map(_plain, na_action="ignore").astype("string")
            for name in frame.columns
        },
        index=frame.index,
    )


def statement(source: SqlSource, since: dt.datetime | None, until: dt.datetime) -> sa.Select:
    """The bounded read: `since <= column < until` (`column > since` for a watermark)."""
    column = sa.column(source.incremental_column)
    if source.table is not None:
        schema, _, name = source.table.rpartition(".")
        origin: sa.FromClause = sa.table(name, schema=schema or None)
    else:
        origin = sa.text(str(source.query)).columns().subquery("src")  # type: ignore[union-attr]
    query = sa.select(sa.text("*")).select_from(origin).where(column < until)
    return query.where(column >= since) if since is not None else query


def read_interval(
    url: str, source: SqlSource, since: dt.datetime | None, until: dt.datetime, *,
    after_watermark: bool = False,
) -> pd.DataFrame:  # fmt: skip
    """The source's rows of the interval, typed as the driver gives them."""
    column = sa.column(source.incremental_column)
    query = statement(source, None if after_watermark else since, until)
    if after_watermark and since is not None:
        query = query.where(column > since)
    query = query.order_by(column)
    safe = make_url(url).render_as_string(hide_password=True)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return pd.read_sql(query, conn)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        reason = str(exc.orig) if exc.orig is not None else str(exc)
        raise StoreUnavailableError(
            f"source '{source.name}' (connection {source.conn_id}, {safe}) is unreachable "
            f"or failed mid-read: {reason}"
        ) from exc
    finally:
        engine.dispose()


def _high_mark(values: pd.Series) -> dt.datetime | None:
    if values.empty or values.isna().all():
        return None
    top = pd.to_datetime(values.max())
    if top.tzinfo is not None:
        top = top.tz_convert("UTC").tz_localize(None)
    return top.to_pydatetime()


def take_interval(
    store: FeatureStore,
    view: FeatureView,
    source: SqlSource,
    url: str,
    since: dt.datetime | None,
    until: dt.datetime,
    run_id: str,
) -> SqlResult:
    """Read, check and land one interval of a SQL source (see the module's docstring)."""
    after_watermark = since is None
    if after_watermark:
        since = ledger.watermark(store, view.name, source.name)
    typed = read_interval(url, source, since, until, after_watermark=after_watermark)
    result = SqlResult(since, until, rows_read=len(typed))
    if source.incremental_column not in typed.columns:
        raise StoreUnavailableError(
            f"source '{source.name}': the read has no column '{source.incremental_column}'"
        )
    high = _high_mark(typed[source.incremental_column])
    raw = as_text(typed)
    if source.incremental_column not in known_columns(view):
        raw = raw.drop(columns=source.incremental_column)
    checked = check_batch(view, raw, source.contents, partial=view.partial_loads)
    batch = f"{source.name} [{since.isoformat() if since else '-'}, {until.isoformat()})"
    result.rejected, result.refused = checked.rows_rejected, checked.refused
    result.problems = [str(p) for p in checked.problems[:20]]

    def bookkeeping(conn: Connection) -> None:
        ledger.record_rejects(conn, store, view=view.name, source=source.name, batch=batch,
                              run_id=run_id, problems=checked.problems)  # fmt: skip
        if high is not None and checked.refused is None:
            ledger.advance_watermark(conn, store, view.name, source.name, high)

    if checked.refused is not None or checked.rows_taken == 0:
        with store.begin() as conn:
            bookkeeping(conn)
    else:
        if not after_watermark and ledger.interval_taken_before(
            store,
            view.name,
            source.name,
            since,
            until,  # type: ignore[arg-type]
        ):
            result.duplicates = checked.rows_taken
        store.ingest(
            view, checked.features, checked.labels,
            arrival_given=checked.arrival_given, also=bookkeeping,
        )  # fmt: skip
        result.taken, result.late_labels = checked.rows_taken, checked.late_labels
    result.watermark = ledger.watermark(store, view.name, source.name)
    if checked.refused is not None:
        log.warning("%s: refused whole: %s", batch, checked.refused)
    log.info("%s: read %d, taken %d, rejected %d, watermark %s", batch, result.rows_read,
             result.taken, result.rejected, result.watermark)  # fmt: skip
    return result
