"""The ingest DAG's tasks: run the view's sources for the data interval, then tell
Airflow (through the view's Asset) that new rows are in the feature store, only if
some landed.

Connections: the feature store is the Airflow connection `feature_store`, each SQL source
names its own connection id; both become SQLAlchemy URLs through the providers' hooks
(`connection.connection_url`), never by parsing connection fields here.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ctloop.errors import CtloopError
from ctloop.orchestration.connection import (
    connection_url,
    feature_store_asset,
    feature_store_url,
)
from ctloop.orchestration.context import fail_fast, log_where, param_time, utc_date
from ctloop.settings import get_settings
from ctloop.store.dates import to_date

if TYPE_CHECKING:
    from ctloop.ingest.sources import Interval

log = logging.getLogger(__name__)


def source_url(conn_id: str) -> str:
    """A SQL source's URL from its Airflow connection, through the provider's hook."""
    from airflow.sdk import Connection  # (a) importing Airflow loads its config

    return connection_url(Connection.get(conn_id))


def _naive_utc(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def interval_of(context: Mapping[str, Any]) -> Interval:
    """The data interval this run ingests: the `since`/`until` params when given, else the
    `day` param (that whole day), else the run's data interval, else the day before
    `run_after` (a manual run without a logical date)."""
    from ctloop.ingest.sources import Interval  # (a) parse time: pandas, SQLAlchemy

    params = context.get("params") or {}
    since, until = param_time(context, "since"), param_time(context, "until")
    if since is not None or until is not None:
        if since is None or until is None or until <= since:
            raise CtloopError("params since and until go together, with until after since")
        return Interval(since, until)
    raw = params.get("day")
    if isinstance(raw, str):
        raw = raw.strip()
    if raw:
        day = to_date(raw)
    else:
        start = _naive_utc(context.get("data_interval_start"))
        end = _naive_utc(context.get("data_interval_end"))
        if start is not None and end is not None and end > start:
            return Interval(start, end)
        dag_run = context.get("dag_run")
        day = utc_date(start)
        if day is None:
            after = utc_date(getattr(dag_run, "run_after", None))
            if after is None:
                raise CtloopError("this DAG run has no data interval and no run_after date")
            day = after - dt.timedelta(days=1)
    begin = dt.datetime.combine(day, dt.time.min)
    return Interval(begin, begin + dt.timedelta(days=1))


def run_ingest(
    view_name: str,
    interval: Interval,
    *,
    run_id: str,
    store_url: str,
    synthetic: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Ingest one interval of every source the view declares (the DAG's task and
    `ctloop ingest` both land here); the run's summary as plain JSON."""
    from ctloop.features.view import load_view  # (a) parse time: pydantic models
    from ctloop.ingest.sources import ingest_view  # (a) parse time: pandas, SQLAlchemy
    from ctloop.store.features import FeatureStore  # (a) as above

    view = load_view(view_name)
    store = FeatureStore(store_url)
    try:
        summary = ingest_view(view, store, interval, run_id=run_id,
                              data_dir=get_settings().data_dir, url_of=source_url,
                              synthetic=synthetic)  # fmt: skip
    finally:
        store.dispose()
    return summary.as_dict()


def ingest_interval(view: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """The ingest DAG's first task: land the interval's rows; no Asset event here."""
    log_where()
    params = context.get("params") or {}
    dag_run = context.get("dag_run")
    run_id = str(getattr(dag_run, "run_id", "") or context.get("run_id") or "airflow")
    synthetic = {k: int(params[k]) for k in ("rows_per_day", "seed") if params.get(k) is not None}
    with fail_fast():
        return run_ingest(view, interval_of(context), run_id=run_id,
                          store_url=feature_store_url(), synthetic=synthetic)  # fmt: skip


def announce(view: str, summary: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The ingest DAG's second task, whose outlet is the view's Asset: it succeeds (and so
    updates the Asset, which starts `ct_<view>`) only when rows landed; on an empty
    interval it is skipped, and a skipped task emits no Asset event (Airflow 3 sends
    outlet events on success only)."""
    from airflow.sdk.exceptions import AirflowSkipException  # (a) Airflow loads its config

    if not summary.get("taken"):
        raise AirflowSkipException(f"nothing landed for {view}: the Asset is not updated")
    keys = ("view", "run_id", "interval_start", "interval_end", "taken", "rejected",
            "duplicates", "late_labels")  # fmt: skip
    extra = {k: summary.get(k) for k in keys}
    outlet_events = context.get("outlet_events")
    if outlet_events is not None:
        outlet_events[feature_store_asset(view)].extra = extra
    return extra
