"""Feature store behaviour on embedded SQLite; the same test code runs on MariaDB in
`tests/integration/test_store_mariadb.py` (the `store` fixture names the backend)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from ctloop.errors import DataValidationError, StoreUnavailableError
from ctloop.features.view import FeatureView
from ctloop.ingest.synth import StreamConfig, generate_day
from ctloop.predlog.row import encode_json
from ctloop.predlog.store import PredictionLog
from ctloop.store.features import FeatureStore

DAY = dt.date(2026, 3, 1)


def _day(day: dt.date, rows: int = 50, delay: int = 3, seed: int = 1):
    return generate_day(day, StreamConfig(seed=seed, rows_per_day=rows, label_delay_days=delay))


def _counts(store: FeatureStore) -> dict[str, int]:
    return store.table_counts()


def _rows_read_by_sqlalchemy(
    store: FeatureStore, view: FeatureView, as_of: dt.date
) -> pd.DataFrame:
    """The same point-in-time query read the plain way (SQLAlchemy rows, pandas): what
    `training_set`'s preallocated, cursor-level read must reproduce."""
    start, end = store.window(view, as_of, 30)
    with store.engine.connect() as conn:
        return pd.read_sql(store._training_query(view, start, end), conn)


def test_init_is_idempotent_and_creates_all_tables(store: FeatureStore, view: FeatureView) -> None:
    store.init([view])
    counts = _counts(store)
    for table in ("credit_score_features", "credit_score_labels", "prediction_log", "drift_report"):
        assert counts[table] == 0


def test_upsert_twice_leaves_same_rows(store: FeatureStore, view: FeatureView) -> None:
    features, labels = _day(DAY)
    assert store.ingest(view, features, labels) == (50, 50)
    store.ingest(view, features, labels)
    counts = _counts(store)
    assert counts["credit_score_features"] == 50
    assert counts["credit_score_labels"] == 50


def test_upsert_updates_values_in_place(store: FeatureStore, view: FeatureView) -> None:
    features, _ = _day(DAY, rows=5)
    store.ingest(view, features)
    changed = features.copy()
    changed["age"] = 99.0
    store.ingest(view, changed)
    back = store.latest_features(view, DAY + dt.timedelta(days=1), 10_000, since=DAY)
    assert len(back) == 5
    assert (back["age"] == 99.0).all()


def test_missing_values_round_trip_as_missing(store: FeatureStore, view: FeatureView) -> None:
    features, _ = _day(DAY, rows=400)
    store.ingest(view, features)
    back = store.latest_features(view, DAY + dt.timedelta(days=1), 10_000, since=DAY)
    assert (
        back["monthly_inhand_salary"].isna().sum() == features["monthly_inhand_salary"].isna().sum()
    )
    assert back["occupation"].isna().sum() == features["occupation"].isna().sum()
    assert back["monthly_inhand_salary"].isna().sum() > 0


def _tiny(view: FeatureView, entity: str, day: dt.date) -> dict:
    row = {view.entity: entity, view.event_date: day}
    for f in view.features:
        row[f.name] = (f.min or 0) + 1 if f.is_numeric else f.categories[0]
    return row


def test_point_in_time_excludes_late_labels_and_rows_on_or_after_as_of(
    store: FeatureStore, view: FeatureView
) -> None:
    as_of = dt.date(2026, 3, 10)
    rows = [
        _tiny(view, "early", dt.date(2026, 3, 1)),  # label arrived in time: included
        _tiny(view, "late_label", dt.date(2026, 3, 2)),  # label arrives after as-of: excluded
        _tiny(view, "on_as_of", as_of),  # feature row on the as-of date: excluded
        _tiny(view, "after", dt.date(2026, 3, 11)),  # in the future: excluded
        _tiny(view, "edge", dt.date(2026, 3, 9)),  # label exactly at the as-of instant: excluded
        _tiny(view, "too_old", dt.date(2025, 12, 1)),  # before the window: excluded
    ]
    arrived = {
        "early": dt.datetime(2026, 3, 5, 12),
        "late_label": dt.datetime(2026, 3, 10, 0, 0, 1),
        "on_as_of": dt.datetime(2026, 3, 9, 23),  # label "earlier" than its features
        "after": dt.datetime(2026, 3, 9),
        "edge": dt.datetime(2026, 3, 10, 0, 0, 0),
        "too_old": dt.datetime(2025, 12, 5),
    }
    features = pd.DataFrame(rows)
    labels = pd.DataFrame(
        {
            view.entity: list(arrived),
            view.event_date: [r[view.event_date] for r in rows],
            view.label.name: "Good",
            "arrived_at": list(arrived.values()),
        }
    )
    store.ingest(view, features, labels)
    train = store.training_set(view, as_of, window_days=60)
    assert list(train[view.entity]) == ["early"]
    assert (train[view.event_date] < pd.Timestamp(as_of)).all()
    assert (train["arrived_at"] < pd.Timestamp(as_of)).all()
    # a day later the late label has arrived and the as-of row is in the past
    later = store.training_set(view, as_of + dt.timedelta(days=1), window_days=60)
    assert sorted(later[view.entity]) == ["early", "edge", "late_label", "on_as_of"]


