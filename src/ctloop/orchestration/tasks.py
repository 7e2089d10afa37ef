"""Glue between Airflow and the ctloop pipeline, for the DAGs in `dags/` only.

A DAG task body is one call into this module, which turns the Airflow context into the
plain values the pipeline steps take (`Run`, the feature-store URL) and the steps' outcomes
into what Airflow understands: return values for XCom, `AirflowFailException` for a
refusal that a retry cannot change.

Kept cheap to import (no pandas, MLflow, database access or even Airflow at module level):
DAG files import it at parse time, which happens often, and its pure helpers (connection
to URL, trigger kind, as-of date) can be unit-tested without configuring Airflow.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ctloop.errors import CtloopError, StoreUnavailableError

if TYPE_CHECKING:
    from airflow.sdk import Asset

    from ctloop.training.pipeline import Run

log = logging.getLogger(__name__)

FEATURE_STORE_CONN_ID = "feature_store"
"""The Airflow connection holding the feature store (`AIRFLOW_CONN_FEATURE_STORE`)."""

# Airflow connection type -> SQLAlchemy driver name. MariaDB/MySQL use the pure-Python
# PyMySQL driver unless the connection's extra says otherwise.
_DRIVERS = {
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "sqlite": "sqlite",
}
# The MySQL provider's `client` extra -> the SQLAlchemy driver for that client library.
_MYSQL_CLIENTS = {
    "mysqlclient": "mysql+mysqldb",
    "mysql-connector-python": "mysql+mysqlconnector",
    "pymysql": "mysql+pymysql",
}
# Connection extras passed on as URL query parameters (understood by the MySQL drivers).
_QUERY_EXTRAS = ("charset", "unix_socket", "ssl_ca", "ssl_cert", "ssl_key")

# Run types as Airflow names them (`DagRunType` values) -> ctloop trigger kinds.
_RUN_TYPE_TRIGGERS = {
    "scheduled": "schedule",
    "backfill": "schedule",
    "asset_triggered": "new-data",
    "asset_materialization": "new-data",
    "manual": "manual",
    "operator_triggered": "manual",
}


# ---------------------------------------------------------------------------- assets


def asset_uri(view: str) -> str:
    """The URI of the Asset that stands for a view's rows in the feature store."""
    return f"ctloop://feature_store/{view}"


def feature_store_asset(view: str) -> Asset:
    """The Asset ingestion updates and the CT DAG is scheduled on (same object both sides)."""
    from airflow.sdk import Asset

    return Asset(name=asset_uri(view), uri=asset_uri(view), group="feature_store")


# ---------------------------------------------------------------------------- connection


def connection_to_url(conn: Any) -> str:
    """A SQLAlchemy URL (with its password) from an Airflow connection.

    `conn` is anything with the attributes of `airflow.sdk.Connection` (conn_type, host,
    port, login, password, schema, extra_dejson). `mysql`/`mariadb` connections become
    `mysql+pymysql://` URLs; the extra `client` (`mysqlclient`, `mysql-connector-python`)
    or `sqlalchemy_scheme` choose another driver; `charset`, `unix_socket` and an `ssl`
    mapping (ca/cert/key) are passed on as URL query parameters.
    """
    from sqlalchemy.engine import URL

    conn_type = (conn.conn_type or "").strip().lower()
    extra = dict(conn.extra_dejson or {})
    if extra.get("sqlalchemy_scheme"):
        driver = str(extra["sqlalchemy_scheme"])
    elif "+" in conn_type:  # a URI such as mysql+pymysql://... keeps its driver
        driver = conn_type
    elif conn_type in _DRIVERS:
        driver = _DRIVERS[conn_type]
        if driver.startswith("mysql") and extra.get("client"):
            if extra["client"] not in _MYSQL_CLIENTS:
                raise CtloopError(
                    f"connection {getattr(conn, 'conn_id', '?')}: unknown MySQL client "
                    f"'{extra['client']}' (expected one of {', '.join(_MYSQL_CLIENTS)})"
                )
            driver = _MYSQL_CLIENTS[extra["client"]]
    else:
        raise CtloopError(
            f"connection {getattr(conn, 'conn_id', '?')}: type '{conn.conn_type}' is not a "
            f"supported feature store (use one of {', '.join(sorted(_DRIVERS))})"
        )
    if driver == "sqlite":
        # Airflow keeps a SQLite file path in `host` (sqlite:///path -> host "/path").
        path = conn.host or conn.schema or ""
        return f"sqlite:///{path}" if path else "sqlite://"
    query = {key: str(extra[key]) for key in _QUERY_EXTRAS if extra.get(key)}
    ssl = extra.get("ssl")
    if isinstance(ssl, str):
        with contextlib.suppress(ValueError):
            ssl = json.loads(ssl)
    if isinstance(ssl, Mapping):
        for key in ("ca", "cert", "key"):
            if ssl.get(key):
                query[f"ssl_{key}"] = str(ssl[key])
    url = URL.create(
        driver,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=int(conn.port) if conn.port else None,
        database=conn.schema or None,
        query=query,
    )
    return url.render_as_string(hide_password=False)


def feature_store_url(conn_id: str = FEATURE_STORE_CONN_ID) -> str:
    """The feature store's SQLAlchemy URL: the Airflow connection, else ctloop's settings.

    Credentials live in the Airflow connection (UI, `AIRFLOW_CONN_FEATURE_STORE` or a
    secrets backend); without one, the settings' URL (`FEATURE_STORE_URL`, or the
    embedded SQLite file) is used, so the DAG also runs on a bare machine.
    """
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException
    from sqlalchemy.engine import make_url

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        from ctloop.settings import get_settings

        url = get_settings().store_url
        source = f"ctloop settings (no Airflow connection '{conn_id}')"
    else:
        url = connection_to_url(conn)
        source = f"Airflow connection '{conn_id}'"
    log.info("feature store: %s from %s", make_url(url).render_as_string(), source)
    return url


# ---------------------------------------------------------------------------- run context


def _value(enum_or_str: Any) -> str:
    return str(getattr(enum_or_str, "value", enum_or_str) or "")


def _conf(context: Mapping[str, Any]) -> dict[str, Any]:
    dag_run = context.get("dag_run")
    conf = getattr(dag_run, "conf", None) or {}
    return dict(conf)


def trigger_kind(context: Mapping[str, Any]) -> str:
    """Why this DAG run exists: schedule, new-data, manual or drift.

    An explicit `dag_run.conf["trigger"]` wins (the drift monitor sends "drift");
    otherwise the run type decides: scheduled/backfill runs -> schedule, asset-triggered
    runs -> new-data, runs triggered from the UI, the API, the CLI or another DAG -> manual.
    """
    from ctloop.training.pipeline import TRIGGERS

    explicit = _conf(context).get("trigger")
    if explicit:
        if explicit not in TRIGGERS:
            raise CtloopError(
                f"dag_run.conf trigger must be one of {', '.join(TRIGGERS)}, got '{explicit}'"
            )
        return str(explicit)
    run_type = _value(getattr(context.get("dag_run"), "run_type", None))
    return _RUN_TYPE_TRIGGERS.get(run_type, "manual")


def _utc_date(value: Any) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.date()
    if isinstance(value, dt.date):
        return value
    return None


def as_of_date(context: Mapping[str, Any]) -> dt.date:
    """The as-of date of this run, never "now".

    The `as_of` param (manual trigger, or `conf`) when given; else the end of the run's
    data interval (scheduled runs), else its logical date, else the time the run was
    scheduled to start (`run_after`: asset-triggered and manual runs without a logical
    date). Dates are taken in UTC, like the feature store's timestamps.
    """
    from ctloop.store.features import to_date

    params = context.get("params") or {}
    raw = params.get("as_of")
    if raw is None:
        raw = _conf(context).get("as_of")
    if isinstance(raw, str):
        raw = raw.strip()
    if raw:
        return to_date(raw)
    dag_run = context.get("dag_run")
    for candidate in (
        context.get("data_interval_end"),
        context.get("logical_date"),
        getattr(dag_run, "data_interval_end", None),
        getattr(dag_run, "logical_date", None),
        getattr(dag_run, "run_after", None),
    ):
        day = _utc_date(candidate)
        if day is not None:
            return day
    raise CtloopError("this DAG run has no data interval, logical date or run_after date")


def _reason(context: Mapping[str, Any], trigger: str) -> str:
    params = context.get("params") or {}
    conf = _conf(context)
    reason = str(params.get("reason") or conf.get("reason") or "").strip()
    if reason:
        return reason
    defaults = {
        "schedule": "scheduled retraining",
        "new-data": "new data landed in the feature store",
        "manual": "manual run",
        "drift": "drift monitor",
    }
    return defaults[trigger]


