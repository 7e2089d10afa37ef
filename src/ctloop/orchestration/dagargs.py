"""What every ctloop DAG shares, so the DAG files only say what is their own: a fixed
start date (never "now", which would move on every parse), no catch-up, one run at a time,
the owner shown in the UI, and tags by part of the loop and view."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ctloop.features.view import list_views
from ctloop.settings import get_settings

if TYPE_CHECKING:
    from airflow.sdk import Param

START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
OWNER = "ctloop"


def dag_args(view: str, prefix: str, title: str, part: str, **own: Any) -> dict[str, Any]:
    """Keyword arguments for `@dag`: `<prefix>_<view>` shown as "<title>: <view>", the
    shared settings, then the DAG's `own` (which win; `default_args` are merged)."""
    default_args = {"owner": OWNER, **own.pop("default_args", {})}
    return {
        "dag_id": f"{prefix}_{view}",
        "dag_display_name": f"{title}: {view}",
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "tags": ["ctloop", part, view],
        **own,
        "default_args": default_args,
    }


def retry_args() -> dict[str, Any]:
    """Retries of the steps that do I/O: twice, `CTLOOP_TASK_RETRY_DELAY_SECONDS` apart
    (60 by default; a test of a killed worker shortens it rather than sleep a minute)."""
    delay = dt.timedelta(seconds=get_settings().task_retry_delay_seconds)
    return {"retries": 2, "retry_delay": delay}


def date_param(title: str, description: str) -> Param:
    """An optional YYYY-MM-DD param (empty: the run's own date), so a date picked in the
    trigger form is checked by Airflow before the run starts."""
    return _optional_param("date", title, description)


def datetime_param(title: str, description: str) -> Param:
    """An optional RFC 3339 date-time param (e.g. 2026-02-10T00:00:00Z). Empty is allowed,
    so the trigger form's defaults can run: the task decides what "no value" means."""
    return _optional_param("date-time", title, description)


def _optional_param(fmt: str, title: str, description: str) -> Param:
    """A string param that may be null: without "null" in its type, the trigger form marks
    it required and keeps Trigger disabled until something is typed in."""
    from airflow.sdk import Param  # (a) importing Airflow loads its config: only under Airflow

    return Param(None, type=["null", "string"], format=fmt, title=title, description=description)


def views_to_build(prefix: str) -> list[str]:
    """The views whose `<prefix>_<view>` DAG this parse must build: all of them, or only the
    one a worker is parsing the file for (it skips building the others)."""
    from airflow.sdk import get_parsing_context  # (a) as above

    parsing = get_parsing_context().dag_id
    return [v for v in list_views() if parsing is None or parsing == f"{prefix}_{v}"]
