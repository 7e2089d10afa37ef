"""What an Airflow task context means for a ctloop run: why the run exists (trigger), its
as-of date (never "now"), its reason and params, and how a refusal becomes a failure that
Airflow does not retry.

DAG files import this package at parse time, which happens every few seconds: Airflow,
pandas and the pipeline (which pulls pandas, SQLAlchemy and MLflow) are imported inside
the functions that run in a task, never at module level (a test checks it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctloop.errors import CtloopError, StoreUnavailableError
from ctloop.settings import get_settings
from ctloop.store.dates import to_date

if TYPE_CHECKING:
    from ctloop.training.run import Run

log = logging.getLogger(__name__)

# Run types as Airflow names them (`DagRunType` values) -> ctloop trigger kinds.
_RUN_TYPE_TRIGGERS = {
    "scheduled": "schedule",
    "backfill": "schedule",
    "asset_triggered": "new-data",
    "asset_materialization": "new-data",
    "manual": "manual",
    "operator_triggered": "manual",
}


def _value(enum_or_str: Any) -> str:
    return str(getattr(enum_or_str, "value", enum_or_str) or "")


def conf(context: Mapping[str, Any]) -> dict[str, Any]:
    """The DAG run's `conf` (what a trigger sent), empty when none."""
    dag_run = context.get("dag_run")
    conf = getattr(dag_run, "conf", None) or {}
    return dict(conf)


def trigger_kind(context: Mapping[str, Any]) -> str:
    """Why this DAG run exists: schedule, new-data, manual or drift.

    An explicit `dag_run.conf["trigger"]` wins (the drift monitor sends "drift");
    otherwise the run type decides: scheduled/backfill runs -> schedule, asset-triggered
    runs -> new-data, runs triggered from the UI, the API, the CLI or another DAG -> manual.
    """
    from ctloop.training.run import TRIGGERS  # (a) parse time: training.run pulls pandas

    explicit = conf(context).get("trigger")
    if explicit:
        if explicit not in TRIGGERS:
            raise CtloopError(
                f"dag_run.conf trigger must be one of {', '.join(TRIGGERS)}, got '{explicit}'"
            )
        return str(explicit)
    run_type = _value(getattr(context.get("dag_run"), "run_type", None))
    return _RUN_TYPE_TRIGGERS.get(run_type, "manual")


def utc_date(value: Any) -> dt.date | None:
    """The UTC calendar date of an Airflow date/time value (None when there is none)."""
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
    params = context.get("params") or {}
    raw = params.get("as_of")
    if raw is None:
        raw = conf(context).get("as_of")
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
        day = utc_date(candidate)
        if day is not None:
            return day
    raise CtloopError("this DAG run has no data interval, logical date or run_after date")


def _reason(context: Mapping[str, Any], trigger: str) -> str:
    params = context.get("params") or {}
    sent = conf(context)
    reason = str(params.get("reason") or sent.get("reason") or "").strip()
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
    value = params.get("force_promote", conf(context).get("force_promote", False))
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def log_where() -> None:
    """One log line naming the host, process and folders of this try: with several Celery
    workers, which one ran it (and that it used its own data folder)."""
    log.info(
        "on %s (pid %d), working directory %s, data folder %s",
        socket.gethostname(), os.getpid(), Path.cwd(), get_settings().data_dir,
    )  # fmt: skip


def make_run(view: str, context: Mapping[str, Any]) -> Run:
    """The pipeline `Run` of this DAG run: the same values in every task of the run."""
    from ctloop.training.run import Run  # (a) parse time: training.run pulls pandas, MLflow

    log_where()
    trigger = trigger_kind(context)
    dag_run = context.get("dag_run")
    run_id = str(getattr(dag_run, "run_id", "") or context.get("run_id") or "")
    drifted: list[str] = []
    if trigger == "drift":
        findings = conf(context).get("findings") or {}
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
    from airflow.sdk.exceptions import AirflowFailException  # (a) Airflow loads its config

    try:
        yield
    except StoreUnavailableError:
        raise
    except CtloopError as exc:
        log.error("%s: %s", type(exc).__name__, exc)
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def jsonable(value: Any) -> Any:
    """A plain-JSON copy (numpy scalars, dates -> JSON values) for XCom."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def param_time(context: Mapping[str, Any], name: str) -> dt.datetime | None:
    """An optional ISO time param/conf value as naive UTC (the prediction log's clock).

    The trigger form sends null for an emptied field, the API and `--conf` may send "" or
    omit it: all of them mean "no value", so the task's own default applies.
    """
    value = conf(context).get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        value = (context.get("params") or {}).get(name)
    return parse_time(name, value)


def parse_time(name: str, value: Any) -> dt.datetime | None:
    """An ISO 8601 date or time as naive UTC; None, "" and blanks give None.

    Times without an offset are taken as UTC already; a refusal names the param, since a
    bad value typed into a trigger form would fail the same way on every retry.
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        text = str(value).strip()
        if not text:
            return None
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError as exc:
            raise CtloopError(f"param '{name}': '{value}' is not an ISO date or time") from exc
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed
