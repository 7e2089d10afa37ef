"""Table definitions derived from a feature view.

The same SQLAlchemy Core metadata creates the tables on MariaDB and on SQLite, so the
embedded default and the production path cannot drift apart.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from ctloop.features.spec import CATEGORY_LEN, ENTITY_LEN
from ctloop.features.view import FeatureView

# DATETIME with microseconds on MariaDB (its default keeps whole seconds only).
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# read back as float: SQLAlchemy's MySQL DOUBLE returns Decimal rounded to 10 places by
# default (a logged 1e-300 came back as -0.0)
Double = sa.Float(precision=53).with_variant(mysql.DOUBLE(asdecimal=False), "mysql", "mariadb")
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

# Binary collation: keys and categories compare as bytes, as pandas, CatBoost and the
# import's duplicate check compare them. MariaDB's default utf8mb4 collation is case- and
# accent-insensitive, so `Case1`/`case1` (or `Jose`/`José`) on one date were one primary
# key: the second row's values landed silently under the first key.
BINARY_COLLATION = "utf8mb4_bin"
MYSQL_OPTS = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": BINARY_COLLATION,
}

PREDICTION_LOG = "prediction_log"
# columns added to a table after it first shipped: `init` adds them to older databases
ADDED_COLUMNS = {PREDICTION_LOG: ("role",)}
DRIFT_REPORT = "drift_report"
CT_RUN_LOCK = "ct_run_lock"


def features_table(view: FeatureView, metadata: sa.MetaData) -> sa.Table:
    """`<fv>_features`: one row per entity and event date, one typed column per feature."""
    columns: list[sa.Column] = [
        sa.Column(view.entity, sa.String(ENTITY_LEN), primary_key=True),
        sa.Column(view.event_date, sa.Date, primary_key=True),
    ]
    for feature in view.features:
        col_type = Double if feature.is_numeric else sa.String(CATEGORY_LEN)
        columns.append(sa.Column(feature.name, col_type, nullable=True))
    columns.append(sa.Column("ingested_at", Timestamp, nullable=False))
    return sa.Table(
        view.features_table,
        metadata,
        *columns,
        sa.Index(view.store_identifiers()["features date index"], view.event_date),
        **MYSQL_OPTS,
    )


def labels_table(view: FeatureView, metadata: sa.MetaData) -> sa.Table:
    """`<fv>_labels`: the label of an entity-day and when it arrived (labels land late)."""
    return sa.Table(
        view.labels_table,
        metadata,
        sa.Column(view.entity, sa.String(ENTITY_LEN), primary_key=True),
        sa.Column(view.event_date, sa.Date, primary_key=True),
        sa.Column(
            view.label.name,
            Double if view.label.is_regression else sa.String(CATEGORY_LEN),
            nullable=False,
        ),
        sa.Column("arrived_at", Timestamp, nullable=False),
        sa.Index(view.store_identifiers()["labels date index"], view.event_date),
        sa.Index(view.store_identifiers()["labels arrival index"], "arrived_at"),
        **MYSQL_OPTS,
    )


def _log_keys(partitioned: bool) -> tuple[sa.Column, sa.Column]:
    """A log table's row id and request id. A partitioned table's unique keys must hold
    its partitioning column (`created_at`), so there the request id is unique only with
    it (each table adds that constraint under its own name)."""
    return (
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("request_id", sa.String(64), nullable=False, unique=not partitioned),
    )


def _created_at(partitioned: bool) -> sa.Column:
    """When the request was answered: part of the primary key where it partitions the log."""
    return sa.Column("created_at", Timestamp, nullable=False, primary_key=partitioned)


def prediction_log_table(metadata: sa.MetaData, partition_by: str | None = None) -> sa.Table:
    """`prediction_log`: one row per answered prediction, shared by all views.

    `request_id` is unique so that a replayed batch (after a database outage) can never
    write a row twice. With `partition_by` (MariaDB/MySQL: day partitions, see
    `ctloop.store.partitions`) every unique key must hold the partitioning column, so the
    keys are (id, created_at) and (request_id, created_at): a replay carries the row's
    own `created_at` (set when the request was answered), so it still meets its first
    copy and is skipped.
    """
    partitioned = partition_by is not None
    keys: list[sa.SchemaItem] = [
        sa.Index("ix_prediction_log_view_time", "feature_view", "created_at"),
        sa.Index("ix_prediction_log_entity", "feature_view", "entity_id"),
    ]
    if partitioned:
        keys.append(
            sa.UniqueConstraint("request_id", "created_at", name="uq_prediction_log_request")
        )
    return sa.Table(
        PREDICTION_LOG,
        metadata,
        *_log_keys(partitioned),
        sa.Column("feature_view", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.String(ENTITY_LEN), nullable=True),
        sa.Column("features", LongText, nullable=False),
        sa.Column("prediction", sa.String(CATEGORY_LEN), nullable=False),
        sa.Column("probabilities", sa.Text, nullable=False),
        sa.Column("latency_ms", Double, nullable=False),
        _created_at(partitioned),
        # champion | shadow (a challenger scoring the same request off the request path) |
        # canary; NULL in rows written before roles existed: the champion's
        sa.Column("role", sa.String(16), nullable=True),
        *keys,
        **MYSQL_OPTS,
        **({"mysql_partition_by": partition_by} if partitioned else {}),
    )


EXTRA = "_extra"  # a view log's JSON of values no column holds (no identifier starts with _)
EVENT_DATE_PREFIX = "_ed_"


def event_date_column(event_date: str) -> str:
    """A view log's column of the event date a caller sent (see `view_log_table`)."""
    return f"{EVENT_DATE_PREFIX}{event_date}"


