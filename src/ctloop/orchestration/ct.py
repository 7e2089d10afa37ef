"""The CT DAG's tasks, one function per task: build the `Run` from the Airflow context,
call the pipeline step with the feature store of the Airflow connection, and return the
step's outcome as plain JSON for XCom."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from ctloop.orchestration.connection import feature_store_url
from ctloop.orchestration.context import conf, fail_fast, force_promote, jsonable, make_run

log = logging.getLogger(__name__)


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
        summary = pipeline.extract(run, feature_store_url())
    return jsonable({**summary, "trigger": run.trigger})


def validate_data(view: str, context: Mapping[str, Any], fingerprint: str) -> dict[str, Any]:
    """Step 2 (gate 1): a refusal fails the task at once, naming every failed check."""
    from ctloop.training import pipeline  # (a) parse time: pandas, MLflow

    with fail_fast():
        run = make_run(view, context)
        report = pipeline.validate_data(run, feature_store_url(), fingerprint)
    return jsonable(report)


def train(view: str, context: Mapping[str, Any], fingerprint: str) -> dict[str, Any]:
    """Step 3: train and register a candidate (reused when already trained on this data)."""
    from ctloop.training import pipeline  # (a) parse time: pandas, MLflow

    with fail_fast():
        run = make_run(view, context)
        result = pipeline.train(run, feature_store_url(), fingerprint)
    return jsonable(result)


def evaluate(
    view: str, context: Mapping[str, Any], version: str, fingerprint: str
) -> dict[str, Any]:
    """Step 4 (gate 2): bless or refuse the candidate; a refusal is an outcome, not an error."""
    from ctloop.training import pipeline  # (a) parse time: pandas, MLflow

    with fail_fast():
        run = make_run(view, context)
        verdict = pipeline.evaluate(run, version, feature_store_url(), fingerprint)
    return jsonable(verdict)


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
    from ctloop.training import pipeline  # (a) parse time: pandas, MLflow

    with fail_fast():
        run = make_run(view, context)
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
        result = pipeline.promote(run, version, force=force)
    return jsonable(result)