def force_promote(context: Mapping[str, Any]) -> bool:
    """The `force_promote` param: promote even when the model gate refused."""
    params = context.get("params") or {}
    value = params.get("force_promote", _conf(context).get("force_promote", False))
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def make_run(view: str, context: Mapping[str, Any]) -> Run:
    """The pipeline `Run` of this DAG run: the same values in every task of the run."""
    from ctloop.training.pipeline import Run

    trigger = trigger_kind(context)
    dag_run = context.get("dag_run")
    run_id = str(getattr(dag_run, "run_id", "") or context.get("run_id") or "")
    drifted: list[str] = []
    if trigger == "drift":
        findings = _conf(context).get("findings") or {}
        drifted = (
            list(findings.get("drifted_features") or []) if isinstance(findings, Mapping) else []
        )
    return Run.make(view, as_of_date(context), trigger, _reason(context, trigger), run_id, drifted)


# ---------------------------------------------------------------------------- failures


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    """Turn ctloop's refusals into `AirflowFailException`: fail now, no retry.

    A data gate or infra check refusal, a changed training set or a bad setting is a
    `CtloopError` that the same inputs would raise again, so retrying only delays the
    report. An unreachable store (`StoreUnavailableError`) and any other exception keep
    Airflow's normal retries.
    """
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except StoreUnavailableError:
        raise
    except CtloopError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def _jsonable(value: Any) -> Any:
    """A plain-JSON copy (numpy scalars, dates -> JSON values) for XCom."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


# ---------------------------------------------------------------------------- CT steps


def extract(view: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """Step 1: describe the point-in-time training set; the fingerprint goes to XCom."""
    from ctloop.training import pipeline

    with fail_fast():
        run = make_run(view, context)
        log.info(
            "CT run of %s as of %s: trigger=%s reason=%r airflow_run_id=%s",
            view, run.as_of, run.trigger, run.reason, run.airflow_run_id,
        )  # fmt: skip
        findings = _conf(context).get("findings")
        if findings:
            log.info("drift findings: %s", json.dumps(findings, default=str)[:2000])
        summary = pipeline.extract(run, feature_store_url())
    return _jsonable({**summary, "trigger": run.trigger})


def validate_data(view: str, context: Mapping[str, Any], fingerprint: str) -> dict[str, Any]:
    """Step 2 (gate 1): a refusal fails the task at once, naming every failed check."""
    from ctloop.training import pipeline

    with fail_fast():
        run = make_run(view, context)
        report = pipeline.validate_data(run, feature_store_url(), fingerprint)
    return _jsonable(report)


def train(view: str, context: Mapping[str, Any], fingerprint: str) -> dict[str, Any]:
    """Step 3: train and register a candidate (reused when already trained on this data)."""
    from ctloop.training import pipeline

    with fail_fast():
        run = make_run(view, context)
        result = pipeline.train(run, feature_store_url(), fingerprint)
    return _jsonable(result)


def evaluate(
    view: str, context: Mapping[str, Any], version: str, fingerprint: str
) -> dict[str, Any]:
    """Step 4 (gate 2): bless or refuse the candidate; a refusal is an outcome, not an error."""
    from ctloop.training import pipeline

    with fail_fast():
        run = make_run(view, context)
        verdict = pipeline.evaluate(run, version, feature_store_url(), fingerprint)
    return _jsonable(verdict)


def should_promote(verdict: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    """Short-circuit condition: go on to infra check and promotion only when blessed
    (or when the `force_promote` param overrides a refusal)."""
    if verdict["blessed"]:
        return True
    if force_promote(context):
        log.warning(
            "version %s was not blessed; promoting anyway because force_promote is set",
            verdict.get("version"),
        )
        return True
    log.info(
        "version %s was not blessed (%s): skipping infra check and promotion",
        verdict.get("version"),
        ", ".join(c["name"] for c in verdict.get("checks", []) if not c["passed"]) or "refused",
    )
    return False


def infra_check(view: str, context: Mapping[str, Any], version: str) -> dict[str, Any]:
    """Step 5 (gate 3): load and query the candidate as serving does."""
    from ctloop.training import pipeline

    with fail_fast():
        run = make_run(view, context)
        result = pipeline.infra_check(run, version, feature_store_url())
    return _jsonable(result)


def promote(
    view: str, context: Mapping[str, Any], version: str, verdict: Mapping[str, Any]
) -> dict[str, Any]:
    """Step 6: move `champion` to the version; forced only if the model gate refused it."""
    from ctloop.training import pipeline

    with fail_fast():
        run = make_run(view, context)
        force = force_promote(context) and not verdict["blessed"]
        result = pipeline.promote(run, version, force=force)
    return _jsonable(result)


# ---------------------------------------------------------------------------- ingestion


def land_synthetic_day(
    view_name: str,
    day: dt.date,
    rows_per_day: int = 2000,
    seed: int = 7,
    store_url: str | None = None,
) -> dict[str, Any]:
    """Land one day of the synthetic stream: that day's feature rows and the labels that
    arrived during that day (of earlier days, `label_delay_days` late).

    Same seed and rows per day as `ctloop generate` give the same rows, so this continues
    a history generated by the CLI; re-running a day upserts the same rows again.
    """
    from ctloop.features.view import load_view
    from ctloop.ingest.synth import StreamConfig, check_view, generate_day
    from ctloop.store.features import FeatureStore, as_of_instant

    view = load_view(view_name)
    config = StreamConfig(
        seed=seed, rows_per_day=rows_per_day, label_delay_days=view.training.label_delay_days
    )
    begin, end = as_of_instant(day), as_of_instant(day + dt.timedelta(days=1))
    check_view(view)
    features, _ = generate_day(day, config)
    label_day = day - dt.timedelta(days=config.label_delay_days)
    _, labels = generate_day(label_day, config)
    landed = labels[(labels["arrived_at"] >= begin) & (labels["arrived_at"] < end)]
    store = FeatureStore(store_url) if store_url else FeatureStore.from_settings()
    try:
        store.init([view])
        n_features, n_labels = store.ingest(view, features, landed if len(landed) else None)
    finally:
        store.dispose()
    result = {
        "view": view.name,
        "day": day.isoformat(),
        "feature_rows": n_features,
        "labels": n_labels,
        "labels_of_day": label_day.isoformat(),
    }
    log.info("landed %s", result)
    return result


def ingest_day(view: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """The ingest DAG's task: land the data interval's day and describe it on the Asset event.

    The day is the `day` param when given, else the start of the run's data interval
    (a daily run lands the day that just ended), else the day before `run_after`.
    """
    from ctloop.store.features import to_date

    params = context.get("params") or {}
    with fail_fast():
        raw = params.get("day")
        if isinstance(raw, str):
            raw = raw.strip()
        if raw:
            day = to_date(raw)
        else:
            dag_run = context.get("dag_run")
            day = _utc_date(context.get("data_interval_start"))
            if day is None:
                after = _utc_date(getattr(dag_run, "run_after", None))
                if after is None:
                    raise CtloopError("this DAG run has no data interval and no run_after date")
                day = after - dt.timedelta(days=1)
        result = land_synthetic_day(
            view,
            day,
            rows_per_day=int(params.get("rows_per_day") or 2000),
            seed=int(params.get("seed") if params.get("seed") is not None else 7),
            store_url=feature_store_url(),
        )
    outlet_events = context.get("outlet_events")
    if outlet_events is not None:
        outlet_events[feature_store_asset(view)].extra = result
    return result


# ---------------------------------------------------------------------------- monitor


def _param_time(context: Mapping[str, Any], name: str) -> dt.datetime | None:
    """An optional ISO time param/conf value as naive UTC (the prediction log's clock)."""
    value = _conf(context).get(name) or (context.get("params") or {}).get(name)
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise CtloopError(f"param '{name}': '{value}' is not an ISO date or time") from exc
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def ct_in_flight(view: str, context: Mapping[str, Any]) -> bool:
    """Whether a run of `ct_<view>` is queued or running, asked of Airflow itself."""
    ti = context["ti"]
    return ti.get_dr_count(dag_id=f"ct_{view}", states=["queued", "running"]) > 0


def monitor(view: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """The monitor DAG's check: drift/decay vs the champion, decision, report; one log line."""
    from ctloop.features.view import load_view
    from ctloop.monitoring.check import monitor_step
    from ctloop.registry import Registry
    from ctloop.store.features import FeatureStore

    since, until = _param_time(context, "since"), _param_time(context, "until")
    with fail_fast():
        store = FeatureStore(feature_store_url())
        try:
            decision = monitor_step(
                load_view(view), store, Registry.from_settings(), since, until,
                ct_in_flight=ct_in_flight(view, context),
            )  # fmt: skip
        finally:
            store.dispose()
    return _jsonable(decision)
