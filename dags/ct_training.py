"""Continuous-training DAGs: one `ct_<view>` DAG per feature view in the features folder.

Thin wiring only: every task body is one call into `ctloop.orchestration.ct`, which builds
the pipeline `Run` from the Airflow context and calls the step in `ctloop.training.pipeline`. No
pandas, MLflow or database access happens at parse time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from ctloop.orchestration import ct
from ctloop.orchestration.connection import feature_store_asset
from ctloop.orchestration.dagargs import dag_args, date_param, retry_args, views_to_build

SCHEDULE_CRON = "0 3 * * *"  # daily at 03:00 UTC, after the nightly ingestion
RETRY = retry_args()  # twice, CTLOOP_TASK_RETRY_DELAY_SECONDS (60) apart
# Steps return one JSON dict each: one XCom, not one per key (a `-> dict` hint would
# otherwise make TaskFlow infer multiple_outputs=True).

DOC_MD = """
# Continuous training of `{view}`

Retrains the `{view}` CatBoost model from the feature store, gates it three times and
moves the MLflow alias `champion` only when every gate passes.

1. `extract`: reads the point-in-time training set as of the run's date; its
   fingerprint goes to XCom, and every later step checks it still reads the same data.
2. `validate_data` (**gate 1**): schema, ranges, missing values, class balance, skew vs
   the champion. A refusal fails the run at once (no retry); the log names every check.
3. `train`: trains, logs params, metrics, plots and lineage to MLflow and registers a
   candidate version (re-running the same data reuses that version).
4. `evaluate` (**gate 2**): candidate vs the floor and vs the champion on the newest
   days; tags `gate.model` on the candidate.
5. `blessed`: short-circuit. A refused candidate skips the rest: a normal outcome, the
   run succeeds, `champion` stays where it was.
6. `infra_check` (**gate 3**): loads and queries the candidate as serving does.
7. `promote`: `champion` -> candidate, old champion -> `previous`, serving is told; with
   the view's `rollout.mode` shadow or canary, the candidate goes on a live trial
   (alias `challenger`) and the monitor's live gate promotes or drops it.

I/O steps retry twice (1 minute apart by default); gate refusals fail at once.

**Triggers** (tagged on the model version as `trigger`):

* `schedule`: daily at 03:00 UTC (`{cron}`); as-of date = the data interval end.
* `new-data`: an update of the Asset `{asset}` (by `ingest_{view}` or any producer).
* `manual`: *Trigger DAG* in the UI, the REST API or `airflow dags trigger`.
* `drift`: the drift monitor triggers with conf
  `{{"trigger": "drift", "reason": "...", "findings": {{...}}}}`.

**Params** (trigger form, or `--conf`): `as_of` (YYYY-MM-DD; empty = the run's date),
`force_promote` (promote even if the model gate refuses; tagged `forced`), `reason`.

One run at a time (`max_active_runs=1`), no catch-up. The feature store is the Airflow
connection `feature_store`; MLflow is `MLFLOW_TRACKING_URI`.
The same pipeline by hand: `ctloop train {view} --as-of YYYY-MM-DD`.
"""

PARAMS = {
    "as_of": date_param(
        "As-of date", "Train on data before this date (YYYY-MM-DD). Empty: the run's date."
    ),
    "force_promote": Param(
        False,
        type="boolean",
        title="Force promotion",
        description="Promote even if the model gate refuses the candidate (tagged 'forced').",
    ),
    "reason": Param(
        "",
        type=["null", "string"],
        maxLength=500,
        title="Reason",
        description="Why this run happens; recorded on the model version.",
    ),
}


def build_ct_dag(view: str) -> Any:
    """The CT DAG of one feature view: three gates between the feature store and the
    `champion` alias, each task one call into `ctloop.orchestration.ct`."""
    asset = feature_store_asset(view)

    @dag(
        description=f"Extract, validate, train, evaluate, infra-check and promote {view}",
        doc_md=DOC_MD.format(view=view, cron=SCHEDULE_CRON, asset=asset.uri),
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(SCHEDULE_CRON, timezone="UTC"), assets=[asset]
        ),
        **dag_args(
            view,
            "ct",
            "Continuous training",
            "continuous-training",
            dagrun_timeout=dt.timedelta(hours=6),
            params=PARAMS,
        ),
    )
    def ct_training() -> None:
        @task(multiple_outputs=False, **RETRY, execution_timeout=dt.timedelta(minutes=30))
        def extract(**context: Any) -> dict:
            """Read the point-in-time training set; return its summary and fingerprint."""
            return ct.extract(view, context)

        @task(multiple_outputs=False, **RETRY, execution_timeout=dt.timedelta(minutes=30))
        def validate_data(summary: dict, **context: Any) -> dict:
            """Gate 1: stop the run on bad data (no retry)."""
            return ct.validate_data(view, context, summary["fingerprint"])

        @task(multiple_outputs=False, **RETRY, execution_timeout=dt.timedelta(hours=2))
        def train(summary: dict, **context: Any) -> dict:
            """Train and register a candidate version on the same data."""
            return ct.train(view, context, summary["fingerprint"])

        @task(multiple_outputs=False, **RETRY, execution_timeout=dt.timedelta(minutes=30))
        def evaluate(trained: dict, summary: dict, **context: Any) -> dict:
            """Gate 2: bless or refuse the candidate against the floor and the champion."""
            return ct.evaluate(view, context, trained["version"], summary["fingerprint"])

        @task.short_circuit
        def blessed(verdict: dict, **context: Any) -> bool:
            """Skip infra check and promotion when the candidate was not blessed."""
            return ct.should_promote(verdict, context, view)

        @task(multiple_outputs=False, **RETRY, execution_timeout=dt.timedelta(minutes=30))
        def infra_check(trained: dict, **context: Any) -> dict:
            """Gate 3: load and query the candidate as serving does."""
            return ct.infra_check(view, context, trained["version"])

        @task(multiple_outputs=False, **RETRY, execution_timeout=dt.timedelta(minutes=10))
        def promote(trained: dict, verdict: dict, **context: Any) -> dict:
            """Point `champion` at the candidate; the old champion becomes `previous`."""
            return ct.promote(view, context, trained["version"], verdict)

        summary = extract()
        gate = validate_data(summary)
        trained = train(summary)
        verdict = evaluate(trained, summary)
        checked = infra_check(trained)
        gate >> trained
        blessed(verdict) >> checked >> promote(trained, verdict)

    return ct_training()


# One DAG per feature view. When a worker parses this file for one DAG only, skip the rest.
for _view in views_to_build("ct"):
    build_ct_dag(_view)
