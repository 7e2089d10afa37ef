"""The CT DAG's tasks, one function per task: build the `Run` from the Airflow context,
call the pipeline step with the feature store of the Airflow connection, and return the
step's outcome as plain JSON for XCom.

Every step runs under the view's CT lease (`ctloop.store.ctlock`), held in the name of the
DAG run, so a `ctloop train` of the same view cannot run between two of its tasks (nor it
between a CLI run's steps). The lease is given back when the run ends: after `promote`,
when the model gate's refusal skips the rest, and when a task fails.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ctloop.orchestration.connection import feature_store_url
from ctloop.orchestration.context import conf, fail_fast, force_promote, jsonable, make_run

if TYPE_CHECKING:
    from ctloop.training.run import Run

log = logging.getLogger(__name__)


def _run_id(context: Mapping[str, Any]) -> str:
    dag_run = context.get("dag_run")
    return str(getattr(dag_run, "run_id", "") or context.get("run_id") or "unknown")


@contextlib.contextmanager
def _leased(run: Run, *, release: bool = False) -> Iterator[None]:
    """Hold the view's CT lease for this DAG run during a step; give it back if the step
    fails (the run ends there, or a retry takes it again) or when `release` (last step)."""
    from ctloop.store.ctlock import CtLock, airflow_holder  # (a) parse time: SQLAlchemy

    store = run.store(feature_store_url())
    lock = CtLock(store)
    holder = airflow_holder(run.airflow_run_id or "unknown")
    try:
        lock.acquire(run.view.name, holder)
        try:
            yield
        except BaseException:
            lock.release(run.view.name, holder)
            raise
        if release:
            lock.release(run.view.name, holder)
    finally:
        store.dispose()


def release_lease(view: str, context: Mapping[str, Any]) -> bool:
    """Give back this DAG run's lease on the view (the run ends without promoting)."""
    from ctloop.store.ctlock import CtLock, airflow_holder  # (a) parse time: SQLAlchemy
    from ctloop.store.engine import Database  # (a) parse time: SQLAlchemy

    db = Database(feature_store_url())
    try:
        return CtLock(db).release(view, airflow_holder(_run_id(context)))
    finally:
        db.dispose()


def extract(view: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """Step 1: describe the point-in-time training set; the fingerprint goes to XCom."""
    from ctloop.training import pipeline  # (a) parse time: pandas, MLflow

    with fail_fast():
        run = make_run(view, context)
        log.info(
            "CT run of %s as of %s: trigger=%s reason=%r airflow_run_id=%s",
            view, run.as_of, run.trigger, run.reason, run.airflow_run_id,
        )  # fmt: skip
        findings = conf(context).get("findings")
        if findings:
            log.info("drift findings: %s", json.dumps(findings, default=str)[:2000])
        with _leased(run):
            summary = pipeline.extract(run, feature_store_url())
    return jsonable({**summary, "trigger": run.trigger})


def validate_data(view: str, context: Mapping[str, Any], fingerprint: str) -> dict[str, Any]:
    """Step 2 (gate 1): a refusal fails the task at once, naming every failed check."""
    from ctloop.training import pipeline  # (a) parse time: pandas, MLflow

    with fail_fast():
        run = make_run(view, context)
        with _leased(run):
            report = pipeline.validate_data(run, feature_store_url(), fingerprint)
    return jsonable(report)


def train(view: str, context: Mapping[str, Any], fingerprint: str) -> dict[str, Any]:
    """Step 3: train and register a candidate (reused when already trained on this data)."""
    from ctloop.training import pipeline  # (a) parse time: pandas, MLflow

    with fail_fast():
        run = make_run(view, context)
        with _leased(run):
            result = pipeline.train(run, feature_store_url(), fingerprint)
    return jsonable(result)


def evaluate(
    view: str, context: Mapping[str, Any], version: str, fingerprint: str
) -> dict[str, Any]:
    """Step 4 (gate 2): bless or refuse the candidate; a refusal is an outcome, not an error."""
    from ctloop.training import pipeline  # (a) parse time: pandas, MLflow

    with fail_fast():
        run = make_run(view, context)
        with _leased(run):
            verdict = pipeline.evaluate(run, version, feature_store_url(), fingerprint)
    return jsonable(verdict)


def should_promote(
    verdict: Mapping[str, Any], context: Mapping[str, Any], view: str | None = None
) -> bool:
    """Short-circuit condition: go on to infra check and promotion only when blessed
    (or when the `force_promote` param overrides a refusal). A refusal ends the run, so
    it gives the view's CT lease back (when told the `view`)."""
    if verdict["blessed"]:
        return True
    if force_promote(context):
        log.warning(
            "version %s was not blessed; promoting anyway because force_promote is set",
            verdict.get("version"),
        )
        return True
    if view is not None:
        release_lease(view, context)
    log.info(
        "version %s was not blessed (%s): skipping infra check and promotion",
        verdict.get("version"),
        ", ".join(c["name"] for c in verdict.get("checks", []) if not c["passed"]) or "refused",
    )
    return False


def infra_check(view: str, context: Mapping[str, Any], version: str) -> dict[str, Any]:
    """Step 5 (gate 3): load and query the candidate as serving does."""
    from ctloop.training import pipeline  # (a) parse time: pandas, MLflow

    with fail_fast():
        run = make_run(view, context)
        with _leased(run):
            result = pipeline.infra_check(run, version, feature_store_url())
    return jsonable(result)


def promote(
    view: str, context: Mapping[str, Any], version: str, verdict: Mapping[str, Any]
) -> dict[str, Any]:
    """Step 6: move `champion` to the version; forced only if the model gate refused it."""
    from ctloop.training import pipeline  # (a) parse time: pandas, MLflow

    with fail_fast():
        run = make_run(view, context)
        force = force_promote(context) and not verdict["blessed"]
        with _leased(run, release=True):
            result = pipeline.promote(run, version, force=force)
    return jsonable(result)