def test_training_set_types_order_and_chunking(store: FeatureStore, view: FeatureView) -> None:
    for offset in range(6):
        store.ingest(view, *_day(DAY + dt.timedelta(days=offset), rows=400, delay=1))
    as_of = DAY + dt.timedelta(days=10)
    store.chunk_rows = 333  # several chunks, and a partial last one
    frame = store.training_set(view, as_of, window_days=30)
    assert len(frame) == 2400
    assert list(frame.columns) == [
        view.entity, view.event_date, *view.feature_names, view.label.name, "arrived_at"
    ]  # fmt: skip
    for f in view.numeric_features:
        assert frame[f.name].dtype == "float64"
    assert frame[view.event_date].is_monotonic_increasing
    assert set(frame[view.label.name]) <= set(view.label.classes)
    streamed = _rows_read_by_sqlalchemy(store, view, as_of)
    assert len(streamed) == len(frame)
    assert list(streamed[view.entity]) == list(frame[view.entity])
    pd.testing.assert_series_equal(
        streamed["annual_income"].astype(float).reset_index(drop=True),
        frame["annual_income"].reset_index(drop=True),
    )
    # as of day 4 the labels of day 3 have not arrived: fewer rows than the window's
    # feature rows, so the arrays were allocated too long and are cut to the rows read
    early = DAY + dt.timedelta(days=4)
    partial = store.training_set(view, early, window_days=30)
    expected = _rows_read_by_sqlalchemy(store, view, early)
    assert len(partial) == len(expected) == 1200
    assert list(partial[view.entity]) == list(expected[view.entity])
    assert partial[view.event_date].max() == pd.Timestamp(DAY + dt.timedelta(days=2))


def test_labels_with_unknown_class_are_refused_and_nothing_written(
    store: FeatureStore, view: FeatureView
) -> None:
    features, labels = _day(DAY, rows=10)
    labels.loc[3, view.label.name] = "Excellent"
    with pytest.raises(DataValidationError, match="Excellent"):
        store.ingest(view, features, labels)
    assert _counts(store)["credit_score_features"] == 0


def test_missing_column_is_refused(store: FeatureStore, view: FeatureView) -> None:
    features, _ = _day(DAY, rows=10)
    with pytest.raises(DataValidationError, match=r"missing column.*interest_rate"):
        store.ingest(view, features.drop(columns=["interest_rate"]))


def test_ingest_is_atomic(store: FeatureStore, view: FeatureView, monkeypatch) -> None:
    """A failure after the features are written rolls them back with the labels."""
    features, labels = _day(DAY, rows=10)
    real_write = store._write

    def write_then_fail(conn, table, frame, *rest):
        written = real_write(conn, table, frame, *rest)
        if table.name == view.labels_table:
            raise RuntimeError("database went away mid-transaction")
        return written

    monkeypatch.setattr(store, "_write", write_then_fail)
    with pytest.raises(RuntimeError, match="went away"):
        store.ingest(view, features, labels)
    assert _counts(store)["credit_score_features"] == 0
    assert _counts(store)["credit_score_labels"] == 0


def _log_row(view_name: str, when: dt.datetime, version: str = "1") -> dict:
    return {
        "request_id": uuid.uuid4().hex,
        "feature_view": view_name,
        "model_version": version,
        "entity_id": "CUS_1",
        "features": json.dumps({"age": 30, "occupation": "Doctor"}),
        "prediction": "Good",
        "probabilities": json.dumps({"Good": 0.7, "Standard": 0.2, "Poor": 0.1}),
        "latency_ms": 1.5,
        "created_at": when,
    }


def test_latest_features_reads_the_newest_rows_before_a_date(
    store: FeatureStore, view: FeatureView
) -> None:
    for offset in range(3):
        store.ingest(view, _day(DAY + dt.timedelta(days=offset), rows=10)[0])
    newest = store.latest_features(view, DAY + dt.timedelta(days=10), 15)
    days = pd.to_datetime(newest[view.event_date]).dt.date
    assert len(newest) == 15
    assert (days[:10] == DAY + dt.timedelta(days=2)).all()
    assert (days[10:] == DAY + dt.timedelta(days=1)).all()
    before = store.latest_features(view, DAY + dt.timedelta(days=1), 15)
    assert len(before) == 10 and (pd.to_datetime(before[view.event_date]).dt.date == DAY).all()
    assert store.latest_features(
        view, DAY + dt.timedelta(days=10), 5, since=DAY + dt.timedelta(days=3)
    ).empty


