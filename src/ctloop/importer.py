"""CSV import into a view's feature and label tables.

The file is read and checked in full before anything is written, and written in one
transaction: a failing file leaves the store exactly as it was, unless the user asks to
skip the bad rows, in which case only the rows without problems land.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ctloop.errors import CtloopError, DataValidationError
from ctloop.featureview import FeatureView
from ctloop.store import FeatureStore
from ctloop.validation import MAX_REPORTED, Problem, good_rows, validate_frame

log = logging.getLogger(__name__)


@dataclass
class ImportResult:
    """What an import did: rows read, written, and the problems it found."""

    rows_read: int
    features_written: int
    labels_written: int
    problems: list[Problem] = field(default_factory=list)
    skipped_rows: int = 0


def read_csv(path: Path) -> pd.DataFrame:
    """Read every cell as text so that validation, not pandas, decides what a value means."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError as exc:
        raise CtloopError(f"{path}: file not found") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CtloopError(f"{path}: not a readable CSV file: {exc}") from exc


def import_csv(
    store: FeatureStore, view: FeatureView, path: str | Path, *, skip_bad_rows: bool = False
) -> ImportResult:
    """Validate a CSV against the view and upsert it; all or nothing unless skipping bad rows."""
    path = Path(path)
    raw = read_csv(path)
    store.require_tables(view)
    checked = validate_frame(view, raw)
    file_level = [p for p in checked.problems if p.row is None]
    if file_level or (checked.problems and not skip_bad_rows):
        shown = "\n  ".join(str(p) for p in checked.problems[:MAX_REPORTED])
        more = len(checked.problems) - MAX_REPORTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        hint = "" if file_level else "\n(nothing was written; --skip-bad-rows imports the rest)"
        raise DataValidationError(
            f"{path}: {len(checked.problems)} problem(s) in {len(checked.bad_rows) or 'the'} "
            f"row(s)/file:\n  {shown}{tail}{hint}",
            checked.problems,
        )
    features, labels = good_rows(checked)
    n_features, n_labels = store.ingest(view, features, labels)
    log.info("%s: wrote %d feature rows and %d labels", path, n_features, n_labels)
    return ImportResult(
        rows_read=checked.total_rows,
        features_written=n_features,
        labels_written=n_labels,
        problems=checked.problems,
        skipped_rows=len(checked.bad_rows),
    )


def import_labels_csv(store: FeatureStore, view: FeatureView, path: str | Path) -> int:
    """Land labels from a CSV (entity, event date, label, optional arrived_at); all or nothing."""
    path = Path(path)
    raw = read_csv(path)
    problems: list[Problem] = []
    needed = [view.entity, view.event_date, view.label.name]
    for col in needed:
        if col not in raw.columns:
            problems.append(Problem(None, col, "column is missing"))
    for col in raw.columns:
        if col not in (*needed, "arrived_at"):
            problems.append(Problem(None, str(col), "column is not expected in a labels file"))
    if not problems:
        labels = raw[needed].copy()
        rows = range(1, len(raw) + 1)
        dates = pd.to_datetime(raw[view.event_date], errors="coerce", format="ISO8601")
        arrived = (
            pd.to_datetime(raw["arrived_at"], errors="coerce", format="ISO8601")
            if "arrived_at" in raw.columns
            else pd.Series(pd.Timestamp.now(tz="UTC").tz_localize(None), index=raw.index)
        )
        for row, entity, day, label, when in zip(
            rows, raw[view.entity], dates, raw[view.label.name], arrived, strict=True
        ):
            if pd.isna(entity) or str(entity).strip() == "":
                problems.append(Problem(row, view.entity, "entity key is missing"))
            if pd.isna(day):
                problems.append(Problem(row, view.event_date, "not a date"))
            if label not in view.label.classes:
                problems.append(Problem(row, view.label.name, f"unknown class '{label}'"))
            if pd.isna(when):
                problems.append(Problem(row, "arrived_at", "not a time"))
    if problems:
        shown = "\n  ".join(str(p) for p in problems[:MAX_REPORTED])
        raise DataValidationError(f"{path}: nothing was written:\n  {shown}", problems)
    labels[view.event_date] = dates
    labels["arrived_at"] = arrived
    return store.upsert_labels(view, labels)
