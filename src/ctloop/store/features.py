"""The feature store: typed tables per feature view on MariaDB (or embedded SQLite).

`FeatureStore` is the one object callers hold; its parts live next to it, one job each:
the connection (`engine`), the tables (`schema`), point-in-time training sets
(`training_sets`), status counts (`status`), and here the writes. All access goes through
SQLAlchemy Core with bound parameters. Writes are idempotent upserts keyed on (entity,
event date), so re-running a day never duplicates rows. The prediction log
(`ctloop.predlog.store`) and the drift report (`ctloop.monitoring.reports`) share the
database and engine but keep their SQL in their own packages.

`to_date` and `as_of_instant` live in `dates`; they are re-exported here because callers
across the loop (training runs, the Airflow glue, ingestion) import the store's date rules
from the store's face, and that path stays stable while those parts move.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, Connection

from ctloop.errors import CtloopError, DataValidationError
from ctloop.features.frames import MAX_REPORTED, parse_calendar_dates, parse_times
from ctloop.features.view import FeatureView
from ctloop.settings import Settings, get_settings
from ctloop.store.dates import as_of_instant, to_date, utc_now
from ctloop.store.engine import MYSQL_DIALECTS
from ctloop.store.replica import ReadReplica
from ctloop.store.status import StatusReads
from ctloop.store.training_sets import TrainingSetReads

__all__ = ["FeatureStore", "as_of_instant", "to_date"]

log = logging.getLogger(__name__)


def _python_dates(values: pd.Series) -> bool:
    """Whether a column holds only Python dates (no times, so no zones) and missing values."""
    present = values.dropna()
    return bool(len(present)) and bool(present.map(type).eq(dt.date).all())


class FeatureStore(TrainingSetReads, StatusReads):
    """Access to one feature store database; cheap to create, holds a pooled engine."""

    def __init__(
        self,
        url: str | URL,
        *,
        chunk_rows: int = 50_000,
        batch_rows: int = 5_000,
        read_url: str | URL | None = None,
        max_replica_lag: float = 30.0,
    ) -> None:
        super().__init__(url)
        self.chunk_rows = chunk_rows
        self.batch_rows = batch_rows
        if read_url:  # training sets and monitor windows read there while it keeps up
            if self.dialect not in MYSQL_DIALECTS:
                raise CtloopError(
                    f"FEATURE_STORE_READ_URL is set, but FEATURE_STORE_URL {self.safe_url} is "
                    "not MariaDB/MySQL: a read replica is a replica of a MariaDB primary"
                )
            self.replica = ReadReplica(read_url, max_lag_seconds=max_replica_lag)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> FeatureStore:
        """The store the settings point at (embedded SQLite when nothing is set)."""
        if settings is None:
            settings = get_settings()
        return cls.for_url(settings.store_url, settings)

    @classmethod
    def for_url(cls, url: str | URL, settings: Settings | None = None) -> FeatureStore:
        """The store at `url` (an orchestrator's connection) with the settings' tuning and
        read replica."""
        if settings is None:
            settings = get_settings()
        return cls(
            url,
            chunk_rows=settings.extract_chunk_rows,
            batch_rows=settings.write_batch_rows,
            read_url=settings.feature_store_read_url,
            max_replica_lag=settings.replica_max_lag_seconds,
        )

    # ------------------------------------------------------------------ writes

    def _upsert_statement(self, table: sa.Table, keep_arrival: str | None = None) -> sa.Insert:
        """An insert that updates the row of an existing key.

        `keep_arrival` names the label column of a labels table whose arrival times were
        not given (they default to now): an existing row whose label is unchanged keeps
        its `arrived_at`, so re-importing a file never moves a label's arrival and the
        point-in-time training sets of past dates stay as they were. A changed label did
        arrive now, and takes the new time.
        """
        keys = [c.name for c in table.primary_key.columns]
        rest = [c.name for c in table.columns if c.name not in keys]
        if self.dialect in MYSQL_DIALECTS:
            stmt = mysql.insert(table)
            new = stmt.inserted
        elif self.dialect in ("sqlite", "postgresql"):
            stmt = (sqlite if self.dialect == "sqlite" else postgresql).insert(table)
            new = stmt.excluded
        else:
            raise CtloopError(f"feature store dialect '{self.dialect}' is not supported")
        updates: list[tuple[str, Any]] = []
        if keep_arrival is not None:
            # first: MariaDB evaluates the assignments in order, and the label's below
            # would make every label look unchanged
            same = table.c[keep_arrival] == new[keep_arrival]
            updates.append(
                ("arrived_at", sa.case((same, table.c.arrived_at), else_=new["arrived_at"]))
            )
        updates += [(c, new[c]) for c in rest if not (keep_arrival and c == "arrived_at")]
        if self.dialect in MYSQL_DIALECTS:
            return stmt.on_duplicate_key_update(updates)
        return stmt.on_conflict_do_update(index_elements=keys, set_=dict(updates))

    def _rows(self, frame: pd.DataFrame, table: sa.Table) -> list[tuple]:
        """Rows as tuples of plain Python values (None for missing) that any driver binds.

        Each column goes through its SQLAlchemy type's bind processor where the dialect has
        one (SQLite stores dates and times as text), so values are stored exactly as
        SQLAlchemy itself would store them and compare correctly in later queries.
        """
        lists = []
        for col in frame.columns:
            values = frame[col].astype(object).where(frame[col].notna(), None).tolist()
            process = table.c[col].type._cached_bind_processor(self.engine.dialect)
            if process is not None:
                values = [process(v) for v in values]
            lists.append(values)
        return list(zip(*lists, strict=True))

    def _check_columns(self, frame: pd.DataFrame, required: Sequence[str], what: str) -> None:
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise DataValidationError(f"{what}: missing column(s): {', '.join(missing)}")
        for key in required[:2]:
            if frame[key].isna().any():
                raise DataValidationError(f"{what}: column '{key}' has empty values")

    @staticmethod
    def _times(what: str, column: str, values: pd.Series, *, calendar: bool) -> pd.Series:
        """A date or time column as naive UTC, by the import's rules (`parse_calendar_dates`
        / `parse_times`): offsets may differ from row to row. Values that are no date or
        time are refused naming the column and rows, never left to pandas (whose "Mixed
        timezones detected" came out as a raw traceback)."""
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            zoned = getattr(values.dt, "tz", None) is not None
            if calendar:  # the date as written, in the value's own zone
                parsed = (values.dt.tz_localize(None) if zoned else values).dt.normalize()
            else:
                parsed = values.dt.tz_convert("UTC").dt.tz_localize(None) if zoned else values
        elif _python_dates(values):  # the synthetic stream's dates: the fast path
            parsed = pd.to_datetime(values.astype(object))
        else:
            text = values.astype(object).where(values.notna(), None)
            text = text.map(
                lambda v: v.isoformat() if isinstance(v, dt.date | dt.datetime) else v,
                na_action="ignore",
            ).astype("string")
            parsed = (parse_calendar_dates if calendar else parse_times)(text)
        bad = parsed.isna().to_numpy()
        if bad.any():
            positions = np.flatnonzero(bad)
            rows = [str(i + 1) for i in positions[:MAX_REPORTED]]
            more = f" and {int(bad.sum()) - len(rows)} more" if bad.sum() > len(rows) else ""
            kind = "date" if calendar else "date and time (ISO 8601)"
            raise DataValidationError(
                f"{what}: column '{column}' must hold a {kind} in every row; row(s) "
                f"{', '.join(rows)}{more} do not (e.g. {values.iloc[int(positions[0])]!r})"
            )
        return parsed

    def _prepare_features(self, view: FeatureView, frame: pd.DataFrame) -> pd.DataFrame:
        required = [view.entity, view.event_date, *view.feature_names]
        what = view.features_table
        self._check_columns(frame, required, what)
        out = frame[required].copy()
        out[view.entity] = out[view.entity].astype(str)
        day = self._times(what, view.event_date, out[view.event_date], calendar=True)
        out[view.event_date] = day.dt.date
        if "ingested_at" in frame.columns:
            when = self._times(what, "ingested_at", frame["ingested_at"], calendar=False)
            out["ingested_at"] = when.dt.to_pydatetime()
        else:
            out["ingested_at"] = utc_now()
        return out

    def _prepare_labels(self, view: FeatureView, frame: pd.DataFrame) -> pd.DataFrame:
        required = [view.entity, view.event_date, view.label.name, "arrived_at"]
        what = view.labels_table
        self._check_columns(frame, required, what)
        out = frame[required].copy()
        out[view.entity] = out[view.entity].astype(str)
        day = self._times(what, view.event_date, out[view.event_date], calendar=True)
        arrived = self._times(what, "arrived_at", out["arrived_at"], calendar=False)
        out[view.event_date] = day.dt.date
        out["arrived_at"] = list(arrived.dt.to_pydatetime())
        label = out[view.label.name]
        if view.label.is_regression:
            values = pd.to_numeric(label, errors="coerce")
            if values.isna().any() or not np.isfinite(values).all():
                raise DataValidationError(
                    f"{view.labels_table}: column '{view.label.name}' must hold finite "
                    "numbers (a regression label); found empty or non-numeric values"
                )
            out[view.label.name] = values.astype("float64")
            return out
        unknown = sorted(set(label.dropna().astype(str)) - set(view.label.class_list))
        if unknown or label.isna().any():
            raise DataValidationError(
                f"{view.labels_table}: column '{view.label.name}' must be one of "
                f"{view.label.class_list}; found {unknown or 'empty values'}"
            )
        return out

    def _write(
        self,
        conn: Connection,
        table: sa.Table,
        frame: pd.DataFrame,
        keep_arrival: str | None = None,
    ) -> int:
        """Bulk upsert through the DBAPI cursor's executemany.

        The statement is compiled by SQLAlchemy (bound parameters, dialect quoting) and its
        positional parameters are fed as plain tuples: this skips per-row dict building and
        parameter processing, which cost more than the database itself on large writes.
        """
        if frame.empty:
            return 0
        stmt = self._upsert_statement(table, keep_arrival)
        columns = list(frame.columns)
        compiled = stmt.compile(dialect=self.engine.dialect, column_keys=columns)
        order = compiled.positiontup
        if order is None:  # a named paramstyle: fall back to SQLAlchemy's own executemany
            for start in range(0, len(frame), self.batch_rows):
                part = frame.iloc[start : start + self.batch_rows]
                rows = [dict(zip(columns, r, strict=True)) for r in self._rows(part, table)]
                conn.execute(stmt, rows)
            return len(frame)
        ordered = frame[[compiled.binds[name].key for name in order]]
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            for start in range(0, len(ordered), self.batch_rows):
                part = ordered.iloc[start : start + self.batch_rows]
                cursor.executemany(str(compiled), self._rows(part, table))
        finally:
            cursor.close()
        return len(frame)

    def ingest(
        self,
        view: FeatureView,
        features: pd.DataFrame | None = None,
        labels: pd.DataFrame | None = None,
        *,
        arrival_given: bool = True,
        also: Callable[[Connection], None] | None = None,
    ) -> tuple[int, int]:
        """Upsert feature and label rows in one transaction: all of them land, or none.

        `arrival_given=False` says the labels' `arrived_at` is a default (the time of the
        import), not a fact: a stored label that is unchanged keeps its arrival time.
        `also` runs inside the same transaction after the rows are written: ingestion
        writes its ledger, rejects and watermark there, so rows and the record that they
        were taken commit together or not at all.
        """
        ftable, ltable = self.view_tables(view)
        fprep = self._prepare_features(view, features) if features is not None else None
        lprep = self._prepare_labels(view, labels) if labels is not None else None
        keep = None if arrival_given else view.label.name
        with self.begin() as conn:
            n_features = self._write(conn, ftable, fprep) if fprep is not None else 0
            n_labels = self._write(conn, ltable, lprep, keep) if lprep is not None else 0
            if also is not None:
                also(conn)
        return n_features, n_labels

    def upsert_labels(
        self, view: FeatureView, frame: pd.DataFrame, *, arrival_given: bool = True
    ) -> int:
        """Upsert labels alone: they land days after their features."""
        return self.ingest(view, labels=frame, arrival_given=arrival_given)[1]
