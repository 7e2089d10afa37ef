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
import json
import logging
import re
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from ctloop.predlog.row import JSON_FIELDS, encode_row
from ctloop.settings import get_settings
from ctloop.store import tables
from ctloop.store.engine import MYSQL_DIALECTS, Database

log = logging.getLogger(__name__)

# the roles of a log row: who answered the caller, or who scored the request beside it
CHAMPION_ROLE, SHADOW_ROLE, CANARY_ROLE = "champion", "shadow", "canary"
# a shadow row's request id: the caller's request id + this (request ids are unique)
SHADOW_SUFFIX = ".shadow"
# the features-JSON key naming the features serving took from the store (online views)
FROM_STORE = "_from_store"
# A sampled read keeps the rows whose id hashes below the fraction: Fibonacci hashing
# (id times 2^31 over the golden ratio, modulo 2^31) spreads consecutive ids evenly over
# [0, 2^31), so the kept rows spread evenly over the window's time and over any pattern in
# which roles or views interleave their ids; plain integer arithmetic (every dialect, no
# overflow of a signed 64-bit integer), and the same rows on every read of the window.
SAMPLE_MODULUS = 1 << 31
SAMPLE_MULTIPLIER = 1_327_217_885
REQUEST_CHUNK = 5_000  # request ids per `read_requests` query
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
        self._load_sql: str | None = None
        self._spool_dir: Path | None = None  # a 0700 folder of this log's own, made on use
        self._spool_retry_at = 0.0  # after a failed spool file, INSERT until then
        self._json_table: bool | None = None  # does the server have JSON_TABLE (MariaDB)?
        self._json_table_sql: str | None = None
        self._hex_documents = db.engine.dialect.driver == "pymysql"

    def write(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert prediction log rows; a row whose request id is already stored is skipped.

        `features` and `probabilities` may be Python objects (the serving writer's rows)
        or JSON text (stored as given). Skipping duplicates is what makes replaying a
        spilled batch after an outage safe. Returns the number of rows newly written.
        """
        if not rows:
            return 0
        if self.bulk_load:
            written = self._write_load_data(rows)
            if written is not None:
                return written
        if self.db.dialect in MYSQL_DIALECTS and self._has_json_table():
            try:
                documents = self._json_documents(rows)
            except TypeError:  # a value orjson refuses (see _json_documents): generic path
                pass
            else:
                return self._write_json_table(documents)
        return self._write_executemany([encode_row(r) for r in rows])

    def _write_executemany(self, rows: Sequence[dict[str, Any]]) -> int:
        table = self.table
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

    def _write_load_data(self, rows: Sequence[dict[str, Any]]) -> int | None:
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
            names = self._load_columns()
            try:
                data = "".join([_tsv_line(encode_row(row), names) for row in rows]).encode()
            except UnicodeEncodeError:
                return None
            try:
                spool.write(data)
                spool.flush()
            except OSError as exc:  # the folder filled up
                return self._pause_bulk(exc)
            return self._load_file(spool.name)

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

    def _load_file(self, path: str) -> int | None:
        """Load one spooled batch; None (and no bulk path from now on) when the server
        refuses it for any reason but a lost connection, which is an outage."""
        if self._load_sql is None:
            # separators as hex literals: the same statement under any sql_mode
            # (NO_BACKSLASH_ESCAPES would change what '\t' means)
            self._load_sql = (
                "LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE "
                f"{self.table.name} CHARACTER SET utf8mb4 FIELDS TERMINATED BY X'09' "
                "ESCAPED BY X'5C' LINES TERMINATED BY X'0A' "
                f"({', '.join(self._load_columns())})"
            )
        with self.db.local_file_begin(path) as conn:
            try:
                return max(conn.exec_driver_sql(self._load_sql, (path,)).rowcount, 0)
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

    def _has_json_table(self) -> bool:
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
    ) -> pd.DataFrame:
        """Prediction logs of a view with start <= created_at < end, oldest first.

        `role` keeps one role's rows (`champion` includes rows logged before roles
        existed). A `fraction` under 1 keeps that share of the rows, chosen by a hash of
        their id (`sample_fraction` gives the fraction for a bounded read); the database
        filters them, so only the sample crosses the wire. With `expand_features`, the
        JSON features become one column each and the class
        probabilities one `proba_<class>` column each, ready for drift statistics; for an
        online view `from_store` lists (comma-separated) the features the store supplied.
        """
        table = self.table
        query = (
            sa.select(table)
            .where(table.c.feature_view == view_name)
            .where(table.c.created_at >= start)
            .where(table.c.created_at < end)
            .order_by(table.c.created_at, table.c.id)
        )
        if model_version is not None:
            query = query.where(table.c.model_version == str(model_version))
        if role == CHAMPION_ROLE:  # rows from before roles existed are the champion's
            query = query.where(sa.or_(table.c.role.is_(None), table.c.role == role))
        elif role is not None:
            query = query.where(table.c.role == role)
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if fraction < 1:
            query = query.where(_hashed(table.c.id) < _threshold(fraction))
        with self.db.read_connect() as conn:
            frame = pd.read_sql(query, conn)
        return _expanded(frame) if expand_features else frame

    def read_requests(
        self, view_name: str, request_ids: Sequence[str], model_version: str | None = None
    ) -> pd.DataFrame:
        """A view's rows of these request ids (`REQUEST_CHUNK` ids a query), features
        expanded as `read` does: the shadow rows of a sample of the champion's requests."""
        table = self.table
        frames = []
        for i in range(0, len(request_ids), REQUEST_CHUNK):
            query = (
                sa.select(table)
                .where(table.c.feature_view == view_name)
                .where(table.c.request_id.in_(list(request_ids[i : i + REQUEST_CHUNK])))
                .order_by(table.c.created_at, table.c.id)
            )
            if model_version is not None:
                query = query.where(table.c.model_version == str(model_version))
            with self.db.read_connect() as conn:
                frames.append(pd.read_sql(query, conn))
        if not frames:  # no ids: no rows, with the columns a read has
            return self.read(view_name, dt.datetime.min, dt.datetime.min, model_version)
        return _expanded(pd.concat(frames, ignore_index=True))

    def sample_fraction(
        self, view_name: str, start: dt.datetime, end: dt.datetime, max_rows: int
    ) -> float:
        """The `fraction` for `read` that brings about `max_rows` of the window's rows at
        most (1 when the window holds no more). Counted over every role and version, along
        the (view, time) index without reading a row, so a read of one role's or one
        version's rows stays under the bound too."""
        return bounded_fraction(self.count(view_name, since=start, before=end), max_rows)

    def count(
        self,
        view_name: str | None = None,
        role: str | None = None,
        before: dt.datetime | None = None,
        since: dt.datetime | None = None,
    ) -> int:
        """Rows logged (for one view, or all; of one role, `champion` including rows from
        before roles; logged in [since, before)): what tests and the demo compare with
        answers, what a prune would delete, and what a bounded read samples from."""
        table = self.table
        query = sa.select(sa.func.count()).select_from(table)
        if view_name is not None:
            query = query.where(table.c.feature_view == view_name)
        if since is not None:
            query = query.where(table.c.created_at >= since)
        if before is not None:
            query = query.where(table.c.created_at < before)
        if role == CHAMPION_ROLE:
            query = query.where(sa.or_(table.c.role.is_(None), table.c.role == role))
        elif role is not None:
            query = query.where(table.c.role == role)
        with self.db.connect() as conn:
            return conn.execute(query).scalar_one()

    def delete_before(self, view_name: str, before: dt.datetime, chunk_rows: int) -> Iterator[int]:
        """Delete a view's rows logged before `before`, `chunk_rows` at a time, each chunk
        in its own transaction (the writers' inserts never queue behind one long delete);
        yields the rows each chunk deleted, oldest first, until none is left."""
        params = {"view": view_name, "before": before, "n": chunk_rows}
        if self.db.dialect in MYSQL_DIALECTS:  # DELETE ... LIMIT, along the (view, time) index
            statement = sa.text(
                "DELETE FROM prediction_log WHERE feature_view = :view AND created_at < :before "
                "ORDER BY created_at LIMIT :n"
            )
        else:  # SQLite, PostgreSQL: no DELETE ... LIMIT; a limited id subquery
            statement = sa.text(
                "DELETE FROM prediction_log WHERE id IN (SELECT id FROM prediction_log "
                "WHERE feature_view = :view AND created_at < :before ORDER BY id LIMIT :n)"
            )
        while True:
            with self.db.begin() as conn:
                deleted = max(conn.execute(statement, params).rowcount, 0)
            if deleted:
                yield deleted
            if deleted < chunk_rows:
                return


def bounded_fraction(rows: int, max_rows: int) -> float:
    """The sampled share that brings `rows` down to about `max_rows` (1: no sampling)."""
    return 1.0 if rows <= max_rows else max_rows / rows


def in_sample(ids: pd.Series, fraction: float) -> np.ndarray:
    """Which of these log row ids a read at `fraction` keeps: the database's filter, in
    numpy. The hash is fixed, so a smaller fraction keeps a subset of a larger one's rows,
    and rows already read at one fraction can be cut down to a smaller one without a
    second read."""
    if fraction >= 1:
        return np.ones(len(ids), dtype=bool)
    return _hashed(ids.to_numpy(dtype=np.int64)) < _threshold(fraction)


def _tsv_line(row: dict[str, Any], names: Sequence[str]) -> str:
    r"""One row as LOAD DATA reads it: tab-separated, `\N` for NULL, the escape character,
    tab, newline, carriage return and NUL escaped (the caller encodes it as UTF-8)."""
    fields = []
    for name in names:
        value = row.get(name)
        if value is None:
            fields.append("\\N")
            continue
        if isinstance(value, dt.datetime):  # as the drivers bind one: no zone, microseconds
            text = value.strftime("%Y-%m-%d %H:%M:%S.%f")
        elif isinstance(value, float):
            text = float.__repr__(value)  # a numpy float's repr is "np.float64(...)"
        else:
            text = str(value)
        if _TSV_SPECIAL.search(text):
            text = _TSV_SPECIAL.sub(lambda m: _TSV_ESCAPES[m.group()], text)
        fields.append(text)
    return "\t".join(fields) + "\n"


def _hashed(ids: Any) -> Any:
    """The sample's hash of row ids: one expression for the SQL column and the numpy array,
    so the database's filter and `in_sample` cannot drift apart."""
    return ((ids % SAMPLE_MODULUS) * SAMPLE_MULTIPLIER) % SAMPLE_MODULUS


def _threshold(fraction: float) -> int:
    return max(1, round(fraction * SAMPLE_MODULUS))


def _loads(text: str) -> Any:
    """Parsed by orjson for speed (a sampled check parses 400k documents); by the standard
    parser when orjson refuses one (NaN, which `json.dumps` writes, in older rows)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _expanded(frame: pd.DataFrame) -> pd.DataFrame:
    """Log rows with the JSON features as one column each and the class probabilities
    as one `proba_<class>` column each, ready for drift statistics; for an online view
    `from_store` lists (comma-separated) the features the store supplied."""
    if frame.empty:
        return frame
    feats = pd.DataFrame([_loads(s) for s in frame["features"]], index=frame.index)
    if FROM_STORE in feats.columns:  # online requests: which features the store supplied
        names = feats.pop(FROM_STORE)
        feats["from_store"] = [",".join(n) if isinstance(n, list) else "" for n in names]
    # regression rows carry no probabilities ({}): zero columns, not zero rows
    probs = pd.DataFrame([_loads(s) for s in frame["probabilities"]], index=frame.index)
    probs.columns = [f"proba_{c}" for c in probs.columns]
    base = frame.drop(columns=["features", "probabilities"])
    return pd.concat([base, feats, probs], axis=1)
