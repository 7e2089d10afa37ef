"""The feature store's tables in one database: defined once per store, created on `init`.

The base the store's reads and writes build on (`training_sets`, `status`, `features`): it
maps a feature view to its two tables (`tables.py` is the contract) and checks that the
database holds them as the view describes before anything reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError, ProgrammingError

from ctloop.errors import CtloopError
from ctloop.features.view import FeatureView
from ctloop.store import partitions, tables
from ctloop.store.engine import MYSQL_DIALECTS, Database

log = logging.getLogger(__name__)


_ALREADY_EXISTS = (1050, 1061)  # MariaDB: table exists, duplicate index name


def created_meanwhile(exc: OperationalError | ProgrammingError) -> bool:
    """Whether a CREATE failed only because the table or index exists (another process)."""
    orig = exc.orig
    code = orig.args[0] if orig is not None and orig.args else None
    return code in _ALREADY_EXISTS or "already exists" in str(orig)


class StoreSchema(Database):
    """A database with the feature views' tables and the tables every view shares."""

    def __init__(self, url: str | URL) -> None:
        super().__init__(url)
        self.metadata = sa.MetaData()
        self._view_tables: dict[str, tuple[sa.Table, sa.Table]] = {}
        self._log_tables: dict[str, sa.Table] = {}
        # the shared tables are created with the views' (one `ctloop init-db`); the
        # prediction log and the monitor read and write them through their own modules
        # MariaDB/MySQL: the log partitioned by day (retention drops whole days)
        by = (
            partitions.partition_clause(partitions.days_ahead())
            if self.dialect in MYSQL_DIALECTS
            else None
        )
        self._log_partition_by = by
        tables.shared_tables(self.metadata, log_partition_by=by)
        tables.ingest_tables(self.metadata)

    def view_tables(self, view: FeatureView) -> tuple[sa.Table, sa.Table]:
        """The (features, labels) tables of a view, defined once per store."""
        if view.name not in self._view_tables:
            self._view_tables[view.name] = (
                tables.features_table(view, self.metadata),
                tables.labels_table(view, self.metadata),
            )
        return self._view_tables[view.name]

    def view_log_table(self, view: FeatureView) -> sa.Table:
        """The view's own prediction log table (`<fv>_predictions`), defined once."""
        if view.name not in self._log_tables:
            self._log_tables[view.name] = tables.view_log_table(
                view, self.metadata, self._log_partition_by
            )
        return self._log_tables[view.name]

    def init(
        self, views: Sequence[FeatureView], log_views: Sequence[FeatureView] = ()
    ) -> list[str]:
        """Create the tables of these views (and the prediction log tables of `log_views`:
        a service makes its own view's) and the shared tables; existing ones are kept,
        given the columns a newer ctloop or view defines, and converted to the binary
        collation if they predate it (returns those names)."""
        self.create_database_if_missing()
        for view in views:
            self.view_tables(view)
            self.view_log_table(view)
        self._create_tables()
        self.migrate_columns()
        for view in views:
            self._add_missing_columns(self.view_log_table(view))
        for view in log_views:
            self._serving_log_table(view)
        converted = self.migrate_collation()
        for name in [tables.PREDICTION_LOG, *(t.name for t in self._log_tables.values())]:
            try:  # rows past the last day partition land in p_future: never worth failing
                partitions.ensure_ahead(self, table=name)
            except Exception as exc:
                log.warning("%s: day partitions ahead not made (%r); retried later", name, exc)
        return converted

    def _serving_log_table(self, view: FeatureView) -> None:
        """A service's own view log table, made or given the view's new columns where it
        can be; where it cannot (a user without CREATE or ALTER, a long query holding the
        table) the service logs to the shared table, or what lacks a column to `_extra`:
        its writes never wait on this."""
        table = self.view_log_table(view)
        try:
            try:
                with self.engine.begin() as conn:
                    table.create(conn, checkfirst=True)
            except (OperationalError, ProgrammingError) as exc:
                if not created_meanwhile(exc):
                    raise
            self._add_missing_columns(table)
        except Exception as exc:
            log.warning("%s: not made or not given the view's columns (%r); logging goes on "
                        "(see `ctloop init-db`)", table.name, exc)  # fmt: skip

    def migrate_columns(self) -> list[str]:
        """Add the columns a newer ctloop defines to tables an older one created (all
        nullable, so existing rows stay as they are); returns `table.column` added.

        Several processes may start at once: a column another one added meanwhile is
        success, as for `_create_tables`.
        """
        added = []
        for name, columns in tables.ADDED_COLUMNS.items():
            table = self.metadata.tables.get(name)
            if table is not None:
                added += self._add_missing_columns(table, columns)
        return added

    def _add_missing_columns(
        self, table: sa.Table, columns: Sequence[str] | None = None
    ) -> list[str]:
        """Add those of `columns` (default: all the table's) the database's table lacks,
        as nullable columns: a feature added to a view gets its log column at the next
        `init-db` or service start, and rows already logged keep theirs."""
        name = table.name
        with self.connect() as conn:
            have = {c["name"] for c in sa.inspect(conn).get_columns(name)}
        added = []
        for column in [c.name for c in table.columns] if columns is None else columns:
            if column in have:
                continue
            kind = table.c[column].type.compile(dialect=self.engine.dialect)
            prep = self.engine.dialect.identifier_preparer
            ddl = (f"ALTER TABLE {prep.quote_identifier(name)} ADD COLUMN "
                   f"{prep.quote_identifier(column)} {kind} NULL")  # fmt: skip
            try:
                with self.begin() as conn:
                    if self.dialect in MYSQL_DIALECTS:  # not a year behind a long read
                        conn.execute(sa.text("SET SESSION lock_wait_timeout = 10"))
                    conn.execute(sa.text(ddl))
            except (OperationalError, ProgrammingError) as exc:
                if "duplicate column" not in str(exc).lower():
                    raise
                continue
            log.warning("table %s: column %s added (this ctloop defines it)", name, column)
            added.append(f"{name}.{column}")
        return added

    def _create_tables(self) -> None:
        """Create the missing tables, safe when several processes do it at once.

        `create_all` checks, then creates: two serving workers starting on a fresh
        database both saw no table and the second CREATE failed with "table exists"
        (1050), reported as an unreachable store. Another process having created a table
        (or index) in between is success: check again and go on. Each retry means the
        other process got further, so as many tries as there are tables suffice.
        """
        tries = len(self.metadata.tables) + 2
        with self._translate():
            for attempt in range(1, tries + 1):
                try:
                    with self.engine.begin() as conn:
                        self.metadata.create_all(conn, checkfirst=True)
                    return
                except (OperationalError, ProgrammingError) as exc:
                    if not created_meanwhile(exc) or attempt == tries:
                        raise
                    log.info("tables created by another process meanwhile (%s); checking again",
                             exc.orig)  # fmt: skip

    def _case_insensitive_tables(self, names: Sequence[str]) -> dict[str, list[str]]:
        """Of these tables, those with text columns not in the binary collation: table ->
        column names (MariaDB/MySQL only; SQLite compares text as bytes already)."""
        if self.dialect not in MYSQL_DIALECTS or not names:
            return {}
        query = sa.text(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :names "
            "AND COLLATION_NAME IS NOT NULL AND COLLATION_NAME <> :binary "
            "ORDER BY TABLE_NAME, ORDINAL_POSITION"
        ).bindparams(sa.bindparam("names", expanding=True))
        found: dict[str, list[str]] = {}
        with self.connect() as conn:
            rows = conn.execute(query, {"names": list(names), "binary": tables.BINARY_COLLATION})
            for table, column in rows:
                found.setdefault(table, []).append(column)
        return found

    def migrate_collation(self) -> list[str]:
        """Convert existing tables whose text columns still use a case- or accent-
        insensitive collation (tables made before keys compared as bytes) to the binary
        one; returns the tables converted.

        Safe on any data: a binary collation only tells apart values the old one merged,
        so no key that was unique can become a duplicate.
        """
        wrong = self._case_insensitive_tables(sorted(self.metadata.tables))
        for name in wrong:
            quoted = self.engine.dialect.identifier_preparer.quote_identifier(name)
            with self.begin() as conn:
                conn.execute(
                    sa.text(
                        f"ALTER TABLE {quoted} CONVERT TO CHARACTER SET utf8mb4 "
                        f"COLLATE {tables.BINARY_COLLATION}"
                    )
                )
            log.warning(
                "table %s: text columns %s converted to collation %s (keys compare as bytes)",
                name, ", ".join(wrong[name]), tables.BINARY_COLLATION,
            )  # fmt: skip
        return sorted(wrong)

    def has_view_tables(self, view: FeatureView) -> bool:
        """Whether both of the view's tables exist (before `init-db` they do not)."""
        with self.connect() as conn:
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
        with self.connect() as conn:
            insp = sa.inspect(conn)
            for table in self.view_tables(view):
                have = {c["name"] for c in insp.get_columns(table.name)}
                lacking = [c.name for c in table.columns if c.name not in have]
                if lacking:
                    problems.append(
                        f"table {table.name} has no column {', '.join(lacking)} "
                        "(restore the columns, or fix the view)"
                    )
        names = [t.name for t in self.view_tables(view)]
        for table, columns in self._case_insensitive_tables(names).items():
            problems.append(
                f"table {table}: column(s) {', '.join(columns)} compare text case- and "
                f"accent-insensitively, so distinct keys would merge; run `ctloop init-db` "
                f"to convert the table to collation {tables.BINARY_COLLATION}"
            )
        if problems:
            raise CtloopError(
                f"feature store {self.safe_url}: schema mismatch with view '{view.name}': "
                f"{'; '.join(problems)}"
            )
