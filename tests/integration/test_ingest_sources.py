"""Ingestion from real sources through Airflow (`dag.test()`), on real MariaDB and
PostgreSQL: a drop folder over three days, SQL sources on both servers read by interval
and watermark, and a source that is down.

Three copies of the credit-score view, each with its own `sources:`, live in a features
folder of the test's own; the Airflow child parses this checkout's DAG files against it,
with the feature store and the SQL sources as Airflow connections (`AIRFLOW_CONN_*`), so
every URL comes through the providers' hooks as it does in production.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from ctloop.features.view import FeatureView, load_view_file
from ctloop.ingest import ledger
from ctloop.ingest.synth import StreamConfig, generate_day
from ctloop.orchestration.connection import asset_uri
from ctloop.store.features import FeatureStore
from tests.support.airflow import AirflowProcess, airflow_env
from tests.support.databases import POSTGRES_SERVER, mariadb_database, postgres_database
from tests.support.paths import FEATURES_DIR

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

DAY1 = dt.date(2026, 3, 1)
DAYS = [DAY1 + dt.timedelta(days=i) for i in range(3)]
STREAM = StreamConfig(seed=5, rows_per_day=200, label_delay_days=2)


@dataclasses.dataclass
class IngestWorld:
    """The feature store, the source databases, the drop folders and Airflow."""

    tmp: Path
    store: FeatureStore
    views: dict[str, FeatureView]
    drop: Path
    labels: Path
    maria_src: str
    pg_src: str
    down_src: str
    airflow: AirflowProcess


def write_view(folder: Path, name: str, sources: list[dict], partial: bool) -> None:
    """A copy of the credit-score view named `name` with these sources."""
    raw = yaml.safe_load((FEATURES_DIR / "credit_score.yaml").read_text())
    raw.update(name=name, sources=sources, partial_loads=partial)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def airflow_uri(url: str) -> str:
    """An Airflow connection URI as users write it (no SQLAlchemy driver suffix)."""
    parsed = make_url(url)
    scheme = "mysql" if parsed.get_backend_name() in ("mysql", "mariadb") else "postgresql"
    return parsed.set(drivername=scheme).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestWorld]:
    tmp = tmp_path_factory.mktemp("ingest")
    features, drop, labels = tmp / "features", tmp / "drop", tmp / "labels"
    for folder in (features, drop, labels):
        folder.mkdir()
    write_view(features, "credit_files", [
        {"kind": "files", "name": "drop", "path": str(drop)},
        {"kind": "files", "name": "late_labels", "path": str(labels), "contents": "labels"},
    ], partial=True)  # fmt: skip
    write_view(features, "credit_sql", [
        {"kind": "sql", "name": "maria", "conn_id": "src_maria", "table": "applications",
         "incremental_column": "event_date"},
        {"kind": "sql", "name": "pg", "conn_id": "src_pg",
         "query": "SELECT * FROM scored WHERE customer_id LIKE 'PG%'",
         "incremental_column": "updated_at"},
    ], partial=False)  # fmt: skip
    write_view(features, "credit_down", [
        {"kind": "sql", "name": "late_db", "conn_id": "src_down", "table": "applications",
         "incremental_column": "event_date"},
    ], partial=False)  # fmt: skip
    views = {p.stem: load_view_file(p) for p in features.glob("*.yaml")}
    with (
        mariadb_database("ctloop_ingest") as url,
        mariadb_database("ctloop_src") as maria_src,
        postgres_database("ctloop_src") as pg_src,
    ):
        server = sa.create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with server.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{make_url(pg_src).database}"'))
        server.dispose()
        down_src = f"{url}_later"  # a database that does not exist yet: the source is down
        env = airflow_env(
            tmp,
            AIRFLOW_CONN_FEATURE_STORE=airflow_uri(url),
            AIRFLOW_CONN_SRC_MARIA=airflow_uri(maria_src),
            AIRFLOW_CONN_SRC_PG=airflow_uri(pg_src),
            AIRFLOW_CONN_SRC_DOWN=airflow_uri(down_src),
            CTLOOP_FEATURES_DIR=str(features),
            # the down source's retry: enough to bring it up, not the default minute idle
            CTLOOP_TASK_RETRY_DELAY_SECONDS="15",
        )
        airflow = AirflowProcess(tmp, env)
        store = FeatureStore(url)
        store.init(list(views.values()))
        try:
            yield IngestWorld(tmp, store, views, drop, labels, maria_src, pg_src, down_src,
                              airflow)  # fmt: skip
        finally:
            airflow.close()
            store.dispose()
            with sa.create_engine(url).begin() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{make_url(down_src).database}`"))


def ingest(world: IngestWorld, view: str, day: dt.date, **extra: Any) -> dict[str, Any]:
    return world.airflow.trigger(f"ingest_{view}", {"day": day.isoformat()}, **extra)


def states(outcome: dict) -> dict[str, str]:
    return {task: info["state"] for task, info in outcome["tasks"].items()}


def counts(world: IngestWorld, view: str) -> dict[dt.date, tuple[int, int]]:
    status = world.store.status(world.views[view])
    return {d.event_date: (d.features, d.labels) for d in status.days}


def stored_labels(world: IngestWorld, view: str) -> pd.DataFrame:
    table = world.store.view_tables(world.views[view])[1]
    with world.store.connect() as conn:
        return pd.read_sql(sa.select(table), conn)


# ------------------------------------------------------------------ the drop folder


def test_files_dropped_over_three_days_are_each_taken_once(world: IngestWorld) -> None:
    view = "credit_files"
    day_features = {day: generate_day(day, STREAM)[0] for day in DAYS}
    _, labels_of_day1 = generate_day(DAYS[0], STREAM)
    outcomes = []

    # day 1: a CSV of features
    day_features[DAYS[0]].to_csv(world.drop / "2026-03-01.csv", index=False)
    outcomes.append(ingest(world, view, DAYS[0]))
    # day 2: a Parquet file of features, and day 1's labels, late, in the labels folder
    day_features[DAYS[1]].to_parquet(world.drop / "2026-03-02.parquet")
    labels_of_day1.to_csv(world.labels / "labels-2026-03-01.csv", index=False)
    outcomes.append(ingest(world, view, DAYS[1]))
    # day 3: 1000 rows with 3 bad ones (partial loads on), and a file that is not a table
    big = generate_day(DAYS[2], StreamConfig(seed=9, rows_per_day=1000))[0].astype(object)
    big.loc[10, "age"] = 250  # row 11: above the maximum
    big.loc[500, "num_of_loan"] = "many"  # row 501: not a number
    big.loc[999, "interest_rate"] = -3  # row 1000: below the minimum
    big.to_csv(world.drop / "2026-03-03.csv", index=False)
    (world.drop / "2026-03-03-broken.parquet").write_bytes(b"PAR1 this is not parquet")
    outcomes.append(ingest(world, view, DAYS[2]))

    for outcome in outcomes:
        assert outcome["state"] == "success", outcome["log"][-4000:]
        assert states(outcome) == {"land": "success", "update_asset": "success"}
        assert outcome["asset_events"] == [
            {"uri": asset_uri(view), "extra": outcome["xcom"]["update_asset"]}
        ]
    assert [o["xcom"]["land"]["taken"] for o in outcomes] == [200, 200 + 200, 997]

    store_counts = counts(world, view)
    assert store_counts[DAYS[0]] == (200, 200)  # the late labels landed on day 1's rows
    assert store_counts[DAYS[1]] == (200, 0)
    assert store_counts[DAYS[2]] == (997, 0)
    landed = stored_labels(world, view).set_index("customer_id")["credit_score"]
    expected = labels_of_day1.set_index("customer_id")["credit_score"]
    assert landed.sort_index().to_dict() == expected.sort_index().to_dict()
    assert outcomes[1]["xcom"]["land"]["late_labels"] == 200  # arrived after their day

    # the 3 bad rows are reported by row and column; the broken file is rejected whole
    rejects = ledger.rejects_of(world.store, view, "2026-03-03.csv")
    assert [(r["row_number"], r["column_name"]) for r in rejects] == [
        (11, "age"), (501, "num_of_loan"), (1000, "interest_rate")
    ]  # fmt: skip
    files = {f["file_name"]: f for f in ledger.ledger_of(world.store, view)}
    assert files["2026-03-03.csv"]["outcome"] == "partial"
    assert (files["2026-03-03.csv"]["rows_taken"], files["2026-03-03.csv"]["rows_rejected"]) == (
        997, 3
    )  # fmt: skip
    broken = files["2026-03-03-broken.parquet"]
    assert broken["outcome"] == "rejected" and "not a readable Parquet file" in broken["reason"]
    assert (world.drop / "rejected" / "2026-03-03-broken.parquet").exists()
    reason = world.drop / "rejected" / "2026-03-03-broken.parquet.reason.txt"
    assert "not a readable Parquet file" in reason.read_text()
    assert sorted(p.name for p in (world.drop / "done").iterdir()) == [
        "2026-03-01.csv", "2026-03-02.parquet", "2026-03-03.csv"
    ]  # fmt: skip
    assert [p.name for p in world.drop.glob("*.*")] == []  # nothing left waiting
    summary = outcomes[2]["log"]
    assert "taken 997, rejected 3" in summary  # the run's summary in the task log

    # a re-run takes nothing twice: same day again, and day 1's file delivered again
    before = counts(world, view)
    shutil.copy(world.drop / "done" / "2026-03-01.csv", world.drop / "resent.csv")
    rerun = ingest(world, view, DAYS[2])
    assert rerun["state"] == "success", rerun["log"][-4000:]
    assert states(rerun) == {"land": "success", "update_asset": "skipped"}
    assert rerun["xcom"]["land"]["taken"] == 0
    assert rerun["xcom"]["land"]["duplicates"] == 200
    assert rerun["asset_events"] == []  # an empty interval does not trigger CT
    assert counts(world, view) == before
    assert ledger.ledger_of(world.store, view)[-1]["outcome"] == "duplicate"
    runs = ledger.last_runs(world.store, view)
    assert runs[0]["run_id"] == rerun["run_id"] and runs[0]["taken"] == 0


# ------------------------------------------------------------------ SQL sources


def source_rows(day: dt.date, prefix: str | None = None) -> pd.DataFrame:
    features, _ = generate_day(day, STREAM)
    if prefix:
        features["customer_id"] = prefix + features["customer_id"]
    return features


def test_sql_sources_grow_and_are_read_by_interval_and_watermark(world: IngestWorld) -> None:
    view = "credit_sql"
    maria = sa.create_engine(world.maria_src)
    pg = sa.create_engine(world.pg_src)
    try:
        first = source_rows(DAYS[0])
        first.to_sql("applications", maria, index=False)
        scored = source_rows(DAYS[0], "PG")
        scored["updated_at"] = dt.datetime.combine(DAYS[0], dt.time(9, 30))
        scored.to_sql("scored", pg, index=False)

        day1 = ingest(world, view, DAYS[0])
        assert day1["state"] == "success", day1["log"][-4000:]
        assert day1["xcom"]["land"]["taken"] == 400
        assert counts(world, view) == {DAYS[0]: (400, 0)}

        # the tables grow: day 2's rows arrive in both sources
        source_rows(DAYS[1]).to_sql("applications", maria, index=False, if_exists="append")
        later = source_rows(DAYS[1], "PG")
        later["updated_at"] = dt.datetime.combine(DAYS[1], dt.time(18, 0))
        later.to_sql("scored", pg, index=False, if_exists="append")
        day2 = ingest(world, view, DAYS[1])
        assert day2["state"] == "success", day2["log"][-4000:]
        land = day2["xcom"]["land"]
        assert [(s["source"], s["taken"]) for s in land["sources"]] == [("maria", 200), ("pg", 200)]
        assert counts(world, view) == {DAYS[0]: (400, 0), DAYS[1]: (400, 0)}
        pg_mark = ledger.watermark(world.store, view, "pg")
        maria_mark = ledger.watermark(world.store, view, "maria")
        assert pg_mark == dt.datetime.combine(DAYS[1], dt.time(18, 0))
        assert maria_mark == dt.datetime.combine(DAYS[1], dt.time.min)

        # a re-run of day 1 reads the same rows (bounded by the interval, not the
        # watermark) and leaves the watermarks where they are
        again = ingest(world, view, DAYS[0])
        assert again["state"] == "success", again["log"][-4000:]
        assert again["xcom"]["land"]["taken"] == 400
        assert again["xcom"]["land"]["duplicates"] == 400
        assert ledger.watermark(world.store, view, "pg") == pg_mark
        assert counts(world, view) == {DAYS[0]: (400, 0), DAYS[1]: (400, 0)}
    finally:
        maria.dispose()
        pg.dispose()


def test_a_source_that_is_down_fails_the_task_which_retries(world: IngestWorld) -> None:
    """The source's database does not exist when the run starts: `land` fails and waits for
    Airflow's retry (`CTLOOP_TASK_RETRY_DELAY_SECONDS` later, 15 s here) with nothing
    written; the database comes up with its rows meanwhile, and the retry lands them all."""
    view = "credit_down"
    outcome: dict[str, Any] = {}

    def trigger() -> None:
        try:
            outcome["run"] = ingest(world, view, DAYS[0], timeout=400)
        except BaseException as exc:  # pytest.fail() in the thread: hand it over
            outcome["error"] = exc

    started = world.airflow.log_path.stat().st_size
    runner = threading.Thread(target=trigger, daemon=True)
    runner.start()
    deadline = time.monotonic() + 240
    while "new_state=up_for_retry" not in world.airflow.output(started):
        assert runner.is_alive() and time.monotonic() < deadline, world.airflow.output(started)
        time.sleep(0.5)
    # down: nothing half-written, no watermark, no run recorded as landed
    assert counts(world, view) == {}
    assert ledger.watermark(world.store, view, "late_db") is None
    assert all(r["taken"] == 0 for r in ledger.last_runs(world.store, view))
    with sa.create_engine(world.maria_src).begin() as conn:  # the server of the sources
        name = make_url(world.down_src).database
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    up = sa.create_engine(world.down_src)
    source_rows(DAYS[0]).to_sql("applications", up, index=False)
    up.dispose()
    runner.join(400)
    assert not runner.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    run = outcome["run"]
    assert run["state"] == "success", run["log"][-4000:]
    assert run["tasks"]["land"]["try_number"] == 2
    assert "is unreachable" in run["log"] and "AirflowFailException" not in run["log"]
    assert counts(world, view) == {DAYS[0]: (200, 0)}
