"""The prediction log's day partitions on MariaDB (`ctloop.store.partitions`): a new log is
partitioned by day with a week ahead, retention drops expired days whole (only days no
other view shares, only before the cutoff, never past what the monitor still reads), a
long reader turns a drop into chunked deletes instead of stalling the writers, and a log
made by an older ctloop is converted on request without losing or doubling a row."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pandas as pd
import pytest
import sqlalchemy as sa

from ctloop.features.view import LOG_TABLE_SUFFIX, FeatureView
from ctloop.predlog import retention
from ctloop.predlog.store import PredictionLog
from ctloop.store import partitions, tables
from ctloop.store.engine import Database
from ctloop.store.features import FeatureStore
from tests.support.databases import mariadb_store_url as store_url  # noqa: F401  MariaDB only
from tests.support.paths import FEATURES_DIR
from tests.unit.test_log_retention import row

pytestmark = pytest.mark.mariadb

# the day the module's tests run (a run across UTC midnight would see two "todays")
TODAY = partitions.utc_today()
NOW = dt.datetime.combine(TODAY, dt.time(15, 30))


@pytest.fixture(autouse=True)
def _same_day() -> None:
    if partitions.utc_today() != TODAY:
        pytest.fail("UTC midnight passed since the module was imported: run it again")


def layout(db: Database, table: str = tables.PREDICTION_LOG) -> list[str]:
    """The partitions of a log table (the shared one, or a view's own)."""
    with db.connect() as conn:
        return [name for name, _ in partitions._partitions(conn, table)]


def in_partition(db: Database, day: dt.date | str) -> dict[str, int]:
    """Rows per view in one partition (a day, or p_start / p_future) of the shared log
    and of every view's own log table (a table without that partition has none there)."""
    name = day if isinstance(day, str) else partitions.day_name(day)
    found: dict[str, int] = {}
    with db.connect() as conn:
        for table in (tables.PREDICTION_LOG, *typed_tables(db)):
            if name not in {p for p, _ in partitions._partitions(conn, table)}:
                continue
            of_view = ("feature_view" if table == tables.PREDICTION_LOG
                       else f"'{table.removesuffix(LOG_TABLE_SUFFIX)}'")  # fmt: skip
            rows = conn.execute(sa.text(f"SELECT {of_view}, COUNT(*) FROM {table} "
                                        f"PARTITION ({name}) GROUP BY 1"))  # fmt: skip
            for view, n in rows:
                found[view] = found.get(view, 0) + int(n)
    return found


def log_with_days(store: FeatureStore, back: int) -> PredictionLog:
    """The store's log with a partition for each of the `back` days before today."""
    for table in (tables.PREDICTION_LOG, *typed_tables(store)):
        partitions.ensure_days(store, TODAY - dt.timedelta(days=back), TODAY, table)
    return PredictionLog(store)


def typed_tables(db: Database) -> list[str]:
    with db.connect() as conn:
        names = sa.inspect(conn).get_table_names()
    return [n for n in names if n.endswith(LOG_TABLE_SUFFIX)]


def logged_rows(log: PredictionLog, view: FeatureView) -> pd.DataFrame:
    """Every row the view has in the log."""
    return log.read(view.name, dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1),
                    expand_features=False)  # fmt: skip


def day_rows(view: str, day: dt.date, n: int, tag: str = "") -> list[dict]:
    start = dt.datetime.combine(day, dt.time())
    step = 86_399 // max(n - 1, 1)
    return [row(f"{view}{tag}-{day}-{i}", view, start + dt.timedelta(seconds=i * step))
            for i in range(n)]  # fmt: skip


def test_a_new_log_is_partitioned_by_day_with_a_week_ahead(store: FeatureStore) -> None:
    with store.connect() as conn:  # the bounds are the server's own TO_DAYS
        assert conn.execute(sa.text("SELECT TO_DAYS(:d)"), {"d": TODAY}).scalar() == (
            partitions.to_days(TODAY)
        )
    ahead = [TODAY + dt.timedelta(days=d) for d in range(-1, partitions.DAYS_AHEAD + 1)]
    assert layout(store) == ["p_start", *map(partitions.day_name, ahead), "p_future"]
    log = PredictionLog(store)
    later = TODAY + dt.timedelta(days=30)
    log.write(day_rows("v", TODAY, 3) + day_rows("v", later, 2))
    assert in_partition(store, TODAY) == {"v": 3}
    assert in_partition(store, "p_future") == {"v": 2}  # past the days made: kept, not refused
    made = partitions.ensure_days(store, TODAY, later)
    assert made == [TODAY + dt.timedelta(days=d) for d in range(partitions.DAYS_AHEAD + 1, 31)]
    assert in_partition(store, later) == {"v": 2} and in_partition(store, "p_future") == {}
    assert partitions.ensure_days(store, TODAY, later) == []  # idempotent
    # a replay of rows already logged (same request ids, same times) writes nothing
    assert log.write(day_rows("v", TODAY, 3) + day_rows("v", later, 2)) == 0
    assert log.count("v") == 5


