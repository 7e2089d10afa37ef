"""The feature store: typed tables per feature view on MariaDB (or embedded SQLite).

All access goes through SQLAlchemy Core with bound parameters. Writes are idempotent
upserts keyed on (entity, event date), so re-running a day never duplicates rows.
Training sets are point-in-time: for an as-of date D only feature rows with event date
before D, joined to labels that had arrived before the start of D, are returned.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import OperationalError

from ctloop.errors import CtloopError, DataValidationError, StoreUnavailableError
from ctloop.features.view import FeatureView
from ctloop.predlog.row import JSON_FIELDS, encode_row
from ctloop.store import tables

log = logging.getLogger(__name__)

MYSQL_DIALECTS = ("mysql", "mariadb")
JSON_DOCUMENT_BYTES = 4 << 20  # per log insert statement: escaped, at most half the default
# max_allowed_packet (16 MiB)
_UNKNOWN_DATABASE = 1049


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


@dataclass(frozen=True)
class DayStatus:
    """Row counts of one event date."""

    event_date: dt.date
    features: int
    labels: int

    @property
    def label_coverage(self) -> float:
        return self.labels / self.features if self.features else 0.0


@dataclass(frozen=True)
class ViewStatus:
    """What the store holds for one view."""

    view: str
    exists: bool
    days: list[DayStatus]

    @property
    def feature_rows(self) -> int:
        return sum(d.features for d in self.days)

    @property
    def label_rows(self) -> int:
        return sum(d.labels for d in self.days)


class FeatureStore:
    """Access to one feature store database; cheap to create, holds a pooled engine."""

    def __init__(
        self,
        url: str | URL,
        *,
        chunk_rows: int = 50_000,
        batch_rows: int = 5_000,
    ) -> None:
        self.url = make_url(url)
        self.chunk_rows = chunk_rows
        self.batch_rows = batch_rows
        self.engine = self._make_engine(self.url)
        self.metadata = sa.MetaData()
        self._view_tables: dict[str, tuple[sa.Table, sa.Table]] = {}
        self.prediction_log, self.drift_report = tables.shared_tables(self.metadata)
        self._json_table: bool | None = None  # does the server have JSON_TABLE (MariaDB)?
        self._json_table_sql: str | None = None
        self.json_document_bytes = JSON_DOCUMENT_BYTES
        self._hex_documents = self.engine.dialect.driver == "pymysql"

    @classmethod
    def from_settings(cls, settings: Any = None) -> FeatureStore:
        """The store the settings point at (embedded SQLite when nothing is set)."""
        if settings is None:
            from ctloop.settings import get_settings

            settings = get_settings()
        return cls(
            settings.store_url,
            chunk_rows=settings.extract_chunk_rows,
            batch_rows=settings.write_batch_rows,
        )

    @staticmethod
    def _make_engine(url: URL) -> Engine:
        backend = url.get_backend_name()
        if backend == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(url, connect_args={"timeout": 30})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

            return engine
        connect_args: dict[str, Any] = {}
        if backend in MYSQL_DIALECTS and url.get_driver_name() == "pymysql":
            connect_args = {"connect_timeout": 5, "charset": "utf8mb4"}
        return sa.create_engine(
            url, pool_pre_ping=True, pool_recycle=3600, connect_args=connect_args
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return self.url.render_as_string(hide_password=True)

    # ------------------------------------------------------------------ connections

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        """Turn "cannot connect" driver errors into one clear, user-facing error."""
        try:
            yield
        except OperationalError as exc:
            reason = str(exc.orig) if exc.orig is not None else str(exc)
            raise StoreUnavailableError(
                f"feature store {self.safe_url} is unreachable or refused the operation: {reason}"
            ) from exc

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        with self._translate(), self.engine.begin() as conn:
            yield conn

    def ping(self) -> None:
        """Fail fast with a clear message when the database cannot be reached."""
        with self._translate(), self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ schema

    def view_tables(self, view: FeatureView) -> tuple[sa.Table, sa.Table]:
        """The (features, labels) tables of a view, defined once per store."""
        if view.name not in self._view_tables:
            self._view_tables[view.name] = (
                tables.features_table(view, self.metadata),
                tables.labels_table(view, self.metadata),
            )
        return self._view_tables[view.name]

    def create_database_if_missing(self) -> bool:
        """On MariaDB/MySQL, create the URL's database when the server lacks it."""
        if self.dialect not in MYSQL_DIALECTS or not self.url.database:
            return False
        try:
            self.ping()
            return False
        except StoreUnavailableError as exc:
            orig = getattr(exc.__cause__, "orig", None)
            if not (orig is not None and orig.args and orig.args[0] == _UNKNOWN_DATABASE):
                raise
        name = self.url.database
        if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", name):
            raise CtloopError(f"database name '{name}' must be letters, digits and underscores")
        server_url = URL.create(
            self.url.drivername,
            username=self.url.username,
            password=self.url.password,
            host=self.url.host,
            port=self.url.port,
            query=self.url.query,
        )  # URL.set(database=None) would keep the database
        server = sa.create_engine(server_url, poolclass=sa.pool.NullPool)
        quoted = server.dialect.identifier_preparer.quote_identifier(name)
        try:
            with self._translate(), server.begin() as conn:
                conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS {quoted}"))
        finally:
            server.dispose()
        log.info("created database %s", name)
        return True

    def init(self, views: Sequence[FeatureView]) -> None:
        """Create the tables of these views and the shared tables; existing ones are kept."""
        self.create_database_if_missing()
        for view in views:
            self.view_tables(view)
        with self.begin() as conn:
            self.metadata.create_all(conn, checkfirst=True)

    def has_view_tables(self, view: FeatureView) -> bool:
        with self._translate(), self.engine.connect() as conn:
            insp = sa.inspect(conn)
            return insp.has_table(view.features_table) and insp.has_table(view.labels_table)

    def require_tables(self, view: FeatureView) -> None:
        """The view's tables exist and hold every column the view names, else CtloopError.

        A table that lost a column (a migration gone wrong) is a schema mismatch: refused
        here, naming table and columns. Left to the query it surfaces as a raw driver error
        ("Unknown column") that reads like an outage and is retried as one.
        """
        if not self.has_view_tables(view):
            raise CtloopError(
                f"feature store {self.safe_url} has no tables for view '{view.name}': "
                f"run `ctloop init-db` first"
            )
        problems = []
        with self._translate(), self.engine.connect() as conn:
            insp = sa.inspect(conn)
            for table in self.view_tables(view):
                have = {c["name"] for c in insp.get_columns(table.name)}
                lacking = [c.name for c in table.columns if c.name not in have]
                if lacking:
                    problems.append(f"table {table.name} has no column {', '.join(lacking)}")
        if problems:
            raise CtloopError(
                f"feature store {self.safe_url}: schema mismatch with view '{view.name}': "
                f"{'; '.join(problems)} (restore the columns, or fix the view)"
            )

    # ------------------------------------------------------------------ writes

    def _upsert_statement(self, table: sa.Table) -> sa.Insert:
        keys = [c.name for c in table.primary_key.columns]
        rest = [c.name for c in table.columns if c.name not in keys]
        if self.dialect in MYSQL_DIALECTS:
            stmt = mysql.insert(table)
            return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in rest})
        if self.dialect == "sqlite":
            stmt = sqlite.insert(table)
            return stmt.on_conflict_do_update(
                index_elements=keys, set_={c: stmt.excluded[c] for c in rest}
            )
        if self.dialect == "postgresql":
            stmt = postgresql.insert(table)
            return stmt.on_conflict_do_update(
                index_elements=keys, set_={c: stmt.excluded[c] for c in rest}
            )
        raise CtloopError(f"feature store dialect '{self.dialect}' is not supported")

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

    def _prepare_features(self, view: FeatureView, frame: pd.DataFrame) -> pd.DataFrame:
        required = [view.entity, view.event_date, *view.feature_names]
        self._check_columns(frame, required, view.features_table)
        out = frame[required].copy()
        out[view.entity] = out[view.entity].astype(str)
        out[view.event_date] = pd.to_datetime(out[view.event_date]).dt.date
        if "ingested_at" in frame.columns:
            out["ingested_at"] = pd.to_datetime(frame["ingested_at"]).dt.to_pydatetime()
        else:
            out["ingested_at"] = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        return out

    def _prepare_labels(self, view: FeatureView, frame: pd.DataFrame) -> pd.DataFrame:
        required = [view.entity, view.event_date, view.label.name, "arrived_at"]
        self._check_columns(frame, required, view.labels_table)
        out = frame[required].copy()
        out[view.entity] = out[view.entity].astype(str)
        out[view.event_date] = pd.to_datetime(out[view.event_date]).dt.date
        out["arrived_at"] = list(pd.to_datetime(out["arrived_at"]).dt.to_pydatetime())
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

    def _write(self, conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
        """Bulk upsert through the DBAPI cursor's executemany.

        The statement is compiled by SQLAlchemy (bound parameters, dialect quoting) and its
        positional parameters are fed as plain tuples: this skips per-row dict building and
        parameter processing, which cost more than the database itself on large writes.
        """
        if frame.empty:
            return 0
        stmt = self._upsert_statement(table)
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
    ) -> tuple[int, int]:
        """Upsert feature and label rows in one transaction: all of them land, or none."""
        ftable, ltable = self.view_tables(view)
        fprep = self._prepare_features(view, features) if features is not None else None
        lprep = self._prepare_labels(view, labels) if labels is not None else None
        with self.begin() as conn:
            n_features = self._write(conn, ftable, fprep) if fprep is not None else 0
            n_labels = self._write(conn, ltable, lprep) if lprep is not None else 0
        return n_features, n_labels

    def upsert_features(self, view: FeatureView, frame: pd.DataFrame) -> int:
        return self.ingest(view, features=frame)[0]

    def upsert_labels(self, view: FeatureView, frame: pd.DataFrame) -> int:
        return self.ingest(view, labels=frame)[1]

    # ------------------------------------------------------------------ point-in-time reads

    def _training_query(self, view: FeatureView, start: dt.date, as_of: dt.date) -> sa.Select:
        ftable, ltable = self.view_tables(view)
        entity, day = view.entity, view.event_date
        join = ftable.join(
            ltable, sa.and_(ftable.c[entity] == ltable.c[entity], ftable.c[day] == ltable.c[day])
        )
        where = sa.and_(
            ftable.c[day] >= start,
            ftable.c[day] < as_of,
            ltable.c.arrived_at < as_of_instant(as_of),
        )
        cols = [
            ftable.c[entity],
            ftable.c[day],
            *(ftable.c[name] for name in view.feature_names),
            ltable.c[view.label.name],
            ltable.c.arrived_at,
        ]
        query = sa.select(*cols).select_from(join).where(where)
        return query.order_by(ftable.c[day], ftable.c[entity])

    @contextlib.contextmanager
    def _raw_cursor(self, conn: Connection, query: sa.Select) -> Iterator[Any]:
        """Run a SELECT on a DBAPI cursor of our own: server-side on MariaDB, plain tuples.

        SQLAlchemy compiles the statement and its bound values (with each type's bind
        processing); skipping its Row objects halves the cost of reading a million rows.
        """
        dialect = self.engine.dialect
        compiled = query.compile(dialect=dialect)
        values = {}
        for name, bind in compiled.binds.items():
            process = bind.type._cached_bind_processor(dialect)
            values[name] = process(bind.value) if process else bind.value
        positional = compiled.positiontup
        params = tuple(values[n] for n in positional) if positional is not None else values
        dbapi_conn = conn.connection.dbapi_connection
        if self.dialect in MYSQL_DIALECTS:
            cursor = dbapi_conn.cursor(dialect.loaded_dbapi.cursors.SSCursor)
        else:
            cursor = dbapi_conn.cursor()
        try:
            cursor.execute(str(compiled), params)
            yield cursor
        finally:
            cursor.close()

    def window(self, view: FeatureView, as_of: dt.date | str, window_days: int | None = None):
        """The [start, as_of) date range a run as of `as_of` reads."""
        as_of = to_date(as_of)
        days = window_days or view.training.window_days
        return as_of - dt.timedelta(days=days), as_of

    def iter_training_chunks(
        self, view: FeatureView, as_of: dt.date | str, window_days: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """The point-in-time training set as a stream of DataFrames of `chunk_rows` rows."""
        start, end = self.window(view, as_of, window_days)
        query = self._training_query(view, start, end)
        columns = [c.name for c in query.selected_columns]
        with self._translate(), self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(query)
            while rows := result.fetchmany(self.chunk_rows):
                yield pd.DataFrame.from_records(rows, columns=columns)

    def _window_feature_rows(
        self, conn: Connection, view: FeatureView, start: dt.date, end: dt.date
    ) -> int:
        """Feature rows in [start, end): an upper bound of the training set's size (each
        feature row joins at most one label), read from the date index in a fraction of a
        second. Counting the join itself cost more than reading it (33 s against 25 s for
        1M rows on MariaDB)."""
        ftable, _ = self.view_tables(view)
        day = ftable.c[view.event_date]
        query = sa.select(sa.func.count()).select_from(ftable).where(day >= start, day < end)
        return conn.execute(query).scalar_one()

    def training_set(
        self, view: FeatureView, as_of: dt.date | str, window_days: int | None = None
    ) -> pd.DataFrame:
        """The point-in-time training set, built in place: one copy plus one chunk in memory.

        The window's feature-row count is read first, inside the same transaction as the
        rows (a consistent snapshot on InnoDB and SQLite), so each column is allocated once
        at its largest possible size and filled chunk by chunk instead of concatenating
        copies. Rows without an arrived label leave the tail unused; a column with much
        unused tail is compacted one column at a time.
        """
        self.require_tables(view)
        start, end = self.window(view, as_of, window_days)
        query = self._training_query(view, start, end)
        names = [c.name for c in query.selected_columns]
        numeric = {f.name for f in view.numeric_features}
        with self._translate(), self.engine.connect() as conn, conn.begin():
            n = self._window_feature_rows(conn, view, start, end)
            arrays = {
                name: np.empty(n, dtype=np.float64 if name in numeric else object) for name in names
            }
            filled = 0
            with self._raw_cursor(conn, query) as cursor:
                while rows := cursor.fetchmany(self.chunk_rows):
                    k = len(rows)
                    if filled + k > n:  # rows appeared despite the snapshot: grow, stay correct
                        for name in names:
                            extra = np.empty(filled + k - n, dtype=arrays[name].dtype)
                            arrays[name] = np.concatenate([arrays[name], extra])
                        n = filled + k
                    for name, values in zip(names, zip(*rows, strict=True), strict=True):
                        arrays[name][filled : filled + k] = values
                    filled += k
        if filled < 0.9 * n:  # many rows had no label yet: give the unused tail back
            for name in names:
                arrays[name] = arrays[name][:filled].copy()
        frame = pd.DataFrame({name: arr[:filled] for name, arr in arrays.items()}, copy=False)
        frame[view.event_date] = pd.to_datetime(frame[view.event_date])
        frame["arrived_at"] = pd.to_datetime(frame["arrived_at"])
        log.info(
            "training set for %s as of %s: %d rows from %s to %s",
            view.name,
            end,
            filled,
            start,
            end - dt.timedelta(days=1),
        )
        return frame

    def features_between(
        self, view: FeatureView, start: dt.date | str, end: dt.date | str
    ) -> pd.DataFrame:
        """Feature rows with start <= event date < end (no labels), e.g. to replay traffic."""
        ftable, _ = self.view_tables(view)
        query = (
            sa.select(ftable)
            .where(ftable.c[view.event_date] >= to_date(start))
            .where(ftable.c[view.event_date] < to_date(end))
            .order_by(ftable.c[view.event_date], ftable.c[view.entity])
        )
        with self._translate(), self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    def latest_features(
        self,
        view: FeatureView,
        before: dt.date | str,
        limit: int,
        since: dt.date | str | None = None,
    ) -> pd.DataFrame:
        """The newest `limit` feature rows with event date < `before` (and >= `since`).

        Reads by the (entity, event date) key's date part in descending order, so it costs
        `limit` rows however long the window is, and it finds data wherever the newest day
        lies: a fixed look-back finds nothing once ingestion pauses for longer than it.
        """
        ftable, _ = self.view_tables(view)
        day = ftable.c[view.event_date]
        query = sa.select(ftable).where(day < to_date(before))
        if since is not None:
            query = query.where(day >= to_date(since))
        query = query.order_by(day.desc(), ftable.c[view.entity]).limit(limit)
        with self._translate(), self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    def labels_arrived(
        self, view: FeatureView, since: dt.datetime | None, until: dt.datetime
    ) -> pd.DataFrame:
        """Labels that had arrived by `until` (and after `since`, when given)."""
        _, ltable = self.view_tables(view)
        query = sa.select(ltable).where(ltable.c.arrived_at < until)
        if since is not None:
            query = query.where(ltable.c.arrived_at >= since)
        with self._translate(), self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    def labelled_per_day(
        self, view: FeatureView, as_of: dt.date | str, window_days: int
    ) -> dict[dt.date, int]:
        """Labels per event date of the window that had arrived by the as-of instant: the
        shape of the point-in-time training set (and its validation split), counted
        without reading it."""
        start, end = self.window(view, as_of, window_days)
        _, ltable = self.view_tables(view)
        day = ltable.c[view.event_date]
        query = (
            sa.select(day, sa.func.count())
            .where(day >= start, day < end, ltable.c.arrived_at < as_of_instant(end))
            .group_by(day)
        )
        with self._translate(), self.engine.connect() as conn:
            return {to_date(d): int(n) for d, n in conn.execute(query).all()}

    def waiting_labels(self, view: FeatureView, as_of: dt.date | str, window_days: int) -> int:
        """Labels of the window's days that arrived on or after the as-of instant: stored,
        but invisible to a point-in-time run as of that date."""
        start, end = self.window(view, as_of, window_days)
        _, ltable = self.view_tables(view)
        day = ltable.c[view.event_date]
        query = (
            sa.select(sa.func.count())
            .select_from(ltable)
            .where(day >= start, day < end, ltable.c.arrived_at >= as_of_instant(end))
        )
        with self._translate(), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def labels_for_days(
        self, view: FeatureView, first: dt.date, last: dt.date, arrived_before: dt.datetime
    ) -> pd.DataFrame:
        """Labels of event dates first..last that had arrived before a moment (no leakage)."""
        _, ltable = self.view_tables(view)
        query = (
            sa.select(ltable)
            .where(ltable.c[view.event_date] >= first)
            .where(ltable.c[view.event_date] <= last)
            .where(ltable.c.arrived_at < arrived_before)
        )
        with self._translate(), self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    # ------------------------------------------------------------------ prediction logs

    def write_prediction_logs(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert prediction log rows; a row whose request id is already stored is skipped.

        `features` and `probabilities` may be Python objects (the serving writer's rows)
        or JSON text (stored as given). Skipping duplicates is what makes replaying a
        spilled batch after an outage safe. Returns the number of rows newly written.
        """
        if not rows:
            return 0
        if self.dialect in MYSQL_DIALECTS and self._has_json_table():
            try:
                documents = self._json_documents(rows)
            except TypeError:  # a value orjson refuses (see _json_documents): generic path
                pass
            else:
                return self._write_prediction_logs_json_table(documents)
        return self._write_prediction_logs_executemany([encode_row(r) for r in rows])

    def _write_prediction_logs_executemany(self, rows: Sequence[dict[str, Any]]) -> int:
        table = self.prediction_log
        if self.dialect in MYSQL_DIALECTS:
            stmt = mysql.insert(table).prefix_with("IGNORE")
        elif self.dialect == "sqlite":
            stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=["request_id"])
        else:
            stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=["request_id"])
        columns = [c for c in rows[0] if c in table.c]
        compiled = stmt.compile(dialect=self.engine.dialect, column_keys=columns)
        order = compiled.positiontup
        with self.begin() as conn:
            if order is None:  # a named paramstyle: SQLAlchemy's own executemany
                return max(conn.execute(stmt, list(rows)).rowcount, 0)
            # Plain tuples through the DBAPI executemany, as `_write` does for ingestion
            # (SQLAlchemy's per-row processing cost more than the insert itself here).
            keys = [compiled.binds[name].key for name in order]
            procs = [table.c[k].type._cached_bind_processor(self.engine.dialect) for k in keys]
            params = [
                tuple(
                    v if (p is None or v is None) else p(v)
                    for v, p in zip((row.get(k) for k in keys), procs, strict=True)
                )
                for row in rows
            ]
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                cursor.executemany(str(compiled), params)
                return max(cursor.rowcount, 0)
            finally:
                cursor.close()

    def _has_json_table(self) -> bool:
        """JSON_TABLE exists on MariaDB >= 10.6 and MySQL >= 8.0 (asked once)."""
        if self._json_table is None:
            with self._translate(), self.engine.connect() as conn:
                version = conn.dialect.server_version_info or (0,)
                mariadb = bool(getattr(conn.dialect, "is_mariadb", False))
            self._json_table = tuple(version[:2]) >= ((10, 6) if mariadb else (8, 0))
        return self._json_table

    def _json_documents(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """The rows as JSON array documents of at most `json_document_bytes` each.

        Hex-encoded under PyMySQL: it escapes a bound string with `str.translate`, whose
        slow path (taken on any character that needs escaping, and JSON is full of quotes)
        cost 34 us per row of a 500-row batch, more than everything else the writer does;
        a hex string takes the fast path (2 us). mysqlclient escapes in C, so it sends the
        document as it is (half the bytes for the server to read). The budget keeps a large
        configured batch below the server's `max_allowed_packet` (16 MiB by default); each
        part is one statement of the same transaction.
        """
        # no `default`: a value orjson cannot write natively (a numpy float, a big integer)
        # raises, and the batch takes the executemany path, which encodes it as
        # `encode_json` does, the same text a spilled and replayed row gets
        document = orjson.dumps(list(rows))
        size = len(document) * (2 if self._hex_documents else 1)
        if len(rows) > 1 and size > self.json_document_bytes:
            half = len(rows) // 2
            return self._json_documents(rows[:half]) + self._json_documents(rows[half:])
        return [document.hex() if self._hex_documents else document.decode()]

    def _write_prediction_logs_json_table(self, documents: Sequence[str]) -> int:
        """The serving writer's hot path on MariaDB: the whole batch as one bound parameter.

        `INSERT IGNORE ... SELECT FROM JSON_TABLE(:rows, ...)` sends one JSON
        document (encoded by orjson in C) instead of nine escaped values per row: the
        driver's per-value escaping was the largest client cost of the log. The statement
        is still parameterized. A JSON field is read twice, as text (a value given as JSON
        text, stored as given) and as JSON (a value given as an object: MariaDB returns its
        text exactly as orjson wrote it), so the writer never encodes it separately. IGNORE
        skips stored request ids, as the executemany path does; the service's request
        schema bounds every length before a row exists.
        """
        if self._json_table_sql is None:
            table = self.prediction_log
            names = [c.name for c in table.columns if c.name != "id"]
            kinds = {"latency_ms": "DOUBLE", "created_at": "DATETIME(6)"}
            source = "CONVERT(UNHEX(:rows) USING utf8mb4)" if self._hex_documents else ":rows"
            columns, selected = [], []
            for name in names:
                if name in JSON_FIELDS:
                    columns.append(f"{name}__text LONGTEXT PATH '$.{name}'")
                    columns.append(f"{name}__json JSON PATH '$.{name}'")
                    # a JSON null (None) stays NULL, refused as on the executemany path
                    selected.append(f"COALESCE({name}__text, NULLIF({name}__json, 'null'))")
                else:
                    columns.append(f"{name} {kinds.get(name, 'LONGTEXT')} PATH '$.{name}'")
                    selected.append(name)
            self._json_table_sql = (
                f"INSERT IGNORE INTO {table.name} ({', '.join(names)}) "  # noqa: S608
                f"SELECT {', '.join(selected)} FROM JSON_TABLE("
                f"{source}, "
                f"'$[*]' COLUMNS ({', '.join(columns)})) AS batch"
            )
        statement = sa.text(self._json_table_sql)
        with self.begin() as conn:
            return sum(max(conn.execute(statement, {"rows": doc}).rowcount, 0) for doc in documents)

    def read_prediction_logs(
        self,
        view_name: str,
        start: dt.datetime,
        end: dt.datetime,
        model_version: str | None = None,
        expand_features: bool = True,
    ) -> pd.DataFrame:
        """Prediction logs of a view with start <= created_at < end, oldest first.

        With `expand_features`, the JSON features become one column each and the class
        probabilities one `proba_<class>` column each, ready for drift statistics.
        """
        table = self.prediction_log
        query = (
            sa.select(table)
            .where(table.c.feature_view == view_name)
            .where(table.c.created_at >= start)
            .where(table.c.created_at < end)
            .order_by(table.c.created_at, table.c.id)
        )
        if model_version is not None:
            query = query.where(table.c.model_version == str(model_version))
        with self._translate(), self.engine.connect() as conn:
            frame = pd.read_sql(query, conn)
        if not expand_features or frame.empty:
            return frame
        feats = pd.DataFrame([json.loads(s) for s in frame["features"]], index=frame.index)
        # regression rows carry no probabilities ({}): zero columns, not zero rows
        probs = pd.DataFrame([json.loads(s) for s in frame["probabilities"]], index=frame.index)
        probs.columns = [f"proba_{c}" for c in probs.columns]
        base = frame.drop(columns=["features", "probabilities"])
        return pd.concat([base, feats, probs], axis=1)

    def count_prediction_logs(self, view_name: str | None = None) -> int:
        table = self.prediction_log
        query = sa.select(sa.func.count()).select_from(table)
        if view_name is not None:
            query = query.where(table.c.feature_view == view_name)
        with self._translate(), self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    # ------------------------------------------------------------------ status

    def status(self, view: FeatureView) -> ViewStatus:
        """Row counts per event date and how many of them have labels yet."""
        if not self.has_view_tables(view):
            return ViewStatus(view.name, False, [])
        ftable, ltable = self.view_tables(view)
        day = view.event_date
        fq = sa.select(ftable.c[day], sa.func.count()).group_by(ftable.c[day])
        lq = sa.select(ltable.c[day], sa.func.count()).group_by(ltable.c[day])
        with self._translate(), self.engine.connect() as conn:
            fcounts = {to_date(d): n for d, n in conn.execute(fq)}
            lcounts = {to_date(d): n for d, n in conn.execute(lq)}
        days = [
            DayStatus(d, fcounts.get(d, 0), lcounts.get(d, 0))
            for d in sorted(set(fcounts) | set(lcounts))
        ]
        return ViewStatus(view.name, True, days)

    def table_counts(self) -> dict[str, int]:
        """Row counts of every table in the store."""
        with self._translate(), self.engine.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            out = {}
            for name in sorted(names):
                query = sa.select(sa.func.count()).select_from(sa.table(name))
                out[name] = conn.execute(query).scalar_one()
        return out