def test_prediction_log_window_read_and_replay_dedup(store: FeatureStore) -> None:
    log = PredictionLog(store)
    t0 = dt.datetime(2026, 3, 1, 12)
    rows = [_log_row("credit_score", t0 + dt.timedelta(minutes=i)) for i in range(10)]
    rows.append(_log_row("other_view", t0))
    assert log.write(rows) == 11
    assert log.write(rows[:5]) == 0  # replay writes nothing twice
    assert log.count() == 11
    window = log.read("credit_score", t0 + dt.timedelta(minutes=2), t0 + dt.timedelta(minutes=5))
    assert len(window) == 3
    assert list(window["age"]) == [30, 30, 30]
    assert list(window["proba_Good"]) == [0.7, 0.7, 0.7]
    assert window["created_at"].is_monotonic_increasing


def test_prediction_log_rows_are_stored_exactly_as_given(store: FeatureStore) -> None:
    """The shared JSON table (a view without a typed table of its own): MariaDB writes
    it through LOAD DATA or one JSON_TABLE document, SQLite through executemany; each must
    store every value as given, NULLs, quotes, backslashes and emoji included (the
    service's schema bounds every length before a row exists)."""
    log = PredictionLog(store)
    t0 = dt.datetime(2026, 3, 1, 12, 0, 0, 123456)
    tricky = 'O\'Brien \\ "quoted" ; DROP TABLE prediction_log; -- 🙂 ünïcode\n'
    name = "no_typed_table"
    rows = [
        {**_log_row(name, t0), "entity_id": tricky,
         "features": json.dumps({"occupation": tricky, "age": 30.5}, ensure_ascii=False)},
        {**_log_row(name, t0), "entity_id": None},
        {**_log_row(name, dt.datetime(2026, 3, 1, 12)), "latency_ms": 0.000123},
        # the serving writer's rows: JSON fields still objects, encoded by the store
        {**_log_row(name, t0), "features": {"occupation": tricky, "age": 1e-7},
         "probabilities": {"Good": 0.1, "Standard": 0.2, "Poor": 0.7}},
        # values orjson refuses: the batch takes the executemany path, stored as numbers
        {**_log_row(name, t0), "features": {"age": np.float64(0.5), "id": 2**70}},
    ]  # fmt: skip
    assert log.write(rows) == 5
    table = log.table
    with store.engine.connect() as conn:
        stored = {r.request_id: r for r in conn.execute(sa.select(table))}
    for row in rows:
        back = stored[row["request_id"]]
        assert back.entity_id == row["entity_id"]
        for field in ("features", "probabilities"):  # text as given, objects as encode_json
            given = row[field]
            assert getattr(back, field) == (given if isinstance(given, str) else encode_json(given))
        assert float(back.latency_ms) == row["latency_ms"]
        assert back.created_at == row["created_at"]
    assert stored[rows[-1]["request_id"]].features == '{"age":0.5,"id":1180591620717411303424}'
    assert log.write(rows) == 0  # a replay writes nothing twice
    assert log.count() == 5


