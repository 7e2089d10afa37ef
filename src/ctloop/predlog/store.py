"""The prediction log's table: writes that never store a request twice, and the reads the
monitor makes.

The log lives in the feature store's database (`prediction_log`, defined in
`ctloop.store.tables`, the contract) and shares its engine, but its SQL is here, next to
the row encoding (`row`) and the writer that feeds it (`writer`). Three insert paths keep
the cost per row low, tried in this order: on MariaDB/MySQL a batch is bulk-loaded from a
temporary file with `LOAD DATA LOCAL INFILE` (about half the server CPU per row of an
INSERT; off with CTLOOP_LOG_BULK_LOAD=false, skipped for good once the server refuses
local files); on MariaDB >= 10.6 / MySQL >= 8.0 a whole batch goes in as one JSON document
through `JSON_TABLE`; elsewhere (SQLite, PostgreSQL, a value orjson refuses) a DBAPI
executemany of plain tuples. Every path skips a request id already stored.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from ctloop.features.view import LOG_TABLE_SUFFIX, log_table_name
from ctloop.predlog.row import FROM_STORE, JSON_FIELDS, decode_json, encode_row
from ctloop.predlog.sample import Window, sampled
from ctloop.predlog.typed import TypedLayout, rows_by_view
from ctloop.settings import get_settings
from ctloop.store import tables
from ctloop.store.engine import MYSQL_DIALECTS, Database

log = logging.getLogger(__name__)

# the roles of a log row: who answered the caller, or who scored the request beside it
CHAMPION_ROLE, SHADOW_ROLE, CANARY_ROLE = "champion", "shadow", "canary"
# a shadow row's request id: the caller's request id + this (request ids are unique)
SHADOW_SUFFIX = ".shadow"
REQUEST_CHUNK = 5_000  # request ids per `read_requests` query
RECHECK_SECONDS = 60.0  # a view's table not found, or no shared rows: asked again after
JSON_DOCUMENT_BYTES = 4 << 20  # per log insert statement: escaped, at most half the default
# max_allowed_packet (16 MiB)
# the server or the client will not send local files: MariaDB's "local infile capability
# disabled", MySQL's "command not allowed", "local files disabled", "rejected by the client"
LOCAL_FILES_REFUSED = frozenset({4166, 1148, 3948, 2068})
SPOOL_RETRY_SECONDS = 60  # after a temporary file failed, INSERT this long before a retry
# a value LOAD DATA would read as something else: its escape character, the field and line
# terminators, and NUL
_TSV_SPECIAL = re.compile(r"[\\\t\n\r\x00]")
_TSV_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"}


class PredictionLog:
    """The prediction log of one store database, on that database's pooled engine."""

    def __init__(self, db: Database, bulk_load: bool | None = None) -> None:
        self.db = db
        self.table = tables.prediction_log_table(sa.MetaData())
        self.json_document_bytes = JSON_DOCUMENT_BYTES
        if bulk_load is None:
            bulk_load = get_settings().log_bulk_load
        self.bulk_load = bulk_load and db.can_send_local_files
        self._spool_dir: Path | None = None  # a 0700 folder of this log's own, made on use
        self._spool_retry_at = 0.0  # after a failed spool file, INSERT until then
        self._json_table: bool | None = None  # does the server have JSON_TABLE (MariaDB)?
        self._json_table_sql: str | None = None
        self._hex_documents = db.engine.dialect.driver == "pymysql"
        self._layouts: dict[str, TypedLayout | None] = {}  # view -> its own table, if any
        self._looked: dict[str, float] = {}  # view -> when its table was looked for
        self._in_shared: dict[str, tuple[bool, float]] = {}  # view -> (shared rows?, when)
        self._load_sqls: dict[str, str] = {}

    def layout(self, view_name: str) -> TypedLayout | None:
        """The view's own typed log table (`<fv>_predictions`), None where the database
        has none (a store `init-db` has not seen since typed logs came): then the shared
        JSON table takes the view's rows. Reflected once per process (a service's writer
        creates its view's table before its first write, `StoreSchema.init`); a table not
        found is looked for again after `RECHECK_SECONDS`."""
        stale = time.monotonic() - self._looked.get(view_name, -math.inf) > RECHECK_SECONDS
        if view_name not in self._layouts or (self._layouts[view_name] is None and stale):
            self._looked[view_name] = time.monotonic()
            name = log_table_name(view_name)
            with self.db.connect() as conn:
                found = sa.inspect(conn).has_table(name)
                table = sa.Table(name, sa.MetaData(), autoload_with=conn) if found else None
            for column in [] if table is None else table.columns:
                if isinstance(column.type, sa.Float):  # reflected DOUBLE reads as Decimal
                    column.type = tables.Double
            # a table of the user's that only shares the name's ending is not a log
            ours = table is not None and {"request_id", "created_at", "probabilities"} <= set(
                table.c.keys()
            )
            self._layouts[view_name] = (
                TypedLayout.of(view_name, table) if table is not None and ours else None
            )
        return self._layouts[view_name]

    def _tables(self, layout: TypedLayout | None) -> list[sa.Table]:
        """The tables that may hold a view's rows: the shared one, and its own if any."""
        return [self.table] if layout is None else [self.table, layout.table]

    def _all_tables(self, view_name: str | None) -> list[sa.Table]:
        """The tables that may hold a view's rows, or with no view every log table."""
        if view_name is not None:
            return self._tables(self.layout(view_name))
        return [self.table, *(layout.table for layout in self.typed_layouts())]

    def typed_layouts(self) -> list[TypedLayout]:
        """Every view's typed log table in this database."""
        with self.db.connect() as conn:
            names = sa.inspect(conn).get_table_names()
        suffix = LOG_TABLE_SUFFIX
        found = [self.layout(n.removesuffix(suffix)) for n in names if n.endswith(suffix)]
        return [layout for layout in found if layout is not None]

    def write(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert prediction log rows; a row whose request id is already stored is skipped.

        `features` and `probabilities` may be Python objects (the serving writer's rows)
        or JSON text (stored as given). Skipping duplicates is what makes replaying a
        spilled batch after an outage safe. Returns the number of rows newly written.
        """
        if not rows:
            return 0
        written = 0
        shared: list[dict[str, Any]] = []
        for view_name, part in rows_by_view(rows).items():
            layout = self.layout(view_name)
            if layout is None:
                shared += part
            else:
                written += self._write_typed(layout, part)
        return written + (self._write_shared(shared) if shared else 0)

    def _write_typed(self, layout: TypedLayout, rows: Sequence[dict[str, Any]]) -> int:
        """A view's rows into its typed table: bulk-loaded where the server allows it,
        else one executemany (no JSON documents: the values are plain already). While the
        shared table still holds rows of the view (logged before its table existed, or by
        an older ctloop's worker during an upgrade), a replayed row already stored there is
        skipped here too: a request id is unique across both tables."""
        if self._shared_holds(layout.view_name):
            stored = self._stored_in_shared(layout.view_name, [r["request_id"] for r in rows])
            rows = [r for r in rows if r["request_id"] not in stored]
            if not rows:
                return 0
        flat = [layout.flatten(row) for row in rows]
        if self.bulk_load:
            written = self._write_load_data(flat, layout.table, layout.columns)
            if written is not None:
                return written
        return self._write_executemany(flat, layout.table)

    def _shared_holds(self, view_name: str) -> bool:
        """Whether the shared table has rows of the view (asked again after
        `RECHECK_SECONDS`; an index probe)."""
        holds, asked = self._in_shared.get(view_name, (True, -math.inf))
        if time.monotonic() - asked > RECHECK_SECONDS:
            query = sa.select(sa.literal(1)).where(self.table.c.feature_view == view_name)
            with self.db.connect() as conn:
                holds = conn.execute(query.limit(1)).first() is not None
            self._in_shared[view_name] = (holds, time.monotonic())
        return holds

    def _stored_in_shared(self, view_name: str, request_ids: Sequence[str]) -> set[str]:
        """Those of these request ids the shared table holds for the view."""
        found: set[str] = set()
        table = self.table
        with self.db.connect() as conn:
            for chunk in _chunked(request_ids):
                query = sa.select(table.c.request_id).where(
                    table.c.feature_view == view_name, table.c.request_id.in_(chunk)
                )
                found.update(conn.execute(query).scalars())
        return found

    def _write_shared(self, rows: Sequence[dict[str, Any]]) -> int:
        """Rows of views without a table of their own, into the shared JSON table."""
        if self.bulk_load:
            names = self._load_columns()
            written = self._write_load_data([encode_row(r) for r in rows], self.table, names)
            if written is not None:
                return written
        if self.db.dialect in MYSQL_DIALECTS and self.has_json_table():
            try:
                documents = self._json_documents(rows)
            except TypeError:  # a value orjson refuses (see _json_documents): generic path
                pass
            else:
                return self._write_json_table(documents)
        return self._write_executemany([encode_row(r) for r in rows])

    def _write_executemany(
        self, rows: Sequence[dict[str, Any]], table: sa.Table | None = None
    ) -> int:
        table = self.table if table is None else table
        if self.db.dialect in MYSQL_DIALECTS:
            stmt = mysql.insert(table).prefix_with("IGNORE")
        elif self.db.dialect == "sqlite":
            stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=["request_id"])
        else:
            stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=["request_id"])
        columns = [c for c in rows[0] if c in table.c]
        compiled = stmt.compile(dialect=self.db.engine.dialect, column_keys=columns)
        order = compiled.positiontup
        with self.db.begin() as conn:
            if order is None:  # a named paramstyle: SQLAlchemy's own executemany
                return max(conn.execute(stmt, list(rows)).rowcount, 0)
            # Plain tuples through the DBAPI executemany, as `FeatureStore._write` does for
            # ingestion (SQLAlchemy's per-row processing cost more than the insert itself here).
            keys = [compiled.binds[name].key for name in order]
            procs = [table.c[k].type._cached_bind_processor(self.db.engine.dialect) for k in keys]
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

    def _write_load_data(
        self, rows: Sequence[dict[str, Any]], table: sa.Table, names: Sequence[str]
    ) -> int | None:
        """The batch through `LOAD DATA LOCAL INFILE ... IGNORE` from a temporary file
        (0600 in a 0700 folder, deleted after): the server parses plain tab-separated
        text, no SQL and no JSON, and skips stored request ids. None when this path cannot
        take the batch, which the next path then writes (nothing is lost): a temporary
        file that cannot be written (then INSERT for a minute), a text UTF-8 cannot hold (a
        lone surrogate: request JSON cannot carry one), or the server refusing the load
        (then INSERT for the rest of the process). An outage raises, as on every path."""
        if time.monotonic() < self._spool_retry_at:
            return None
        try:
            spool = self._spool()
        except OSError as exc:  # a full or read-only temporary folder
            return self._pause_bulk(exc)
        with spool:  # deleted on close
            try:
                data = "".join([_tsv_line(row, names) for row in rows]).encode()
            except UnicodeEncodeError:
                return None
            try:
                spool.write(data)
                spool.flush()
            except OSError as exc:  # the folder filled up
                return self._pause_bulk(exc)
            return self._load_file(spool.name, table, names)

    def _pause_bulk(self, exc: OSError) -> None:
        """A temporary file failed: INSERT for SPOOL_RETRY_SECONDS, said once."""
        self._spool_retry_at = time.monotonic() + SPOOL_RETRY_SECONDS
        log.warning("prediction log: a temporary file for the bulk load failed (%s); writing "
                    "with INSERT for %d s", exc, SPOOL_RETRY_SECONDS)  # fmt: skip

    def _spool(self) -> IO[bytes]:
        """A new, empty temporary file for one batch (0600, deleted on close)."""
        if self._spool_dir is None or not self._spool_dir.is_dir():
            self._spool_dir = Path(tempfile.mkdtemp(prefix="ctloop-log-"))  # 0700
            # removed with this log object (or at exit): one empty folder per process
            weakref.finalize(self, shutil.rmtree, self._spool_dir, ignore_errors=True)
        return tempfile.NamedTemporaryFile(dir=self._spool_dir, suffix=".tsv")

    def _load_file(self, path: str, table: sa.Table, names: Sequence[str]) -> int | None:
        """Load one spooled batch; None (and no bulk path from now on) when the server
        refuses it for any reason but a lost connection, which is an outage."""
        if table.name not in self._load_sqls:
            quote = self.db.engine.dialect.identifier_preparer.quote_identifier
            # separators as hex literals: the same statement under any sql_mode
            # (NO_BACKSLASH_ESCAPES would change what '\t' means)
            self._load_sqls[table.name] = (
                "LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE "
                f"{quote(table.name)} CHARACTER SET utf8mb4 FIELDS TERMINATED BY X'09' "
                "ESCAPED BY X'5C' LINES TERMINATED BY X'0A' "
                f"({', '.join(quote(n) for n in names)})"
            )
        with self.db.local_file_begin(path) as conn:
            try:
                sql = self._load_sqls[table.name]
                return max(conn.exec_driver_sql(sql, (path,)).rowcount, 0)
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:  # an outage: the writer keeps the rows
                    raise
                failure = exc
        self.bulk_load = False
        self.db.dispose_local_files()
        reason = failure.orig if failure.orig is not None else failure
        code = failure.orig.args[0] if failure.orig is not None and failure.orig.args else None
        why = "refuses local files" if code in LOCAL_FILES_REFUSED else "failed the bulk load"
        log.warning("prediction log: the server %s (%s); writing with INSERT from now on",
                    why, reason)  # fmt: skip
        return None

    def _load_columns(self) -> list[str]:
        return [c.name for c in self.table.columns if c.name != "id"]

    def has_json_table(self) -> bool:
        """JSON_TABLE exists on MariaDB >= 10.6 and MySQL >= 8.0 (asked once)."""
        if self._json_table is None:
            with self.db.connect() as conn:
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

    def _write_json_table(self, documents: Sequence[str]) -> int:
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
            table = self.table
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
        with self.db.begin() as conn:
            return sum(max(conn.execute(statement, {"rows": doc}).rowcount, 0) for doc in documents)

    def read(
        self,
        view_name: str,
        start: dt.datetime,
        end: dt.datetime,
        model_version: str | None = None,
        expand_features: bool = True,
        role: str | None = None,
        fraction: float = 1.0,
        window: Window | None = None,
    ) -> pd.DataFrame:
        """Prediction logs of a view with start <= created_at < end, oldest first.

        `role` keeps one role's rows (`champion` includes rows logged before roles
        existed). A `fraction` under 1 keeps that share of the rows, in whole blocks of ids
        (`predlog.sample`; a bounded read's is `bounded_fraction` of a `window`'s rows): the
        database reads the kept blocks only where it knows the window's ids (`window`,
        what `self.window` counted over [start, end); else they are counted here first),
        and only the sample crosses the wire. With `expand_features`, the
        features become one column each and the class probabilities one `proba_<class>`
        column each, ready for drift statistics; for an online view `from_store` lists
        (comma-separated) the features the store supplied. Rows of the view's typed table
        and any it still has in the shared JSON table (logged before the typed table
        existed) are read alike; without `expand_features` each table's columns as stored
        (a typed row has no `features` text, a shared row no feature columns).
        """
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        frames = []
        layout = self.layout(view_name)
        if fraction < 1 and (window is None or not window.covers(start, end)):
            window = self.window(view_name, start, end)
        for table in self._tables(layout):
            query = (
                sa.select(table)
                .where(table.c.created_at >= start)
                .where(table.c.created_at < end)
                .order_by(table.c.created_at, table.c.id)
            )
            query = self.filtered(query, table, view_name, model_version, role)
            filters = [[]]
            if window is not None and fraction < 1:
                filters = sampled(table.c.id, fraction, window.spans.get(table.name))
            with self.db.read_connect() as conn:
                parts = [pd.read_sql(query.where(*keep), conn) for keep in filters]
            # an empty part's columns are objects, which would make every column one
            parts = [part for part in parts if not part.empty] or parts[:1]
            frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
            if len(parts) > 1:  # each part in order; together, ordered as one query would
                frame = frame.sort_values(["created_at", "id"], kind="stable", ignore_index=True)
            frames.append(frame)
        if expand_features:
            return self._expanded_union(frames, layout)
        if len(frames) == 1 or frames[1].empty:
            return frames[0]
        typed = frames[1].assign(feature_view=view_name)
        both = typed if frames[0].empty else pd.concat([frames[0], typed], ignore_index=True)
        return both.sort_values("created_at", kind="stable", ignore_index=True)

    def filtered(
        self,
        query: sa.Select[Any],
        table: sa.Table,
        view_name: str | None,
        model_version: str | None = None,
        role: str | None = None,
    ) -> sa.Select[Any]:
        """A query on the shared or a view's table narrowed to a view, version and role."""
        if view_name is not None and table is self.table:
            query = query.where(table.c.feature_view == view_name)
        if model_version is not None:
            query = query.where(table.c.model_version == str(model_version))
        if role == CHAMPION_ROLE:  # rows from before roles existed are the champion's
            query = query.where(sa.or_(table.c.role.is_(None), table.c.role == role))
        elif role is not None:
            query = query.where(table.c.role == role)
        return query

    @staticmethod
    def _expanded_union(frames: list[pd.DataFrame], layout: TypedLayout | None) -> pd.DataFrame:
        """The shared table's rows and the typed table's, expanded alike, oldest first."""
        shared = _expanded(frames[0])
        if layout is None:
            return shared
        typed = layout.expand(frames[1])
        if shared.empty:
            return typed
        if typed.empty:
            return shared
        both = pd.concat([shared, typed], ignore_index=True)
        return both.sort_values("created_at", kind="stable", ignore_index=True)

    def read_requests(
        self, view_name: str, request_ids: Sequence[str], model_version: str | None = None
    ) -> pd.DataFrame:
        """A view's rows of these request ids (`REQUEST_CHUNK` ids a query), features
        expanded as `read` does: the shadow rows of a sample of the champion's requests."""
        layout = self.layout(view_name)
        frames: list[list[pd.DataFrame]] = [[], []]
        for chunk in _chunked(request_ids):
            for j, table in enumerate(self._tables(layout)):
                query = (
                    sa.select(table)
                    .where(table.c.request_id.in_(chunk))
                    .order_by(table.c.created_at, table.c.id)
                )
                query = self.filtered(query, table, view_name, model_version)
                with self.db.read_connect() as conn:
                    frames[j].append(pd.read_sql(query, conn))
        if not frames[0]:  # no ids: no rows, with the columns a read has
            return self.read(view_name, dt.datetime.min, dt.datetime.min, model_version)
        joined = [pd.concat(f, ignore_index=True) for f in frames if f]
        return self._expanded_union(joined, layout)

    def count(
        self,
        view_name: str | None = None,
        role: str | None = None,
        before: dt.datetime | None = None,
        since: dt.datetime | None = None,
    ) -> int:
        """Rows logged (for one view, or all; of one role, `champion` including rows from
        before roles; logged in [since, before)): what tests and the demo compare with
        answers, what a prune would delete, and what a bounded read samples from. Counts
        the shared table and the views' typed tables."""
        total = 0
        with self.db.connect() as conn:
            for table in self._all_tables(view_name):
                query = sa.select(sa.func.count()).select_from(table)
                if since is not None:
                    query = query.where(table.c.created_at >= since)
                if before is not None:
                    query = query.where(table.c.created_at < before)
                query = self.filtered(query, table, view_name, role=role)
                total += conn.execute(query).scalar_one()
        return total

    def window(
        self,
        view_name: str,
        since: dt.datetime,
        before: dt.datetime,
        estimate_from: int | None = None,
    ) -> Window:
        """`count` of a view's rows in [since, before), with each table's lowest and
        highest row id among them (one pass along the time index, no row read): the
        span a sampled read names its blocks in.

        That pass costs about 0.5 us a row (5 s for 10M rows), too much for a look-back
        of many busy days, whose size only sets a sampled share. With `estimate_from`, a
        MariaDB/MySQL table whose optimizer estimates at least that many rows in the range
        (from index dives, no pass; an estimate, InnoDB's capped at half the table) is not
        counted: the estimate stands for its rows and the table's whole id range (its two
        ends, read from the key) for its span. A smaller estimate is counted exactly, so
        a range the optimizer underrates stays bounded."""
        rows, spans = 0, {}
        with self.db.read_connect() as conn:
            for table in self._all_tables(view_name):
                where = (table.c.created_at >= since, table.c.created_at < before)
                if estimate_from is not None and self.db.dialect in MYSQL_DIALECTS:
                    guess = self._estimate(conn, table, view_name, where)
                    if guess >= estimate_from:
                        ends = sa.select(sa.func.min(table.c.id), sa.func.max(table.c.id))
                        first, last = conn.execute(ends).one()
                        if first is not None:  # (an estimate for an empty table)
                            rows += guess
                            spans[table.name] = (int(first), int(last))
                        continue
                query = sa.select(sa.func.count(), sa.func.min(table.c.id), sa.func.max(table.c.id))
                query = self.filtered(query.where(*where), table, view_name)
                counted, first, last = conn.execute(query).one()
                rows += counted
                if counted:
                    spans[table.name] = (int(first), int(last))
        return Window(rows, spans, since, before)

    def _estimate(
        self, conn: sa.Connection, table: sa.Table, view_name: str, where: tuple[Any, ...]
    ) -> int:
        """The optimizer's estimate of a view's rows of this table in a time range."""
        query = self.filtered(sa.select(sa.func.count()).select_from(table).where(*where),
                              table, view_name)  # fmt: skip
        compiled = query.compile(dialect=conn.dialect)
        params: Any = compiled.params
        if compiled.positional:
            params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        plan = conn.exec_driver_sql(f"EXPLAIN {compiled.string}", params).mappings().all()
        return int(plan[0]["rows"] or 0) if plan else 0

    def request_ids(
        self,
        view_name: str | None = None,
        since: dt.datetime | None = None,
        through: dt.datetime | None = None,
    ) -> list[str]:
        """The request ids logged (for one view, or all; with since <= created_at <=
        through), from every table that holds rows: what a load test or a fault test
        compares with the answers it got."""
        ids: list[str] = []
        with self.db.connect() as conn:
            for table in self._all_tables(view_name):
                query = self.filtered(sa.select(table.c.request_id), table, view_name)
                if since is not None:
                    query = query.where(table.c.created_at >= since)
                if through is not None:
                    query = query.where(table.c.created_at <= through)
                ids += conn.execute(query).scalars()
        return ids

    def delete_before(self, view_name: str, before: dt.datetime, chunk_rows: int) -> Iterator[int]:
        """Delete a view's rows logged before `before`, `chunk_rows` at a time, each chunk
        in its own transaction (the writers' inserts never queue behind one long delete);
        yields the rows each chunk deleted, oldest first, until none is left: the shared
        table's first, then the view's typed table's."""
        layout = self.layout(view_name)
        for table in self._tables(layout):
            yield from self._delete_chunks(table, view_name, before, chunk_rows)

    def _delete_chunks(
        self, table: sa.Table, view_name: str, before: dt.datetime, chunk_rows: int
    ) -> Iterator[int]:
        params = {"view": view_name, "before": before, "n": chunk_rows}
        name = self.db.engine.dialect.identifier_preparer.quote_identifier(table.name)
        of_view = "feature_view = :view AND " if table is self.table else ""
        if self.db.dialect in MYSQL_DIALECTS:  # DELETE ... LIMIT, along the time index
            statement = sa.text(
                f"DELETE FROM {name} WHERE {of_view}created_at < :before "  # noqa: S608
                "ORDER BY created_at LIMIT :n"
            )
        else:  # SQLite, PostgreSQL: no DELETE ... LIMIT; a limited id subquery
            statement = sa.text(
                f"DELETE FROM {name} WHERE id IN (SELECT id FROM {name} "  # noqa: S608
                f"WHERE {of_view}created_at < :before ORDER BY id LIMIT :n)"
            )
        while True:
            with self.db.begin() as conn:
                deleted = max(conn.execute(statement, params).rowcount, 0)
            if deleted:
                yield deleted
            if deleted < chunk_rows:
                return


def _chunked(request_ids: Sequence[str]) -> Iterator[list[str]]:
    """Request ids `REQUEST_CHUNK` at a time: one IN list a query, under the server's
    packet and placeholder limits."""
    for i in range(0, len(request_ids), REQUEST_CHUNK):
        yield list(request_ids[i : i + REQUEST_CHUNK])


def _tsv_line(row: dict[str, Any], names: Sequence[str]) -> str:
    r"""One row as LOAD DATA reads it: tab-separated, `\N` for NULL, the escape character,
    tab, newline, carriage return and NUL escaped (the caller encodes it as UTF-8).
    Most fields of a typed row are floats, whose repr needs no escaping: they are tested
    first, by exact type (the writer's hot loop)."""
    fields = []
    for name in names:
        value = row.get(name)
        kind = type(value)
        if kind is float:
            fields.append(float.__repr__(value))
            continue
        if value is None:
            fields.append("\\N")
            continue
        if kind is str:
            text = value
        elif isinstance(value, dt.datetime):  # as the drivers bind one: no zone, microseconds
            text = value.strftime("%Y-%m-%d %H:%M:%S.%f")
        elif isinstance(value, float):
            text = float.__repr__(value)  # a numpy float's repr is "np.float64(...)"
        else:
            text = str(value)
        if _TSV_SPECIAL.search(text):
            text = _TSV_SPECIAL.sub(lambda m: _TSV_ESCAPES[m.group()], text)
        fields.append(text)
    return "\t".join(fields) + "\n"


def _expanded(frame: pd.DataFrame) -> pd.DataFrame:
    """Log rows with the JSON features as one column each and the class probabilities
    as one `proba_<class>` column each, ready for drift statistics; for an online view
    `from_store` lists (comma-separated) the features the store supplied."""
    if frame.empty:
        return frame
    feats = pd.DataFrame([decode_json(s) for s in frame["features"]], index=frame.index)
    if FROM_STORE in feats.columns:  # online requests: which features the store supplied
        names = feats.pop(FROM_STORE)
        feats["from_store"] = [",".join(n) if isinstance(n, list) else "" for n in names]
    # regression rows carry no probabilities ({}): zero columns, not zero rows
    probs = pd.DataFrame([decode_json(s) for s in frame["probabilities"]], index=frame.index)
    probs.columns = [f"proba_{c}" for c in probs.columns]
    base = frame.drop(columns=["features", "probabilities"])
    return pd.concat([base, feats, probs], axis=1)
