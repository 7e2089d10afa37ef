"""What every ctloop DAG shares, so the DAG files only say what is their own: a fixed
start date (never "now", which would move on every parse), no catch-up, one run at a time,
the owner shown in the UI, and tags by part of the loop and view."""

from __future__ import annotations

import datetime as dt
from typing import Any

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