def test_a_views_typed_log_gives_back_every_value_as_logged(
    store: FeatureStore, view: FeatureView
) -> None:
    """A view with its own table (`init-db` made `credit_score_predictions`) logs one typed
    column per feature; a read gives back what the JSON form gives, and a value no column
    holds exactly (an unknown feature, an integer past 2^53, a category longer than the
    column, a bool, the online view's list of store features) comes back unchanged from
    `_extra`. Nothing lands in the shared JSON table."""
    log = PredictionLog(store)
    assert log.layout(view.name) is not None
    t0 = dt.datetime(2026, 3, 1, 12, 0, 0, 123456)
    tricky = 'O\'Brien \\ "quoted" ; DROP TABLE x; -- 🙂 ünïcode\n\t\x00'
    given = [
        {"age": 30.5, "occupation": tricky, "event_date": "2026-03-01"},
        {"age": None, "occupation": None},
        {"age": 3, "occupation": "x" * 500, "unknown": [1, {"a": None}]},
        {"age": 2**70, "occupation": "Doctor", "_from_store": ["age", "occupation"]},
        {"age": True, "occupation": 7, "annual_income": -1e-300},
        {"age": np.float64(0.25), "occupation": ""},
    ]
    rows = [{**_log_row(view.name, t0 + dt.timedelta(seconds=i)), "features": features,
             "role": "champion"} for i, features in enumerate(given)]  # fmt: skip
    rows[1]["features"] = json.dumps(rows[1]["features"])  # a replayed row: JSON text
    rows[1]["entity_id"] = tricky
    assert log.write(rows) == len(rows)
    assert log.write(rows) == 0  # a replay writes nothing twice
    assert log.count(view.name) == len(rows) and log.count("no_typed_table") == 0
    raw = log.read(view.name, t0, t0 + dt.timedelta(days=1), expand_features=False)
    assert "age" in raw.columns and "features" not in raw.columns  # the typed table's rows
    back = log.read(view.name, t0, t0 + dt.timedelta(days=1))
    assert list(back["request_id"]) == [r["request_id"] for r in rows]
    assert back.loc[1, "entity_id"] == tricky
    for i, features in enumerate(given):
        for key, value in features.items():
            if key == "_from_store":
                assert back.loc[i, "from_store"] == ",".join(value)
                continue
            got = back.loc[i, key]
            if value is None:
                assert got is None or pd.isna(got), (i, key, got)
            else:
                assert got == value, (i, key, got)
                assert isinstance(got, bool) == isinstance(value, bool), (i, key, got)
    assert back.loc[0, "from_store"] == "" and back.loc[0, "proba_Good"] == 0.7
    assert back.loc[1, "event_date"] is None or pd.isna(back.loc[1, "event_date"])
    assert list(back["feature_view"].unique()) == [view.name]


def test_a_request_id_is_stored_once_across_the_shared_and_the_typed_table(
    store_url: str, view: FeatureView
) -> None:
    """Rows a view logged to the shared JSON table before its typed table existed (or an
    older ctloop's worker logged there during an upgrade), replayed once the typed table
    exists, are skipped: a request id is unique across both tables. A damaged features
    text (a flipped byte in a spilled line) is kept as it came, never fails its batch."""
    old = FeatureStore(store_url)
    old.init([])
    t0 = dt.datetime(2026, 3, 1, 12)
    rows = [_log_row(view.name, t0 + dt.timedelta(seconds=i)) for i in range(6)]
    assert PredictionLog(old).write(rows[:4]) == 4  # no typed table yet: the shared one
    old.init([view])
    log = PredictionLog(old)
    assert log.layout(view.name) is not None
    assert log.write(rows) == 2  # the four already in the shared table are skipped
    assert log.count(view.name) == 6
    assert sorted(log.request_ids(view.name)) == sorted(r["request_id"] for r in rows)
    damaged = {**_log_row(view.name, t0), "features": '{"age": 3\x00, "occ'}
    assert log.write([damaged]) == 1
    back = log.read_requests(view.name, [damaged["request_id"]])
    assert len(back) == 1 and back.iloc[0][""] == damaged["features"]
    window = log.read(view.name, t0, t0 + dt.timedelta(minutes=1))
    assert len(window) == 7 and window["created_at"].is_monotonic_increasing
    old.dispose()


def test_a_large_log_batch_is_split_below_the_packet_budget(store: FeatureStore) -> None:
    """On MariaDB a batch over the statement budget goes in several statements of one
    transaction; every row lands once, whatever the split."""
    log = PredictionLog(store)
    log.json_document_bytes = 3_000  # a few rows per statement
    t0 = dt.datetime(2026, 3, 1, 12)
    rows = [{**_log_row("credit_score", t0), "features": {"age": i}} for i in range(101)]
    assert log.write(rows) == 101
    assert log.write(rows[::3]) == 0
    assert log.count() == 101
    window = log.read("credit_score", t0, t0 + dt.timedelta(seconds=1))
    assert sorted(window["age"]) == list(range(101))


def test_status_reports_days_and_coverage(store: FeatureStore, view: FeatureView) -> None:
    features, labels = _day(DAY, rows=20)
    store.ingest(view, features, labels.iloc[:5])
    store.ingest(view, _day(DAY + dt.timedelta(days=1), rows=10)[0])
    st = store.status(view)
    assert st.exists
    assert [(d.event_date, d.features, d.labels) for d in st.days] == [
        (DAY, 20, 5),
        (DAY + dt.timedelta(days=1), 10, 0),
    ]
    assert st.days[0].label_coverage == 0.25


def test_unreachable_database_gives_clear_error(view: FeatureView) -> None:
    store = FeatureStore("mysql+pymysql://root:secret@127.0.0.1:1/nowhere")
    with pytest.raises(StoreUnavailableError) as info:
        store.init([view])
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "secret" not in message


def test_missing_tables_named(sqlite_url: str, view: FeatureView) -> None:
    store = FeatureStore(sqlite_url)
    with pytest.raises(Exception, match="init-db"):
        store.training_set(view, DAY)
