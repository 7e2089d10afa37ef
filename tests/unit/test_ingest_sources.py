"""Ingestion sources without a server: the view's `sources:` declaration, the bounded SQL
read, and a drop folder on the embedded SQLite store (refused file, fix, replay).

The same paths on MariaDB and PostgreSQL, through Airflow, are in
`tests/integration/test_ingest_sources.py`.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
import yaml
from sqlalchemy.dialects import mysql

from ctloop.errors import FeatureViewError
from ctloop.features.spec import SqlSource
from ctloop.features.view import FeatureView, load_view_file
from ctloop.ingest import ledger
from ctloop.ingest.sources import Interval, ingest_view
from ctloop.ingest.sqlsource import statement
from ctloop.ingest.synth import StreamConfig, generate_day
from ctloop.store.features import FeatureStore
from tests.support.paths import FEATURES_DIR


def view_with(tmp: Path, **changes: object) -> FeatureView:
    raw = yaml.safe_load((FEATURES_DIR / "credit_score.yaml").read_text())
    raw.update(changes)
    path = tmp / "credit_score.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_view_file(path)


@pytest.mark.parametrize(
    ("sources", "problem"),
    [
        ([{"kind": "sql", "name": "crm", "conn_id": "crm", "incremental_column": "d"}],
         "sources[0].sql: a sql source takes exactly one of 'table' or 'query'"),
        ([{"kind": "ftp", "name": "x"}], "sources[0]: Input tag 'ftp' found using 'kind'"),
        ([{"kind": "files", "name": "a", "path": "x"}, {"kind": "files", "name": "a",
                                                         "path": "y"}],
         "sources[1]: duplicate source name 'a'"),
        ([{"kind": "sql", "name": "crm", "conn_id": "crm", "table": "t; DROP TABLE x",
           "incremental_column": "d"}], "sources[0].sql.table: String should match pattern"),
        ([{"kind": "files", "name": "a", "path": "x", "contents": "both"}],
         "sources[0].files.contents: Input should be 'features' or 'labels'"),
    ],
)  # fmt: skip
def test_a_wrong_source_is_refused_naming_the_field(
    tmp_path: Path, sources: list, problem: str
) -> None:
    with pytest.raises(FeatureViewError) as info:
        view_with(tmp_path, sources=sources)
    assert problem in str(info.value)


def test_the_sql_read_is_bounded_by_the_interval_on_both_ends() -> None:
    source = SqlSource(kind="sql", name="crm", conn_id="crm", table="crm.applications",
                       incremental_column="updated_at")  # fmt: skip
    since, until = dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 2)
    sql = str(statement(source, since, until).compile(dialect=mysql.dialect()))
    assert "FROM crm.applications" in sql
    assert "updated_at < %s" in sql and "updated_at >= %s" in sql
    query = SqlSource(kind="sql", name="q", conn_id="crm", query="SELECT * FROM t",
                      incremental_column="event_date")  # fmt: skip
    sql = str(statement(query, since, until).compile(dialect=mysql.dialect()))
    assert "FROM (SELECT * FROM t) AS src" in sql and "event_date >= %s" in sql


def test_a_refused_file_is_kept_reported_and_taken_once_fixed(
    tmp_path: Path, store_url: str
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    view = view_with(tmp_path, sources=[{"kind": "files", "name": "drop", "path": "drop"}])
    store = FeatureStore(store_url)
    features, _ = generate_day(dt.date(2026, 3, 1), StreamConfig(seed=1, rows_per_day=50))
    bad = features.astype(object)
    bad.loc[4, "age"] = "forty"
    bad.to_csv(drop / "day.csv", index=False)
    interval = Interval(dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 2))

    def run(run_id: str) -> dict:
        return ingest_view(view, store, interval, run_id=run_id, data_dir=tmp_path,
                           url_of=lambda _: "").as_dict()  # fmt: skip

    first = run("r1")
    assert (first["taken"], first["rejected"]) == (0, 50)  # partial loads off: refused whole
    assert store.status(view).feature_rows == 0
    [reject] = ledger.rejects_of(store, view.name)
    assert (reject["row_number"], reject["column_name"]) == (5, "age")
    assert "'forty' is not a number" in reject["reason"]
    assert (drop / "rejected" / "day.csv").is_file()
    assert "partial_loads is off" in (drop / "rejected" / "day.csv.reason.txt").read_text()

    # fixed and dropped again: taken (a rejection never blocks a replay)
    features.to_csv(drop / "day.csv", index=False)
    second = run("r2")
    assert second["taken"] == 50 and store.status(view).feature_rows == 50
    # the same bytes again: a duplicate, nothing landed twice
    shutil.copy(drop / "done" / "day.csv", drop / "again.csv")
    third = run("r3")
    assert (third["taken"], third["duplicates"]) == (0, 50)
    outcomes = [(f["file_name"], f["outcome"]) for f in ledger.ledger_of(store, view.name)]
    assert outcomes == [("day.csv", "rejected"), ("day.csv", "taken"), ("again.csv", "duplicate")]
    assert [r["run_id"] for r in ledger.last_runs(store, view.name)] == ["r3", "r2", "r1"]
    store.dispose()


def test_the_synthetic_stream_lands_the_days_of_the_interval() -> None:
    day = dt.datetime(2026, 3, 1)
    daily = Interval(day + dt.timedelta(hours=1), day + dt.timedelta(days=1, hours=1))
    assert daily.days() == [dt.date(2026, 3, 1)]  # a daily schedule's 01:00-01:00 interval
    three = Interval(day, day + dt.timedelta(days=3))
    assert three.days() == [dt.date(2026, 3, d) for d in (1, 2, 3)]


def test_the_ingest_dag_takes_its_interval_from_params_or_the_run() -> None:
    from ctloop.errors import CtloopError
    from ctloop.orchestration.ingest import interval_of

    start = dt.datetime(2026, 3, 1, 1, tzinfo=dt.UTC)
    scheduled = {"params": {}, "data_interval_start": start,
                 "data_interval_end": start + dt.timedelta(days=1)}  # fmt: skip
    assert interval_of(scheduled) == Interval(
        dt.datetime(2026, 3, 1, 1), dt.datetime(2026, 3, 2, 1)
    )
    assert interval_of({"params": {"day": "2026-02-10"}}) == Interval(
        dt.datetime(2026, 2, 10), dt.datetime(2026, 2, 11)
    )
    window = {"since": "2026-02-10T00:00:00+02:00", "until": "2026-02-12T00:00:00Z"}
    assert interval_of({"params": window}) == Interval(
        dt.datetime(2026, 2, 9, 22), dt.datetime(2026, 2, 12)
    )
    with pytest.raises(CtloopError, match="since and until go together"):
        interval_of({"params": {"since": "2026-02-10T00:00:00Z", "until": None}})


def test_labels_sent_again_without_arrival_times_keep_their_first_arrival(
    tmp_path: Path, store_url: str
) -> None:
    """A labels file (or SQL interval) without `arrived_at` read twice must not move the
    arrival of labels that did not change: point-in-time training sets for past dates
    would change under the user's feet."""
    import sqlalchemy as sa

    drop = tmp_path / "labels"
    drop.mkdir()
    view = view_with(tmp_path, sources=[{"kind": "files", "name": "labels", "path": "labels",
                                         "contents": "labels"}])  # fmt: skip
    store = FeatureStore(store_url)
    store.init([view])
    features, labels = generate_day(dt.date(2026, 3, 1), StreamConfig(seed=1, rows_per_day=40))
    store.ingest(view, features=features)
    sent = labels[[view.entity, view.event_date, view.label.name]].head(20)
    sent.to_csv(drop / "first.csv", index=False)
    interval = Interval(dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 2))

    def arrivals() -> dict[str, object]:
        table = store.view_tables(view)[1]
        with store.begin() as conn:
            rows = conn.execute(sa.select(table.c[view.entity], table.c.arrived_at)).all()
        return {str(k): v for k, v in rows}

    ingest_view(view, store, interval, run_id="r1", data_dir=tmp_path, url_of=lambda _: "")
    first = arrivals()
    assert len(first) == 20
    changed = sent.copy()
    classes = view.label.class_list
    old = changed.loc[0, view.label.name]
    changed.loc[0, view.label.name] = next(c for c in classes if c != old)  # a correction
    changed.to_csv(drop / "second.csv", index=False)
    ingest_view(view, store, interval, run_id="r2", data_dir=tmp_path, url_of=lambda _: "")
    second = arrivals()
    corrected = str(changed.loc[0, view.entity])
    assert {k: v for k, v in second.items() if k != corrected} == {
        k: v for k, v in first.items() if k != corrected
    }
    assert second[corrected] >= first[corrected]
    store.dispose()
