"""A window of a view's log summarized by the database: counts per bucket, not rows.

The monitor's drift statistics need per feature only counts and sums per bucket
(`core.summary`). On MariaDB/MySQL, with the view's typed log table, each is one
`GROUP BY INTERVAL(column, edges...)` (a binary search over the constant edges) or
`GROUP BY column`, so a check over ten million rows sends O(buckets) over the wire and
holds nothing per row, where reading the rows cost a JSON parse each (1.3-2.3 us of
server CPU per row and feature even inside the database). The buckets are the ones
`core.summary.numeric_summary` counts row by row, so both give the same drift values.

Elsewhere (SQLite, PostgreSQL, a view still logging to the shared JSON table or with
rows of the window still there) `summarize` returns None and the monitor summarizes the
rows it reads, and so does a database that fails the queries (MySQL before 8.0.21 has no
JSON_VALUE). A logged value its column could not hold (kept in `_extra`: a number past
2^53, a category longer than the column) counts as missing here, present in the rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
import sqlalchemy as sa

from ctloop.core.stats import MISSING
from ctloop.core.summary import (
    CategoricalSummary,
    NumericSummary,
    WindowSummary,
    bucket_edges,
)
from ctloop.features.view import FeatureView
from ctloop.predlog.store import (
    CHAMPION_ROLE,
    SAMPLE_MODULUS,
    SAMPLE_MULTIPLIER,
    PredictionLog,
    sample_threshold,
)
from ctloop.predlog.typed import TypedLayout
from ctloop.store.engine import MYSQL_DIALECTS

log = logging.getLogger(__name__)


def summarize(
    predictions: PredictionLog,
    view: FeatureView,
    reference: dict[str, Any],
    since: dt.datetime,
    until: dt.datetime,
    model_version: str | None = None,
    role: str | None = CHAMPION_ROLE,
    fraction: float = 1.0,
) -> WindowSummary | None:
    """The summary of the view's rows in [since, until) of one version and role, computed
    by the database (with `fraction` < 1, of the rows a read at that fraction returns:
    the same hash of the row id); None where it cannot (see the module docstring)."""
    if predictions.db.dialect not in MYSQL_DIALECTS:
        return None
    layout = predictions.layout(view.name)
    if layout is None:
        return None
    shared = predictions.table
    legacy = predictions.filtered(
        sa.select(sa.func.count()).select_from(shared)
        .where(shared.c.created_at >= since, shared.c.created_at < until),
        shared, view.name, model_version, role,
    )  # fmt: skip
    with predictions.db.read_connect() as conn:
        if conn.execute(legacy).scalar_one():  # rows from before the typed table: read them
            return None
    try:
        return _Summarizer(predictions, layout, since, until, model_version, role, fraction).run(
            view, reference
        )
    except sa.exc.DBAPIError as exc:  # e.g. MySQL before 8.0.21 (no JSON_VALUE, CAST AS DOUBLE)
        if exc.connection_invalidated:
            raise
        log.warning("%s: the database could not summarize the window (%s); reading rows",
                    layout.table.name, str(exc.orig or exc).splitlines()[0][:200])  # fmt: skip
        return None


class _Summarizer:
    """The GROUP BY queries of one window: SQL text with every value bound, through the
    driver directly (`%s`: both MySQL drivers' style; SQLAlchemy's bind handling cost
    more than the query for thousands of edges)."""

    def __init__(
        self,
        predictions: PredictionLog,
        layout: TypedLayout,
        since: dt.datetime,
        until: dt.datetime,
        model_version: str | None,
        role: str | None,
        fraction: float,
    ) -> None:
        self.predictions = predictions
        self.layout = layout
        self.quote = predictions.db.engine.dialect.identifier_preparer.quote_identifier
        where = ["created_at >= %s", "created_at < %s"]
        self.params: list[Any] = [since, until]
        if model_version is not None:
            where.append("model_version = %s")
            self.params.append(str(model_version))
        if role == CHAMPION_ROLE:  # rows from before roles existed are the champion's
            where.append("(role IS NULL OR role = %s)")
        elif role is not None:
            where.append("role = %s")
        if role is not None:
            self.params.append(role)
        if fraction < 1:  # `store._hashed` in SQL (MOD: no `%` in the driver's text)
            where.append(f"MOD(MOD(id, {SAMPLE_MODULUS}) * {SAMPLE_MULTIPLIER}, "
                         f"{SAMPLE_MODULUS}) < %s")  # fmt: skip
            self.params.append(sample_threshold(fraction))
        self.source = f"FROM {self.quote(layout.table.name)} WHERE {' AND '.join(where)}"

    def run(self, view: FeatureView, reference: dict[str, Any]) -> WindowSummary:
        with self.predictions.db.read_connect() as conn:
            count = conn.exec_driver_sql(f"SELECT COUNT(*) {self.source}", tuple(self.params))
            rows = int(count.scalar_one())
            features: dict[str, NumericSummary | CategoricalSummary] = {}
            for feature in view.features:
                ref = reference["features"].get(feature.name)
                if ref is None:
                    continue
                column = self.quote(feature.name)
                if ref["type"] == "numeric" and feature.name in self.layout.numeric:
                    features[feature.name] = self._numeric(conn, column, [], bucket_edges(ref))
                elif ref["type"] != "numeric" and feature.name in self.layout.text:
                    features[feature.name] = self._categorical(conn, column)
            predictions = output = None
            if not view.label.is_regression:
                predictions = self._categorical(conn, "prediction")
            distribution = reference.get("prediction", {}).get("distribution")
            value = self._output(view)
            if distribution is not None and value is not None:
                expression, bound = value
                output = self._numeric(conn, expression, bound, bucket_edges(distribution))
        return WindowSummary(rows, features, predictions, output)

    def _output(self, view: FeatureView) -> tuple[str, list[Any]] | None:
        """The regression value, or the binary score (the positive class's probability),
        as SQL and the values it binds."""
        if view.label.is_regression:
            return "CAST(prediction AS DOUBLE)", []
        if not view.label.is_binary:
            return None
        name = str(view.label.positive_class).replace("\\", "\\\\").replace('"', '\\"')
        return "CAST(JSON_VALUE(probabilities, %s) AS DOUBLE)", [f'$."{name}"']

    def _numeric(
        self, conn: sa.Connection, value: str, bound: list[Any], edges: np.ndarray
    ) -> NumericSummary:
        """Count and sum per bucket (INTERVAL: the number of edges at or below the value,
        as numpy's searchsorted(side='right')); NULL is INTERVAL's -1: missing. The edges
        are bound as floats, which both drivers write as their exact repr."""
        marks = ", %s" * len(edges)
        bucket = f"INTERVAL({value}{marks})" if len(edges) else f"IF({value} IS NULL, -1, 0)"
        sql = f"SELECT {bucket} AS b, COUNT(*), SUM({value}) {self.source} GROUP BY b"
        params = (*bound, *map(float, edges), *bound, *self.params)
        counts = np.zeros(len(edges) + 1, dtype=np.int64)
        sums = np.zeros(len(edges) + 1, dtype=float)
        missing = 0
        for index, count, total in conn.exec_driver_sql(sql, params):
            if index < 0:
                missing = int(count)
            else:
                counts[index], sums[index] = int(count), float(total or 0.0)
        return NumericSummary(edges, counts, sums, missing)

    def _categorical(self, conn: sa.Connection, column: str) -> CategoricalSummary:
        """Rows per value, compared as bytes: the binary collation still pads, so a plain
        GROUP BY would merge 'a' and 'a ' (pandas keeps them apart)."""
        sql = f"SELECT CAST({column} AS BINARY) AS v, COUNT(*) {self.source} GROUP BY v"
        counts: dict[str, int] = {}
        for value, count in conn.exec_driver_sql(sql, tuple(self.params)):
            key = MISSING if value is None else bytes(value).decode("utf-8")
            counts[key] = counts.get(key, 0) + int(count)
        return CategoricalSummary(counts)
