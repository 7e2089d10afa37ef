"""Ingestion DAGs: `ingest_<view>` lands one day of the synthetic stream in the feature store.

The task's outlet is the view's feature-store Asset, so every successful landing updates
the Asset and starts `ct_<view>` (trigger `new-data`). Real data takes the same route:
whatever loads it (`ctloop import`, an ETL job) should update the same Asset.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param, dag, task

from ctloop.orchestration.connection import feature_store_asset
from ctloop.orchestration.dagargs import dag_args, date_param, views_to_build
from ctloop.orchestration.ingest import ingest_day

SCHEDULE_CRON = "0 1 * * *"  # daily at 01:00 UTC: the day that just ended

DOC_MD = """
# Ingest `{view}` (synthetic stream)

Lands one day of the seeded synthetic stream into the feature store (Airflow connection
`feature_store`): the feature rows of the day, and the labels that arrived during it
(labels land `label_delay_days` after their event day). Writes are idempotent upserts, so
re-running a day changes nothing.

* **Scheduled** daily at 01:00 UTC ({cron}): lands the day of the data interval (yesterday).
* **Manual**: set the `day` param (YYYY-MM-DD) to land a given day.

On success the Asset `{asset}` is updated, which triggers `ct_{view}` (trigger `new-data`).
Use the same `seed` and `rows_per_day` as the history made with `ctloop generate`.
Paused on creation: this DAG writes simulated data, turn it on for demos only.
"""

PARAMS = {
    "day": date_param("Day", "Event day to land (YYYY-MM-DD). Empty: the data interval's day."),
    "rows_per_day": Param(2000, type="integer", minimum=1, maximum=1_000_000),
    "seed": Param(7, type="integer"),
}


def build_ingest_dag(view: str) -> Any:
    """The ingestion DAG of one feature view: its one task's outlet is the view's Asset,
    which is how a landing starts `ct_<view>`."""
    asset = feature_store_asset(view)

    @dag(
        description=f"Land one day of synthetic {view} data and update its Asset",
        doc_md=DOC_MD.format(view=view, cron=SCHEDULE_CRON, asset=asset.uri),
        schedule=CronTriggerTimetable(SCHEDULE_CRON, timezone="UTC", interval=dt.timedelta(days=1)),
        **dag_args(
            view,
            "ingest",
            "Ingest (synthetic)",
            "ingestion",
            is_paused_upon_creation=True,
            params=PARAMS,
        ),
    )
    def ingest() -> None:
        @task(
            multiple_outputs=False,
            outlets=[asset],
            retries=2,
            retry_delay=dt.timedelta(minutes=1),
            execution_timeout=dt.timedelta(minutes=30),
        )
        def land_day(**context: Any) -> dict:
            """Land the day's feature rows and the labels that arrived during it."""
            return ingest_day(view, context)

        land_day()

    return ingest()


for _view in views_to_build("ingest"):
    build_ingest_dag(_view)