def view_log_table(
    view: FeatureView, metadata: sa.MetaData, partition_by: str | None = None
) -> sa.Table:
    """`<fv>_predictions`: the view's prediction log, one typed column per feature.

    The shared `prediction_log` keeps a row's features as one JSON text; a typed column is
    about a third of the bytes, costs the server no JSON to store, and lets the monitor
    count buckets with GROUP BY instead of parsing every row. Same keys as the shared
    log (request ids unique, with `created_at` when partitioned by day). Feature names
    cannot collide with the fixed columns (`RESERVED_COLUMNS`). `_ed_<event date>` holds
    the event date a caller sent (ISO text, as in the JSON form; the view's name for it
    may be one of the fixed columns', so it carries a prefix no identifier can have, and
    the reader takes the name back from it); `from_store` the features an
    online view took from the store (comma-separated); `_extra` (JSON: no view column can
    take the name) any logged value its
    column cannot hold exactly (a feature added to the view before `init-db` gave it a
    column, an integer past 2^53, a category longer than the column), so nothing a caller
    sent is lost or changed.
    """
    names = view.store_identifiers()
    partitioned = partition_by is not None
    keys: list[sa.SchemaItem] = [
        sa.Index(names["log time index"], "created_at"),
        sa.Index(names["log entity index"], "entity_id"),
    ]
    if partitioned:
        keys.append(sa.UniqueConstraint("request_id", "created_at", name=names["log request key"]))
    features = [
        sa.Column(f.name, Double if f.is_numeric else sa.String(CATEGORY_LEN), nullable=True)
        for f in view.features
    ]
    return sa.Table(
        view.log_table,
        metadata,
        *_log_keys(partitioned),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("entity_id", sa.String(ENTITY_LEN), nullable=True),
        sa.Column("prediction", sa.String(CATEGORY_LEN), nullable=False),
        sa.Column("latency_ms", Double, nullable=False),
        _created_at(partitioned),
        *features,
        sa.Column(event_date_column(view.event_date), sa.String(32), nullable=True),
        sa.Column("from_store", sa.Text, nullable=True),
        sa.Column(EXTRA, LongText, nullable=True),
        sa.Column("probabilities", sa.Text, nullable=False),
        *keys,
        **MYSQL_OPTS,
        **({"mysql_partition_by": partition_by} if partitioned else {}),
    )