def test_expired_days_are_dropped_whole_and_only_those(
    store: FeatureStore, view: FeatureView
) -> None:
    first = TODAY - dt.timedelta(days=40)
    log = log_with_days(store, 40)
    days = [TODAY - dt.timedelta(days=back) for back in range(40, -1, -1)]
    shared = set(days[21:25])  # days 19..16 back: the other view logged there too
    rows = [r for d in days for r in day_rows(view.name, d, 20)]
    rows += [r for d in sorted(shared) for r in day_rows("other_view", d, 3)]
    rows += day_rows(view.name, first - dt.timedelta(days=3), 7)  # before the first day: p_start
    log.write(rows)
    keep = retention.min_keep_days(view)
    before = dt.datetime.combine(TODAY - dt.timedelta(days=keep), dt.time())
    expired = [d for d in days if d < before.date()]
    seen: list[int] = []
    done = retention.prune(log, view, keep, NOW, chunk_rows=25, progress=seen.append)
    alone = [d for d in expired if d not in shared]
    assert done.before == before
    assert done.days_dropped == len(expired)  # its own table holds no other view's rows
    assert done.deleted == len(expired) * 20 + 7
    assert seen[-1] == done.deleted
    assert not set(layout(store, view.log_table)) & set(map(partitions.day_name, expired))
    names = set(layout(store))  # the shared log: days without the other view dropped too
    assert not names & set(map(partitions.day_name, alone))
    for day in shared:  # kept as partitions: the other view's rows are still there
        assert partitions.day_name(day) in names
        assert in_partition(store, day) == {"other_view": 3}
    assert in_partition(store, "p_start") == {}
    left = logged_rows(log, view)
    assert left["created_at"].min() == before  # every kept day whole, from its first second
    assert len(left) == (len(days) - len(expired)) * 20
    assert log.count("other_view") == 3 * len(shared)
    assert retention.prune(log, view, keep, NOW).deleted == 0


def test_a_day_the_monitor_has_not_read_is_not_dropped(
    store: FeatureStore, view: FeatureView
) -> None:
    log = log_with_days(store, 30)
    log.write([r for back in range(31) for r in
               day_rows(view.name, TODAY - dt.timedelta(days=back), 10)])  # fmt: skip
    keep = retention.min_keep_days(view)
    # the view's next check starts reading mid-day, 25 days ago (a window too small to judge)
    keep_from = dt.datetime.combine(TODAY - dt.timedelta(days=25), dt.time(12))
    done = retention.prune(log, view, keep, NOW, keep_from=keep_from)
    assert done.before == keep_from
    assert done.days_dropped == 5  # 30..26 days back; the 25th only up to noon, by chunks
    assert partitions.day_name(keep_from.date()) in layout(store, view.log_table)
    left = logged_rows(log, view)
    assert left["created_at"].min() >= keep_from
    assert len(left) == 25 * 10 + 5  # 25 whole days, and the afternoon of the 26th


