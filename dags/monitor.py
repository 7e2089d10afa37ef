"""Drift-monitor DAGs: one `monitor_<view>` DAG per feature view, closing the loop.

Thin wiring only: the check is one call into `ctloop.orchestration.monitor.check`, which runs
`ctloop.monitoring.check.monitor_step` with the feature store from the Airflow connection and asks
Airflow whether a CT run of the view is in flight. On drift or decay outside the cooldown
it triggers `ct_<view>` with the reason and the findings in the run's conf.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task

from ctloop.orchestration import monitor as monitoring
from ctloop.orchestration.dagargs import dag_args, datetime_param, retry_args, views_to_build

SCHEDULE_CRON = "0 * * * *"  # hourly; each check reads only the traffic since the last one

DOC_MD = """
# Drift and accuracy monitor of `{view}`

Every hour (or by hand), compares the champion's prediction logs since the previous check
with the profile of its training data:

* **data drift** per feature (normed Wasserstein / Jensen-Shannon; PSI, unseen categories
  and missing-rate changes reported), dataset drift when the drifted share reaches the
  view's `drift.drift_share`;
* **prediction drift** of the predicted classes, and of the score (binary) or the value
  (regression);
* **accuracy decay**: the view's primary metric (AUC / macro-F1 / RMSE ...) on the
  champion's predictions over the last `drift.accuracy_window_days` whose labels have
  landed, vs its validation figure.

Windows with fewer than `drift.min_rows` predictions report *not enough data* and raise
no alarm. Findings go to the `drift_report` table and an HTML report in MLflow
(experiment `{view}-monitoring`); the `check` task log says in one line what was found.

On drift or decay, `trigger_ct` starts `ct_{view}` with conf
`{{"trigger": "drift", "reason": ..., "findings": ...}}`, unless a `ct_{view}` run is
queued or running, or the last drift-triggered retrain is inside `drift.cooldown_hours`.

Checks retry twice (1 minute apart); a bad `since`/`until` fails at once.

**Params** (trigger form, or `--conf`; both optional): `since`, `until` (RFC 3339
date-times, e.g. `2026-02-10T00:00:00Z`; empty = since the last check / now).
The same check by hand: `ctloop monitor {view} --since ... --until ...`.
"""

PARAMS = {
    "since": datetime_param(
        "Window start", "Check predictions logged from this time (UTC). Empty: the last check."
    ),
    "until": datetime_param("Window end", "Check predictions logged before this time. Empty: now."),
}


def build(view: str) -> Any:
    """The monitor DAG of one feature view: check, then trigger `ct_<view>` only when the
    check asked for a retrain (drift or decay, no CT run in flight, outside the cooldown)."""

    @dag(
        schedule=SCHEDULE_CRON,
        doc_md=DOC_MD.format(view=view),
        params=PARAMS,
        **dag_args(
            view,
            "monitor",
            "Drift monitor",
            "monitoring",
            default_args=retry_args(),
        ),
    )
    def monitor() -> None:
        @task
        def check(**context: Any) -> dict[str, Any]:
            """Check the window for drift and decay; the decision goes to XCom."""
            return monitoring.check(view, context)

        @task.short_circuit
        def retrain_needed(decision: dict[str, Any]) -> bool:
            """Skip the trigger when nothing drifted, or a CT run or cooldown says wait."""
            return bool(decision["trigger"])

        @task
        def ct_conf(decision: dict[str, Any]) -> dict[str, Any]:
            """The conf `ct_<view>` is started with: trigger, reason and findings."""
            return decision["conf"]

        decision = check()
        conf = ct_conf(decision)
        trigger_ct = TriggerDagRunOperator(
            task_id="trigger_ct",
            trigger_dag_id=f"ct_{view}",
            conf=conf,
            wait_for_completion=False,
        )
        retrain_needed(decision) >> conf >> trigger_ct

    return monitor()


for _view in views_to_build("monitor"):
    build(_view)
