"""CSV import: valid files land, bad ones are reported row by row and write nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from ctloop.errors import CtloopError, DataValidationError
from ctloop.featureview import FeatureView
from ctloop.importer import import_csv
from ctloop.store import FeatureStore
from ctloop.synth import StreamConfig, generate_day

DAY = dt.date(2026, 4, 1)


def _csv(tmp_path: Path, view: FeatureView, rows: int = 20, labels: bool = True) -> pd.DataFrame:
    features, lab = generate_day(DAY, StreamConfig(rows_per_day=rows))
    frame = features.copy()
    if labels:
        frame[view.label.name] = lab[view.label.name]
        frame["arrived_at"] = lab["arrived_at"].dt.strftime("%Y-%m-%d %H:%M:%S")
    return frame


def _save(frame: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def test_valid_csv_imports_features_and_labels(tmp_path, store: FeatureStore, view) -> None:
    frame = _csv(tmp_path, view)
    result = import_csv(store, view, _save(frame, tmp_path))
    assert (result.rows_read, result.features_written, result.labels_written) == (20, 20, 20)
    counts = store.table_counts()
    assert counts["credit_score_features"] == 20
    assert counts["credit_score_labels"] == 20
    back = store.features_between(view, DAY, DAY + dt.timedelta(days=1))
    merged = back.merge(frame, on=view.entity, suffixes=("", "_csv"))
    assert (merged["annual_income"].fillna(-1) == merged["annual_income_csv"].fillna(-1)).all()


def test_features_only_csv(tmp_path, store: FeatureStore, view) -> None:
    result = import_csv(store, view, _save(_csv(tmp_path, view, labels=False), tmp_path))
    assert (result.features_written, result.labels_written) == (20, 0)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("age", "thirty", "'thirty' is not a number"),
        ("age", "12", "below the minimum 18"),
        ("num_of_loan", "2.5", "not a whole number"),
        ("credit_mix", "Excellent", "unknown category 'Excellent'"),
        ("interest_rate", "", "missing (not nullable)"),
        ("event_date", "yesterday", "'yesterday' is not a date"),
        ("credit_score", "Great", "unknown class 'Great'"),
    ],
)
def test_bad_value_is_reported_and_nothing_written(
    tmp_path, store: FeatureStore, view, column, value, reason
) -> None:
    frame = _csv(tmp_path, view).astype(object)
    frame.loc[6, column] = value
    with pytest.raises(DataValidationError) as info:
        import_csv(store, view, _save(frame, tmp_path))
    message = str(info.value)
    assert f"row 7, column '{column}'" in message
    assert reason in message
    assert "nothing was written" in message
    assert store.table_counts()["credit_score_features"] == 0


def test_missing_and_unknown_columns(tmp_path, store: FeatureStore, view) -> None:
    frame = _csv(tmp_path, view).drop(columns=["outstanding_debt"])
    frame["shoe_size"] = 42
    with pytest.raises(DataValidationError) as info:
        import_csv(store, view, _save(frame, tmp_path))
    message = str(info.value)
    assert "column 'outstanding_debt': column is missing" in message
    assert "column 'shoe_size': column is not part of the feature view" in message
    assert store.table_counts()["credit_score_features"] == 0


def test_unseen_category_allowed_by_view_passes(tmp_path, store: FeatureStore, view) -> None:
    assert view.feature("occupation").allow_unseen
    frame = _csv(tmp_path, view)
    frame.loc[0, "occupation"] = "Astronaut"
    assert import_csv(store, view, _save(frame, tmp_path)).features_written == 20


def test_skip_bad_rows_imports_the_rest(tmp_path, store: FeatureStore, view) -> None:
    frame = _csv(tmp_path, view).astype(object)
    frame.loc[2, "age"] = "-5"
    frame.loc[9, "credit_mix"] = "Superb"
    result = import_csv(store, view, _save(frame, tmp_path), skip_bad_rows=True)
    assert result.skipped_rows == 2
    assert result.features_written == 18
    assert result.labels_written == 18
    assert {p.row for p in result.problems} == {3, 10}
    assert store.table_counts()["credit_score_features"] == 18


def test_duplicate_keys_in_file_are_reported(tmp_path, store: FeatureStore, view) -> None:
    frame = _csv(tmp_path, view)
    frame.loc[5, view.entity] = frame.loc[4, view.entity]
    with pytest.raises(DataValidationError, match=r"row 6.*duplicate entity"):
        import_csv(store, view, _save(frame, tmp_path))


def test_unreadable_file(tmp_path, store: FeatureStore, view) -> None:
    with pytest.raises(CtloopError, match="file not found"):
        import_csv(store, view, tmp_path / "absent.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(CtloopError, match="not a readable CSV"):
        import_csv(store, view, empty)