def test_a_long_reader_turns_the_drop_into_chunked_deletes(
    store: FeatureStore, view: FeatureView, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = log_with_days(store, 20)
    old = TODAY - dt.timedelta(days=20)
    log.write(day_rows(view.name, old, 50) + day_rows(view.name, TODAY, 5))
    monkeypatch.setattr(partitions, "METADATA_WAIT_SECONDS", 1)
    reader = sa.create_engine(store.engine.url)
    try:
        with reader.connect() as conn:  # an open transaction that read the log holds its
            conn.execute(sa.text(f"SELECT COUNT(*) FROM {view.log_table}")).scalar()  # MDL
            done = retention.prune(log, view, retention.min_keep_days(view), NOW)
            # the drop gave up, so no ALTER is left queued in front of the writers
            log.write(day_rows(view.name, TODAY, 3, tag="during"))
    finally:
        reader.dispose()
    assert (done.deleted, done.days_dropped) == (50, 0)
    assert partitions.day_name(old) in layout(store, view.log_table)
    assert in_partition(store, old) == {}
    assert log.count(view.name) == 8


def test_another_process_holding_the_partition_lock_means_chunks(
    store: FeatureStore, view: FeatureView, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = log_with_days(store, 20)
    old = TODAY - dt.timedelta(days=20)
    log.write(day_rows(view.name, old, 30))
    monkeypatch.setattr(partitions, "_LOCK_SECONDS", 1)
    other = sa.create_engine(store.engine.url)
    try:
        with other.connect() as conn:  # another prune (or a starting service) holds it
            name = partitions._LOCK_NAME
            assert conn.execute(sa.text(f"SELECT GET_LOCK({name}, 1)")).scalar() == 1
            done = retention.prune(log, view, retention.min_keep_days(view), NOW)
            conn.execute(sa.text(f"SELECT RELEASE_LOCK({name})"))
    finally:
        other.dispose()
    assert (done.deleted, done.days_dropped) == (30, 0)  # by chunks, not refused
    assert log.count(view.name) == 0
    # and the lock left nothing behind: the next prune drops again
    log.write(day_rows(view.name, old + dt.timedelta(days=1), 4))
    again = retention.prune(log, view, retention.min_keep_days(view), NOW)
    assert again.deleted == 4 and again.days_dropped >= 1


def test_days_below_are_made_after_drops(store: FeatureStore, view: FeatureView) -> None:
    """p_start keeps its bound when the days above it are dropped: days made below later
    reach up to that bound, and rows already in p_start move to their day."""
    log = log_with_days(store, 25)
    log.write(day_rows(view.name, TODAY - dt.timedelta(days=40), 6))  # in p_start
    log.write(day_rows(view.name, TODAY - dt.timedelta(days=24), 2))
    assert retention.prune(log, view, 20, NOW).days_dropped == 1  # the one that had rows
    gone = [partitions.day_name(TODAY - dt.timedelta(days=d)) for d in range(25, 20, -1)]
    assert not set(layout(store, view.log_table)) & set(gone)  # the empty ones went too
    made = partitions.ensure_days(store, TODAY - dt.timedelta(days=45), TODAY, view.log_table)
    assert made == [TODAY - dt.timedelta(days=d) for d in range(45, 25, -1)]
    assert in_partition(store, TODAY - dt.timedelta(days=40)) == {}  # pruned above
    log.write(day_rows(view.name, TODAY - dt.timedelta(days=40), 6))
    assert in_partition(store, TODAY - dt.timedelta(days=40)) == {view.name: 6}


def test_an_older_log_is_converted_on_request(mariadb_url: str, view: FeatureView) -> None:
    legacy = Database(mariadb_url)
    legacy.create_database_if_missing()
    with legacy.begin() as conn:  # the table as ctloop made it before day partitions
        tables.prediction_log_table(sa.MetaData()).create(conn)
    log = PredictionLog(legacy)
    old = [r for back in (40, 3, 0) for r in
           day_rows(view.name, TODAY - dt.timedelta(days=back), 4)]  # fmt: skip
    log.write(old)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTLOOP_")}
    env.update(FEATURE_STORE_URL=mariadb_url, CTLOOP_FEATURES_DIR=str(FEATURES_DIR))

    def init_db(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ctloop.cli", "init-db", view.name, *args],
                              env=env, capture_output=True, text=True, check=False,
                              timeout=120)  # fmt: skip

    hint = init_db()
    assert hint.returncode == 0 and "--partition-log" in hint.stdout, hint.stderr
    with legacy.connect() as conn:
        assert not partitions.is_partitioned(conn)
    with legacy.begin() as conn:  # a conversion an older ctloop left halfway: keys changed
        conn.execute(sa.text("ALTER TABLE prediction_log DROP PRIMARY KEY, "
                             "ADD PRIMARY KEY (id, created_at)"))  # fmt: skip
    done = init_db("--partition-log")
    assert done.returncode == 0 and "day partitions made" in done.stdout, done.stderr
    assert layout(legacy)[1] == partitions.day_name(TODAY - dt.timedelta(days=40))
    assert in_partition(legacy, TODAY - dt.timedelta(days=3)) == {view.name: 4}
    assert log.count(view.name) == 12
    assert log.write(old) == 0  # replays still meet their first copy
    again = init_db("--partition-log")
    assert again.returncode == 0 and "already partitioned" in again.stdout
    legacy.dispose()
