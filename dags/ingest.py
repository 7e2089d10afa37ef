"""Ingestion DAGs: `ingest_<view>` lands a data interval from the sources the view declares
(drop folder, SQL source, or the demo's synthetic stream).

The second task's outlet is the view's feature-store Asset and it runs only when rows
landed, so new data starts `ct_<view>` (trigger `new-data`) and an empty interval does not.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param, dag, task

from ctloop.orchestration.connection import feature_store_asset
from ctloop.orchestration.dagargs import (
    dag_args,
    date_param,
    datetime_param,
    retry_args,
    views_to_build,
)
from ctloop.orchestration.ingest import announce, ingest_interval

SCHEDULE_CRON = "0 1 * * *"  # daily at 01:00 UTC: the day that just ended

DOC_MD = """
# Ingest `{view}`

Lands one data interval from every source `features/{view}.yaml` declares under `sources:`
into the feature store (Airflow connection `feature_store`), through the same checks as
`ctloop import`:

* **files**: each new CSV/Parquet file in the drop folder is taken once (ledger
  `ingest_files`, by checksum), then moved to `done/` or `rejected/`;
* **sql**: the rows of the interval (by the source's incremental column) from a table or
  query, through the source's own Airflow connection; watermark in `ingest_watermarks`;
* **synthetic**: the demo's seeded stream, one day per interval.

Bad rows go to `ingest_rejects` (row, column, reason); with `partial_loads: true` the good
rows of a batch land, otherwise the batch is refused whole. The summary (taken, rejected,
duplicates, late labels) is in the task log and in `ingest_runs` (`ctloop status`).

* **Scheduled** daily at 01:00 UTC ({cron}): ingests the day that just ended.
* **Manual**: set `day` (YYYY-MM-DD) to ingest that day, or `since` and `until` (RFC 3339,
  e.g. `2026-02-10T00:00:00Z`) for any interval; `rows_per_day`/`seed` override the
  synthetic source's.

`update_asset` runs only when rows landed: it updates `{asset}`, which triggers
`ct_{view}` (trigger `new-data`). An unreachable source fails `land` and Airflow retries it.
Paused on creation.
"""

PARAMS = {
    "day": date_param("Day", "Day to ingest (YYYY-MM-DD). Empty: the run's data interval."),
    "since": datetime_param("Since", "Start of an interval to ingest (RFC 3339, with until)."),
    "until": datetime_param("Until", "End of the interval, excluded (RFC 3339, with since)."),
    "rows_per_day": Param(None, type=["null", "integer"], minimum=1, maximum=1_000_000,
                          description="Synthetic source only: rows per day (empty: the view's)."),
    "seed": Param(None, type=["null", "integer"],
                  description="Synthetic source only: the stream's seed (empty: the view's)."),
}  # fmt: skip


def build_ingest_dag(view: str) -> Any:
    """The ingestion DAG of one feature view: land, then update the Asset if rows landed."""
    asset = feature_store_asset(view)

    @dag(
        description=f"Land new {view} rows and late labels from its sources; update its Asset",
        doc_md=DOC_MD.format(view=view, cron=SCHEDULE_CRON, asset=asset.uri),
        schedule=CronTriggerTimetable(SCHEDULE_CRON, timezone="UTC", interval=dt.timedelta(days=1)),
        **dag_args(view, "ingest", "Ingest", "ingestion", is_paused_upon_creation=True,
                   params=PARAMS),
    )  # fmt: skip
    def ingest() -> None:
        @task(**retry_args(), execution_timeout=dt.timedelta(minutes=30))
        def land(**context: Any) -> dict:
            """Land the interval from every source; the summary goes to XCom and the log."""
            return ingest_interval(view, context)

        @task(outlets=[asset])
        def update_asset(summary: dict, **context: Any) -> dict:
            """Update the view's Asset when rows landed; skipped (no event) otherwise."""
            return announce(view, summary, context)

        update_asset(land())

    return ingest()


for _view in views_to_build("ingest"):
    build_ingest_dag(_view)
