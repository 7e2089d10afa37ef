"""File import: valid files land, bad ones are reported row by row and write nothing.

Real files name columns their own way, write `NA` for missing values, carry time zones and
come as Parquet; the tests below feed such files through the view's `import:` rules.
Into embedded SQLite here; `tests/integration/test_importer_mariadb.py` runs the same
tests into MariaDB.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pandas as pd
import pytest

from ctloop.errors import CtloopError, DataValidationError
from ctloop.features.view import FeatureView, ImportOptions
from ctloop.ingest.files import import_csv, import_labels_csv
from ctloop.ingest.synth import StreamConfig, generate_day
from ctloop.store.features import FeatureStore

DAY = dt.date(2026, 4, 1)


def _features_of_day(store: FeatureStore, view: FeatureView) -> pd.DataFrame:
    """The feature rows stored for DAY."""
    return store.latest_features(view, DAY + dt.timedelta(days=1), 10**6, since=DAY)


def _labels_arrived(store: FeatureStore, view: FeatureView, until: dt.datetime) -> pd.DataFrame:
    """Every stored label that had arrived before `until`, whatever its event date."""
    return store.labels_for_days(view, dt.date(2000, 1, 1), dt.date(2100, 1, 1), until)


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
    said: list[str] = []
    result = import_csv(store, view, _save(frame, tmp_path), progress=said.append)
    assert (result.rows_read, result.features_written, result.labels_written) == (20, 20, 20)
    # each phase with its rate, as a big import goes (issue 20)
    assert [line.split(":")[0].split(" ")[0] for line in said] == ["read", "validated", "written"]
    assert all(re.search(r"[\d,]+ rows in [\d.]+s \([\d,]+ rows/s\)$", line) for line in said)
    counts = store.table_counts()
    assert counts["credit_score_features"] == 20
    assert counts["credit_score_labels"] == 20
    back = _features_of_day(store, view)
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


# ---------------------------------------------------------------- real files: names, NA, zones


def _importing(view: FeatureView, **options: object) -> FeatureView:
    """The view with its `import:` block replaced (validated as a view file would be)."""
    data = view.model_dump(by_alias=True)
    data["import"] = ImportOptions(**options).model_dump()
    return FeatureView.model_validate(data)


def _problems(info: pytest.ExceptionInfo[DataValidationError]) -> list[str]:
    return [str(p) for p in info.value.problems]


def test_headers_resolve_by_normalised_name_and_explicit_mapping(
    tmp_path, store: FeatureStore, view
) -> None:
    frame = _csv(tmp_path, view).rename(
        columns={
            "customer_id": "Customer ID",
            "event_date": " Event-Date ",
            "annual_income": "Annual Income",
            "credit_history_age_months": "History (months)",
        }
    )
    path = _save(frame, tmp_path)
    # without a mapping the oddly named column is not the view's, and the file is refused
    with pytest.raises(DataValidationError) as info:
        import_csv(store, view, path)
    assert "file, column 'History (months)': column is not part of the feature view" in (
        _problems(info)
    )
    assert "file, column 'credit_history_age_months': column is missing" in _problems(info)
    assert "'Customer ID' -> customer_id" in str(info.value)

    mapped = _importing(view, columns={"History (months)": "credit_history_age_months"})
    result = import_csv(store, mapped, path)
    assert result.renamed == {
        "Customer ID": "customer_id",
        " Event-Date ": "event_date",
        "Annual Income": "annual_income",
        "History (months)": "credit_history_age_months",
    }
    assert result.ignored == []
    assert (result.features_written, result.labels_written) == (20, 20)
    back = _features_of_day(store, view)
    merged = back.merge(frame, left_on="customer_id", right_on="Customer ID")
    assert (merged["credit_history_age_months"] == merged["History (months)"]).all()


def test_name_normalisation_can_be_turned_off(tmp_path, store: FeatureStore, view) -> None:
    frame = _csv(tmp_path, view).rename(columns={"customer_id": "Customer ID"})
    strict = _importing(view, normalize_names=False)
    with pytest.raises(DataValidationError) as info:
        import_csv(store, strict, _save(frame, tmp_path))
    assert "file, column 'customer_id': column is missing" in _problems(info)


def test_two_columns_for_one_view_column_are_refused(tmp_path, store: FeatureStore, view) -> None:
    frame = _csv(tmp_path, view).astype(object)
    frame["Customer ID"] = frame["customer_id"]
    frame["Years"] = frame["age"]
    frame.loc[4, "age"] = "old"  # row problems are reported too, after the file's
    mapped = _importing(view, columns={"Years": "age"})
    with pytest.raises(DataValidationError) as info:
        import_csv(store, mapped, _save(frame, tmp_path))
    problems = _problems(info)
    assert problems[:2] == [
        "file, column 'customer_id': columns 'customer_id' and 'Customer ID' both map to "
        "'customer_id'",
        "file, column 'age': columns 'age' and 'Years' both map to 'age'",
    ]
    assert "row 5, column 'age': 'old' is not a number" in problems
    assert store.table_counts()["credit_score_features"] == 0


def test_extra_columns_refused_by_default_ignored_on_request(
    tmp_path, store: FeatureStore, view
) -> None:
    frame = _csv(tmp_path, view)
    frame["Shoe Size"] = 42
    frame["notes"] = "called twice"
    path = _save(frame, tmp_path)
    with pytest.raises(DataValidationError) as info:
        import_csv(store, view, path)
    assert _problems(info) == [
        "file, column 'Shoe Size': column is not part of the feature view",
        "file, column 'notes': column is not part of the feature view",
    ]
    result = import_csv(store, _importing(view, extra_columns="ignore"), path)
    assert result.ignored == ["Shoe Size", "notes"]
    assert result.features_written == 20


@pytest.mark.parametrize("marker", ["NA", "NaN", "null", "", "  N/A  "])
def test_missing_markers_are_missing_values(tmp_path, store: FeatureStore, view, marker) -> None:
    frame = _csv(tmp_path, view).astype(object)
    frame.loc[3, "annual_income"] = marker  # nullable: lands as NULL
    frame.loc[4, "occupation"] = marker  # nullable categorical
    result = import_csv(store, view, _save(frame, tmp_path))
    assert result.features_written == 20
    back = _features_of_day(store, view).set_index(view.entity)
    assert pd.isna(back.loc[frame.loc[3, view.entity], "annual_income"])
    assert pd.isna(back.loc[frame.loc[4, view.entity], "occupation"])

    frame.loc[6, "interest_rate"] = marker  # not nullable: refused, by row
    with pytest.raises(DataValidationError) as info:
        import_csv(store, view, _save(frame, tmp_path))
    assert _problems(info) == ["row 7, column 'interest_rate': value is missing (not nullable)"]


def test_custom_missing_values(tmp_path, store: FeatureStore, view) -> None:
    custom = _importing(view, missing_values=["?", "-"])
    frame = _csv(tmp_path, view).astype(object)
    frame.loc[1, "annual_income"] = "?"
    frame.loc[2, "monthly_inhand_salary"] = " - "
    assert import_csv(store, custom, _save(frame, tmp_path)).features_written == 20
    frame.loc[5, "annual_income"] = "NA"  # not a marker of this view
    with pytest.raises(DataValidationError) as info:
        import_csv(store, custom, _save(frame, tmp_path))
    assert _problems(info) == ["row 6, column 'annual_income': 'NA' is not a number"]


def test_problems_are_sorted_by_row_then_file_column(tmp_path, store: FeatureStore, view) -> None:
    frame = _csv(tmp_path, view).astype(object)
    frame.loc[8, "age"] = "200"
    frame.loc[1, "credit_mix"] = "Superb"
    frame.loc[1, "age"] = "x"
    frame.loc[1, "credit_score"] = "Great"
    frame.loc[4, "interest_rate"] = "NA"
    with pytest.raises(DataValidationError) as info:
        import_csv(store, view, _save(frame, tmp_path))
    expected = [
        "row 2, column 'age': 'x' is not a number",
        "row 2, column 'credit_mix': unknown category 'Superb' (allowed: Bad, Good, Standard)",
        "row 2, column 'credit_score': unknown class 'Great' (classes: Good, Standard, Poor)",
        "row 5, column 'interest_rate': value is missing (not nullable)",
        "row 9, column 'age': 200.0 is above the maximum 100.0",
    ]
    assert _problems(info) == expected
    assert "\n  ".join(expected) in str(info.value)


def test_arrived_at_offsets_are_converted_to_utc(tmp_path, store: FeatureStore, view) -> None:
    frame = _csv(tmp_path, view, rows=5).astype(object)
    frame["arrived_at"] = [
        "2026-04-08T10:00:00+02:00",
        "2026-04-08T10:00:00Z",
        "2026-04-08 10:00:00",
        "2026-04-08",
        "2026-04-07T23:30:00-05:00",
    ]
    frame.loc[4, "event_date"] = "2026-04-01T18:45:00"  # a date-time is cut to its day
    frame.loc[3, "event_date"] = "2026-04-01T00:30:00+02:00"  # the date as written, not UTC's
    result = import_csv(store, view, _save(frame, tmp_path))
    assert result.labels_written == 5
    back = _labels_arrived(store, view, dt.datetime(2030, 1, 1)).set_index(view.entity)
    arrived = [back.loc[e, "arrived_at"] for e in frame[view.entity]]
    assert arrived == [
        pd.Timestamp("2026-04-08 08:00:00"),
        pd.Timestamp("2026-04-08 10:00:00"),
        pd.Timestamp("2026-04-08 10:00:00"),
        pd.Timestamp("2026-04-08 00:00:00"),
        pd.Timestamp("2026-04-08 04:30:00"),
    ]
    assert set(pd.to_datetime(back[view.event_date]).dt.date) == {DAY}


def test_bad_or_missing_arrival_time_of_a_label_is_refused(
    tmp_path, store: FeatureStore, view
) -> None:
    frame = _csv(tmp_path, view, rows=5).astype(object)
    frame.loc[1, "arrived_at"] = "soon"
    frame.loc[2, "arrived_at"] = "NA"
    frame.loc[3, ["credit_score", "arrived_at"]] = ["NA", "NA"]  # no label: nothing to time
    with pytest.raises(DataValidationError) as info:
        import_csv(store, view, _save(frame, tmp_path))
    assert _problems(info) == [
        "row 2, column 'arrived_at': 'soon' is not a time",
        "row 3, column 'arrived_at': arrival time is missing (the row has a label)",
    ]


def test_parquet_file_is_imported_through_the_same_checks(
    tmp_path, store: FeatureStore, view
) -> None:
    features, lab = generate_day(DAY, StreamConfig(rows_per_day=20))
    frame = features.rename(columns={"customer_id": "Customer ID"})
    frame["event_date"] = pd.to_datetime(frame["event_date"]).dt.date
    frame[view.label.name] = lab[view.label.name]
    # a zoned timestamp column: stored as UTC
    frame["arrived_at"] = pd.to_datetime(lab["arrived_at"]).dt.tz_localize("Europe/Berlin")
    frame["num_of_loan"] = frame["num_of_loan"].astype(float)  # 2.0 is still whole
    path = tmp_path / "data.parquet"
    frame.to_parquet(path, index=False)
    result = import_csv(store, view, path)
    assert (result.features_written, result.labels_written) == (20, 20)
    assert result.renamed == {"Customer ID": "customer_id"}
    back = _features_of_day(store, view).set_index(view.entity)
    src = features.set_index(view.entity).loc[back.index]
    pd.testing.assert_series_equal(back["annual_income"], src["annual_income"])
    pd.testing.assert_series_equal(back["num_of_loan"], src["num_of_loan"], check_dtype=False)
    stored = _labels_arrived(store, view, dt.datetime(2030, 1, 1)).set_index(view.entity)
    expected = lab.set_index(view.entity)["arrived_at"] - pd.Timedelta(hours=2)  # CEST in April
    assert (stored["arrived_at"] == expected.loc[stored.index]).all()

    frame.loc[3, "num_of_loan"] = 2.5
    frame.to_parquet(path, index=False)
    with pytest.raises(DataValidationError, match=r"row 4, column 'num_of_loan': 2.5 is not a"):
        import_csv(store, view, path)


def test_labels_file_uses_the_same_rules(tmp_path, store: FeatureStore, view) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "Customer ID,Event Date,Credit Score,arrived_at,Comment\n"
        "C1,2026-04-01,Good,2026-04-08T12:00:00+02:00,x\n"
        "C2,2026-04-01,Poor,2026-04-08,y\n"
    )
    with pytest.raises(DataValidationError) as info:
        import_labels_csv(store, view, path)
    assert _problems(info) == ["file, column 'Comment': column is not expected in a labels file"]
    result = import_labels_csv(store, _importing(view, extra_columns="ignore"), path)
    assert result.labels_written == 2
    assert result.renamed == {
        "Customer ID": "customer_id",
        "Event Date": "event_date",
        "Credit Score": "credit_score",
    }
    assert result.ignored == ["Comment"]
    back = _labels_arrived(store, view, dt.datetime(2030, 1, 1)).set_index(view.entity)
    assert back.loc["C1", "arrived_at"] == pd.Timestamp("2026-04-08 10:00:00")

    path.write_text(
        "customer_id,event_date,credit_score\n"
        "C3,2026-04-02,Great\n"
        "C4,NA,Good\n"
        ",2026-04-02,NA\n"
        "C1,2026-04-01,Good\n"
        "C1,2026-04-01,Poor\n"
    )
    with pytest.raises(DataValidationError) as info:
        import_labels_csv(store, view, path)
    assert _problems(info) == [
        "row 1, column 'credit_score': unknown class 'Great' (classes: Good, Standard, Poor)",
        "row 2, column 'event_date': event date is missing",
        "row 3, column 'customer_id': entity key is missing",
        "row 3, column 'credit_score': label is missing",
        "row 5, column 'customer_id': duplicate entity and event date in this file",
    ]
    assert "nothing was written" in str(info.value)
    assert len(_labels_arrived(store, view, dt.datetime(2030, 1, 1))) == 2


# ---------------------------------------------------------------- regression labels

REGRESSION_VIEW = {
    "name": "house_price",
    "entity": "house_id",
    "label": {"name": "y", "kind": "regression", "min": 0},
    "features": [
        {"name": "rooms", "type": "numeric", "integer": True, "min": 0},
        {"name": "area", "type": "numeric", "nullable": True},
    ],
}


@pytest.fixture
def regression(store: FeatureStore) -> FeatureView:
    fv = FeatureView.model_validate(REGRESSION_VIEW)
    store.init([fv])
    return fv


def test_regression_labels_import_as_numbers(
    tmp_path, store: FeatureStore, regression: FeatureView
) -> None:
    path = tmp_path / "houses.csv"
    path.write_text(
        "House ID,Event Date,Rooms,Area,Y\n"
        "H1,2026-04-01,3,72.5,250000.5\n"
        "H2,2026-04-01,2,NA,0\n"
        "H3,2026-04-01,4,,NA\n"  # features only: its label is not known yet
        "H4,2026-04-01,1,30,1e3\n"
    )
    result = import_csv(store, regression, path)
    assert (result.features_written, result.labels_written) == (4, 3)
    back = _labels_arrived(store, regression, dt.datetime(2030, 1, 1)).set_index("house_id")
    assert back["y"].to_dict() == {"H1": 250000.5, "H2": 0.0, "H4": 1000.0}
    assert back["y"].dtype == "float64"

    path.write_text(
        "house_id,event_date,rooms,area,y\n"
        "H1,2026-04-02,3,72.5,abc\n"
        "H2,2026-04-02,2,50,-1\n"
        "H3,2026-04-02,2,50,inf\n"
    )
    with pytest.raises(DataValidationError) as info:
        import_csv(store, regression, path)
    assert _problems(info) == [
        "row 1, column 'y': 'abc' is not a number",
        "row 2, column 'y': -1.0 is below the minimum 0.0",
        "row 3, column 'y': 'inf' is not a number",
    ]


def test_regression_labels_file(tmp_path, store: FeatureStore, regression: FeatureView) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "house_id,event_date,y,arrived_at\n"
        "H1,2026-04-01,12.25,2026-04-03T00:00:00Z\n"
        "H2,2026-04-01, 7 ,2026-04-03\n"
    )
    assert import_labels_csv(store, regression, path).labels_written == 2
    back = _labels_arrived(store, regression, dt.datetime(2030, 1, 1)).set_index("house_id")
    assert back["y"].to_dict() == {"H1": 12.25, "H2": 7.0}
    path.write_text("house_id,event_date,y\nH5,2026-04-01,-0.5\nH6,2026-04-01,twelve\n")
    with pytest.raises(DataValidationError) as info:
        import_labels_csv(store, regression, path)
    assert _problems(info) == [
        "row 1, column 'y': -0.5 is below the minimum 0.0",
        "row 2, column 'y': 'twelve' is not a number",
    ]


def test_whole_numbers_from_parquet_stay_whole(tmp_path, store: FeatureStore) -> None:
    """pandas turns an integer column with a missing value into floats; `1.0` must still be
    the class `1`, and an entity id `123.0` the customer `123`."""
    from ctloop.features.view import FeatureView

    raw = {
        "name": "churn", "entity": "customer_id",
        "label": {"name": "churned", "kind": "binary", "classes": ["0", "1"],
                  "positive_class": "1"},
        "features": [{"name": "minutes", "type": "numeric"}],
    }  # fmt: skip
    view = FeatureView.model_validate(raw)
    store.init([view])
    frame = pd.DataFrame({
        "customer_id": pd.array([123, 124, None], dtype="Int64").astype("float"),
        "event_date": [DAY, DAY, DAY],
        "minutes": [10.5, 3.0, 4.0],
        "churned": pd.array([1, 0, None], dtype="Int64").astype("float"),
    })  # fmt: skip
    path = tmp_path / "churn.parquet"
    frame.iloc[:2].to_parquet(path, index=False)
    result = import_csv(store, view, path)
    assert (result.features_written, result.labels_written) == (2, 2)
    labels = _labels_arrived(store, view, dt.datetime(2100, 1, 1))
    assert sorted(labels["customer_id"]) == ["123", "124"]
    assert sorted(labels["churned"]) == ["0", "1"]
    frame.to_parquet(path, index=False)  # the third row has no entity: refused by name
    with pytest.raises(DataValidationError, match="row 3, column 'customer_id'"):
        import_csv(store, view, path)
