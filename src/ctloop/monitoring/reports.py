"""The drift report table: what each monitor check wrote, and what later checks read back.

The monitor's own store access: `drift_report` (defined in `ctloop.store.tables`, the
contract) lives in the feature store's database and shares its engine, but only this
module writes or queries it. Later checks read it to know where the last judged window
ended and when a drift retrain was last triggered (the cooldown).
"""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import sqlalchemy as sa

from ctloop.monitoring.result import MonitorResult
from ctloop.store import tables
from ctloop.store.dates import utc_now
from ctloop.store.engine import Database


def _clean(value: float | None) -> float | None:
    """NaN and infinities are not numbers a report column may hold: stored as NULL."""
    return (
        None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value
    )


class DriftReports:
    """The `drift_report` rows of one store database, on that database's pooled engine."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.table = tables.drift_report_table(sa.MetaData())

    def record(self, result: MonitorResult, triggered: bool | None = None) -> int:
        """Write the check's findings, its status (and the trigger decision, when one was
        taken) in one transaction; returns the rows written."""
        now = utc_now()
        base = {
            "check_id": result.check_id,
            "feature_view": result.view,
            "model_version": result.model_version,
            "window_start": result.window_start,
            "window_end": result.window_end,
            "n_reference": 0,
            "n_current": result.rows,
            "created_at": now,
        }
        rows = [
            {**base, "kind": f.kind, "feature": f.feature, "statistic": f.statistic,
             "value": _clean(f.value), "threshold": _clean(f.threshold), "drifted": f.drifted}
            for f in result.findings
        ]  # fmt: skip
        rows.append({**base, "kind": "status", "feature": "*", "statistic": result.status,
                     "value": None, "threshold": None, "drifted": result.retrain})  # fmt: skip
        if triggered is not None:
            rows.append({**base, "kind": "decision", "feature": "*",
                         "statistic": "retrain_triggered", "value": None, "threshold": None,
                         "drifted": triggered})  # fmt: skip
        with self.db.begin() as conn:
            conn.execute(self.table.insert(), rows)
        return len(rows)

    def last_window_end(self, view: str) -> dt.datetime | None:
        """Where the next check starts, so each check reads only new traffic, and a window
        too small to judge is not thrown away: after checks whose drift window had too few
        rows (even if they found accuracy decay, which has its own minimum), the next one
        starts where they started, until the rows add up to `drift.min_rows`. A window was
        judged when its check wrote a `dataset` row."""
        table = self.table
        mine = table.c.feature_view == view
        judged = sa.select(sa.func.max(table.c.window_end)).where(mine, table.c.kind == "dataset")
        with self.db.begin() as conn:
            end = conn.execute(judged).scalar_one_or_none()
            if end is not None:
                return end
            first = sa.select(sa.func.min(table.c.window_start)).where(
                mine, table.c.kind == "status"
            )
            return conn.execute(first).scalar_one_or_none()

    def last_drift_trigger(self, view: str) -> dt.datetime | None:
        """When the monitor last triggered a drift retrain for this view (for the cooldown)."""
        table = self.table
        query = (
            sa.select(sa.func.max(table.c.created_at))
            .where(table.c.feature_view == view)
            .where(table.c.kind == "decision")
            .where(table.c.statistic == "retrain_triggered")
            .where(table.c.drifted.is_(True))
        )
        with self.db.begin() as conn:
            return conn.execute(query).scalar_one_or_none()

    def read(self, view: str | None = None) -> pd.DataFrame:
        """The report's rows (of one view, or all), oldest first: for the CLI and tests."""
        query = sa.select(self.table).order_by(self.table.c.created_at, self.table.c.id)
        if view is not None:
            query = query.where(self.table.c.feature_view == view)
        with self.db.connect() as conn:
            return pd.read_sql(query, conn)
