"""One batch of incoming rows (a dropped file, a SQL source's interval) checked the way
`ctloop import` checks a file: header resolved by the view's `import:` block, every value
through the view's rules (`ctloop.features.frames`, which reads `features.schema`).

The batch is then either landed whole, landed without its bad rows (the view's
`partial_loads`), or refused whole; file-level problems (a missing or unknown column)
always refuse it. The caller lands the result in one transaction with its bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from ctloop.features.frames import (
    ARRIVED_AT,
    Problem,
    good_rows,
    resolve_columns,
    sort_problems,
    validate_frame,
    validate_labels,
    view_columns,
)
from ctloop.features.view import FeatureView

Contents = Literal["features", "labels"]


@dataclass
class CheckedBatch:
    """The rows a batch may land, the problems found, and why it is refused (if it is)."""

    rows_read: int
    features: pd.DataFrame | None
    labels: pd.DataFrame | None
    problems: list[Problem] = field(default_factory=list)
    bad_rows: int = 0
    refused: str | None = None
    # False when the batch has no `arrived_at` column (its labels "arrived" at landing):
    # then a stored label that is unchanged keeps its arrival time, so re-reading a SQL
    # interval or a corrected file does not move past point-in-time training sets
    arrival_given: bool = True

    @property
    def rows_taken(self) -> int:
        """Rows that land: feature rows, or label rows for a labels batch."""
        if self.refused is not None:
            return 0
        if self.features is not None:
            return len(self.features)
        return 0 if self.labels is None else len(self.labels)

    @property
    def rows_rejected(self) -> int:
        """Rows that do not land: the bad rows, or every row of a refused batch."""
        return self.rows_read if self.refused is not None else self.bad_rows

    @property
    def late_labels(self) -> int:
        """Labels that arrived after their event day (the usual case for real labels)."""
        if self.refused is not None or self.labels is None or self.labels.empty:
            return 0
        arrived = pd.to_datetime(self.labels[ARRIVED_AT]).dt.normalize()
        event = pd.to_datetime(self.labels.iloc[:, 1]).dt.normalize()
        return int((arrived > event).sum())


def summary(problems: list[Problem]) -> str:
    """The first problems of a refused batch, one per line, for the ledger and the log."""
    shown = "; ".join(str(p) for p in problems[:10])
    more = len(problems) - 10
    return shown + (f"; ... and {more} more" if more > 0 else "")


def check_batch(
    view: FeatureView, raw: pd.DataFrame, contents: Contents, *, partial: bool
) -> CheckedBatch:
    """Check a batch of text cells against the view; nothing is written here.

    A features batch may carry the label and `arrived_at` too (as `ctloop import`
    allows); a labels batch carries entity, event date, label and optional `arrived_at`.
    """
    if contents == "labels":
        needed = [view.entity, view.event_date, view.label.name, ARRIVED_AT]
        resolved = resolve_columns(view, raw, wanted=needed)
        checked = validate_labels(view, resolved.frame)
    else:
        resolved = resolve_columns(view, raw)
        checked = validate_frame(view, resolved.frame)
    problems = sort_problems([*resolved.problems, *checked.problems], resolved.frame.columns)
    rows = checked.total_rows
    given = ARRIVED_AT in resolved.frame.columns
    if any(p.row is None for p in problems):
        reason = "file-level: " + summary(problems)
        return CheckedBatch(rows, None, None, problems, rows, reason, given)
    if problems and not partial:
        reason = f"{len(checked.bad_rows)} bad row(s), partial_loads is off: {summary(problems)}"
        return CheckedBatch(rows, None, None, problems, len(checked.bad_rows), reason, given)
    if contents == "labels":
        assert checked.labels is not None  # no file-level problem: the columns are there
        keep = ~np.isin(np.arange(1, rows + 1), list(checked.bad_rows))
        kept = checked.labels.loc[keep & checked.labels["_present"].to_numpy()]
        features, labels = None, kept.drop(columns="_present").reset_index(drop=True)
    else:
        features, labels = good_rows(checked)
    if labels is not None and labels.empty:
        labels = None
    return CheckedBatch(rows, features, labels, problems, len(checked.bad_rows), None, given)


def known_columns(view: FeatureView) -> set[str]:
    """Source column names that mean something to the view (its own, or mapped)."""
    return set(view_columns(view)) | set(view.import_options.columns)
