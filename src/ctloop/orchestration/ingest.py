"""The ingest DAG's task: land one data interval's rows and tell Airflow (through the
view's Asset) that new data is in the feature store."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from ctloop.errors import CtloopError
from ctloop.orchestration.connection import feature_store_asset, feature_store_url
from ctloop.orchestration.context import fail_fast, utc_date
from ctloop.store.dates import to_date

log = logging.getLogger(__name__)


def ingest_day(view: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """The ingest DAG's task: land the data interval's day and describe it on the Asset event.

    The day is the `day` param when given, else the start of the run's data interval
    (a daily run lands the day that just ended), else the day before `run_after`.
    """
    from ctloop.ingest.synth import land_synthetic_day  # (a) parse time: pandas, SQLAlchemy

    params = context.get("params") or {}
    with fail_fast():
        raw = params.get("day")
        if isinstance(raw, str):
            raw = raw.strip()
        if raw:
            day = to_date(raw)
        else:
            dag_run = context.get("dag_run")
            day = utc_date(context.get("data_interval_start"))
            if day is None:
                after = utc_date(getattr(dag_run, "run_after", None))
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
