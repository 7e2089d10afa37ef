"""The monitor DAG's task: one drift/decay check of a view's prediction log against its
champion, and the decision whether to trigger retraining."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ctloop.features.view import load_view
from ctloop.orchestration.connection import feature_store_url
from ctloop.orchestration.context import fail_fast, jsonable, log_where, param_time
from ctloop.settings import get_settings

log = logging.getLogger(__name__)


def ct_in_flight(view: str, context: Mapping[str, Any]) -> bool:
    """Whether a run of `ct_<view>` is queued or running, asked of Airflow itself."""
    ti = context["ti"]
    return ti.get_dr_count(dag_id=f"ct_{view}", states=["queued", "running"]) > 0


def check(view: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """The monitor DAG's check: drift/decay vs the champion, decision, report; one log line."""
    from ctloop.monitoring.check import monitor_step  # (a) parse time: pandas, MLflow
    from ctloop.registry import Registry  # (a) parse time: MLflow
    from ctloop.store.features import FeatureStore  # (a) parse time: pandas, SQLAlchemy
    from ctloop.training.promotion import notify_serving  # (a) parse time: MLflow

    log_where()
    with fail_fast():  # a bad since/until is a refusal: every retry would refuse it too
        since, until = param_time(context, "since"), param_time(context, "until")
        store = FeatureStore.for_url(feature_store_url())
        try:
            decision = monitor_step(
                load_view(view), store, Registry.from_settings(), since, until,
                ct_in_flight=ct_in_flight(view, context),
                on_promoted=lambda version: log.info(
                    "live gate promoted v%s: %s", version,
                    notify_serving(get_settings(), view, version),
                ),
                keep_days=get_settings().log_retention_days,
            )  # fmt: skip
        finally:
            store.dispose()
    return jsonable(decision)