def drift_report_table(metadata: sa.MetaData) -> sa.Table:
    """`drift_report`: one row per feature (or prediction / accuracy check) per monitor run."""
    return sa.Table(
        DRIFT_REPORT,
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("check_id", sa.String(64), nullable=False),
        sa.Column("feature_view", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("feature", sa.String(64), nullable=False),
        sa.Column("statistic", sa.String(64), nullable=False),
        sa.Column("value", Double, nullable=True),
        sa.Column("threshold", Double, nullable=True),
        sa.Column("drifted", sa.Boolean, nullable=False),
        sa.Column("window_start", Timestamp, nullable=False),
        sa.Column("window_end", Timestamp, nullable=False),
        sa.Column("n_reference", sa.Integer, nullable=False),
        sa.Column("n_current", sa.Integer, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Index("ix_drift_report_view_time", "feature_view", "created_at"),
        sa.Index("ix_drift_report_check", "check_id"),
        **MYSQL_OPTS,
    )


def ct_run_lock_table(metadata: sa.MetaData) -> sa.Table:
    """`ct_run_lock`: the lease of the one CT run of a view in progress (`store.ctlock`)."""
    return sa.Table(
        CT_RUN_LOCK,
        metadata,
        sa.Column("feature_view", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        **MYSQL_OPTS,
    )


def shared_tables(
    metadata: sa.MetaData, log_partition_by: str | None = None
) -> tuple[sa.Table, sa.Table, sa.Table]:
    """The tables every view shares: the prediction log (partitioned by `log_partition_by`
    where given), the drift report, the CT leases."""
    return (
        prediction_log_table(metadata, log_partition_by),
        drift_report_table(metadata),
        ct_run_lock_table(metadata),
    )


INGEST_FILES = "ingest_files"
INGEST_REJECTS = "ingest_rejects"
INGEST_RUNS = "ingest_runs"
INGEST_WATERMARKS = "ingest_watermarks"


def ingest_tables(metadata: sa.MetaData) -> tuple[sa.Table, ...]:
    """Ingestion's bookkeeping, shared by all views: the ledger of files taken (one row per
    file and outcome, keyed by checksum so a file is taken once whatever its name), the
    rejected rows (row, column, reason), one row per source per ingest run (what `ctloop
    status` lists), and the watermark of each SQL source."""
    files = sa.Table(
        INGEST_FILES,
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("feature_view", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("rows_read", sa.Integer, nullable=False),
        sa.Column("rows_taken", sa.Integer, nullable=False),
        sa.Column("rows_rejected", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("moved_to", sa.String(512), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("taken_at", Timestamp, nullable=False),
        sa.Index("ix_ingest_files_checksum", "feature_view", "source", "sha256"),
        **MYSQL_OPTS,
    )
    rejects = sa.Table(
        INGEST_REJECTS,
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("feature_view", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("batch", sa.String(512), nullable=False),
        sa.Column("row_number", sa.Integer, nullable=True),
        sa.Column("column_name", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Index("ix_ingest_rejects_batch", "feature_view", "source", "batch"),
        **MYSQL_OPTS,
    )
    runs = sa.Table(
        INGEST_RUNS,
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("feature_view", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("interval_start", Timestamp, nullable=True),
        sa.Column("interval_end", Timestamp, nullable=True),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("batches", sa.Integer, nullable=False),
        sa.Column("taken", sa.Integer, nullable=False),
        sa.Column("rejected", sa.Integer, nullable=False),
        sa.Column("duplicates", sa.Integer, nullable=False),
        sa.Column("late_labels", sa.Integer, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=False),
        sa.Index("ix_ingest_runs_view_time", "feature_view", "finished_at"),
        **MYSQL_OPTS,
    )
    watermarks = sa.Table(
        INGEST_WATERMARKS,
        metadata,
        sa.Column("feature_view", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("watermark", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        **MYSQL_OPTS,
    )
    return files, rejects, runs, watermarks
