"""Issue 18, the data half, on MariaDB: keys compare as bytes, one CT run per view at a
time, tables created by racing workers, and the import's edge cases.

Each test reproduces a failure found by attacking the store with real processes; each
failed on the code before its fix.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from ctloop.errors import CtloopError, DataValidationError
from ctloop.features.view import FeatureView
from ctloop.ingest.files import import_csv
from ctloop.ingest.synth import StreamConfig, generate_day
from ctloop.registry import Registry, VersionInfo
from ctloop.settings import Settings
from ctloop.store.features import FeatureStore
from ctloop.training.pipeline import ModelGateError, Run, promote
from tests.support.paths import ROOT

pytestmark = pytest.mark.mariadb

DAY = dt.date(2026, 4, 1)


@pytest.fixture
def store(mariadb_url: str, view: FeatureView) -> Iterator[FeatureStore]:
    """The shipped view's tables on a fresh MariaDB database."""
    fs = FeatureStore(mariadb_url)
    fs.init([view])
    yield fs
    fs.dispose()


def _day_file(tmp_path: Path, view: FeatureView, keys: list[str]) -> Path:
    """A CSV of one day with these entity keys, features and labels valid."""
    features, labels = generate_day(DAY, StreamConfig(rows_per_day=len(keys)))
    frame = features.copy()
    frame[view.label.name] = labels[view.label.name]
    frame["arrived_at"] = labels["arrived_at"].dt.strftime("%Y-%m-%d %H:%M:%S")
    frame[view.entity] = keys
    path = tmp_path / "day.csv"
    frame.to_csv(path, index=False)
    return path


# ------------------------------------------------------------ item 5: keys compare as bytes

KEYS = ["Case1", "case1", "Jose", "José"]


def _stored_keys(store: FeatureStore, view: FeatureView) -> list[str]:
    ftable, ltable = store.view_tables(view)
    with store.connect() as conn:
        features = conn.execute(sa.select(ftable.c[view.entity])).scalars().all()
        labels = conn.execute(sa.select(ltable.c[view.entity])).scalars().all()
    assert sorted(features) == sorted(labels)
    return sorted(features)


def test_keys_differing_in_case_or_accent_are_distinct_rows(
    tmp_path: Path, store: FeatureStore, view: FeatureView
) -> None:
    result = import_csv(store, view, _day_file(tmp_path, view, KEYS))
    assert (result.features_written, result.labels_written) == (4, 4)
    assert _stored_keys(store, view) == sorted(KEYS)


def test_init_db_converts_tables_made_case_insensitive(
    tmp_path: Path, store: FeatureStore, view: FeatureView
) -> None:
    """Tables created before the fix: refused until `init-db` converts them, then right."""
    with store.begin() as conn:
        for table in (view.features_table, view.labels_table):
            conn.execute(
                sa.text(
                    f"ALTER TABLE `{table}` CONVERT TO CHARACTER SET utf8mb4 "
                    "COLLATE utf8mb4_general_ci"
                )
            )
    with pytest.raises(CtloopError, match=r"case- and accent-insensitively.*ctloop init-db"):
        import_csv(store, view, _day_file(tmp_path, view, KEYS))
    assert sorted(store.init([view])) == sorted([view.features_table, view.labels_table])
    assert store.init([view]) == []  # nothing left to convert
    import_csv(store, view, _day_file(tmp_path, view, KEYS))
    assert _stored_keys(store, view) == sorted(KEYS)


# ------------------------------------------------------------ item 7: one CT run per view


def _ctloop(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ctloop.cli", *args], env=env, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def _start_together(
    count: int, args: list[str], env: dict[str, str], cwd: Path, url: str
) -> list[subprocess.Popen[str]]:
    """Start `count` CLI runs that reach the CT lease at the same moment.

    Three processes started at once can still reach the lease tens of seconds apart on a
    loaded 2-core machine (each imports MLflow and CatBoost first), and a late one then
    runs after the winner as a second, sequential run instead of racing it. So the test
    holds a write lock on the lease table until every run waits on it, then lets go.
    """
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    waiting_sql = sa.text(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
        "AND ID <> CONNECTION_ID() AND STATE LIKE 'Waiting for table%'"
    )
    with engine.connect() as conn:
        conn.execute(sa.text("LOCK TABLES ct_run_lock WRITE"))
        try:
            procs = [_ctloop(args, env, cwd) for _ in range(count)]
            deadline = time.monotonic() + 300
            while conn.execute(waiting_sql).scalar_one() < count:
                if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                    break  # one ended early or never arrived: the assertions say which
                time.sleep(0.2)
        finally:
            conn.execute(sa.text("UNLOCK TABLES"))
    engine.dispose()
    return procs


def _race_report(versions: list[VersionInfo], results: list[tuple[int, str, str]]) -> str:
    """What a failed race shows in full (a string: pytest cuts long reprs to one line):
    each version's lineage tags, then each racer's exit code and its stderr's tail."""
    lines = ["versions:"]
    for v in versions:
        keys = ("as_of", "data_fingerprint", "trigger", "gate.model.champion_version")
        lines.append(f"  v{v.version} run {v.run_id}: " + ", ".join(
            f"{k}={v.tags.get(k)}" for k in keys))  # fmt: skip
    for i, (code, _, err) in enumerate(results):
        lines.append(f"racer {i} exited {code}:")
        lines.extend(f"  {line}" for line in err.splitlines()[-25:])
    return "\n".join(lines)


def test_concurrent_train_runs_make_one_version_and_keep_previous(
    tmp_path: Path, mariadb_url: str, clean_env: dict[str, str], view: FeatureView
) -> None:
    """Three `ctloop train` of one view at once: at most one new version, and `previous`
    is the champion before them (not a twin trained on the same data)."""
    env = {**clean_env, "FEATURE_STORE_URL": mariadb_url,
           "CTLOOP_FEATURES_DIR": str(ROOT / "features")}  # fmt: skip
    for args in (["init-db"], ["generate", "--days", "40", "--rows-per-day", "200",
                               "--start", "2026-01-01", "--labels-until", "2026-03-01"],
                 ["train", "--as-of", "2026-01-31"]):  # fmt: skip
        code, _, err = _finish(_ctloop(args, env, tmp_path))
        assert code == 0, err
    # the racers' store, named: MLflow exports MLFLOW_TRACKING_URI when any earlier test
    # activates a registry, and Settings() would read that one (another test's versions)
    data = tmp_path / "data"
    settings = Settings(data_dir=data, feature_store_url=mariadb_url,
                        mlflow_tracking_uri=f"sqlite:///{data / 'mlflow.db'}")  # fmt: skip
    registry = Registry.from_settings(settings)
    first = registry.champion(view.name)
    assert first is not None

    racers = _start_together(3, ["train", "--as-of", "2026-02-10"], env, tmp_path, mariadb_url)
    results = [_finish(proc) for proc in racers]
    winners = [json.loads(out) for code, out, _ in results if code == 0]
    refused = [err for code, _, err in results if code != 0]
    assert winners, [err for _, _, err in results]
    for err in refused:
        assert "a CT run for view credit_score is in progress since" in err, err
    versions = registry.versions(view.name)
    # the first champion and at most one new version (the racers' logs say who ran when)
    assert len(versions) <= 2, _race_report(versions, results)
    champion, previous = registry.champion(view.name), registry.previous(view.name)
    assert champion is not None and champion.version != first.version
    assert previous is not None and previous.version == first.version

    # compare-and-swap: the first version was gated against no champion, and there is one
    # now, so promoting it again (as a stale run would) is refused
    run = Run(view, dt.date(2026, 1, 31), settings=settings)
    with pytest.raises(ModelGateError, match=r"compared it with no champion.*champion is now"):
        promote(run, first.version)
    assert registry.champion(view.name).version == champion.version


# ------------------------------------------------------------ item 11: import edge cases


def _labelled_days(view: FeatureView, days: int = 3) -> pd.DataFrame:
    """Days of features with their labels, each label arrived the day after its event."""
    frames = []
    for offset in range(days):
        day = DAY + dt.timedelta(days=offset)
        features, labels = generate_day(day, StreamConfig(rows_per_day=30, seed=offset))
        frame = features.copy()
        frame[view.label.name] = labels[view.label.name]
        frame["arrived_at"] = f"{day + dt.timedelta(days=1)}T09:30:00+02:00"
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_reimport_without_arrival_times_keeps_past_training_sets(
    tmp_path: Path, store: FeatureStore, view: FeatureView
) -> None:
    frame = _labelled_days(view)
    first = tmp_path / "with_arrivals.csv"
    frame.to_csv(first, index=False)
    import_csv(store, view, first)
    as_of = DAY + dt.timedelta(days=10)
    before = store.training_set(view, as_of, window_days=30)
    assert len(before) == len(frame)

    again = tmp_path / "without_arrivals.csv"
    changed = frame.drop(columns="arrived_at")
    changed.loc[0, view.label.name] = next(  # one label corrected: it arrives now
        c for c in view.label.class_list if c != frame.loc[0, view.label.name]
    )
    changed.to_csv(again, index=False)
    assert import_csv(store, view, again).labels_written == len(frame)
    after = store.training_set(view, as_of, window_days=30)
    corrected = (after[view.entity] == frame.loc[0, view.entity]) & (
        after[view.event_date] == pd.Timestamp(frame.loc[0, view.event_date])
    )
    assert not corrected.any()  # the corrected label is news: not in a past training set
    unchanged = before.loc[~before[view.entity].eq(frame.loc[0, view.entity])
                           | before[view.event_date].ne(pd.Timestamp(DAY))]  # fmt: skip
    pd.testing.assert_frame_equal(after.reset_index(drop=True), unchanged.reset_index(drop=True))


def test_label_arriving_before_its_event_date_is_refused(
    tmp_path: Path, store: FeatureStore, view: FeatureView
) -> None:
    frame = _labelled_days(view, days=1)
    frame.loc[4, "arrived_at"] = f"{DAY - dt.timedelta(days=2)}T12:00:00"
    path = tmp_path / "early.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataValidationError, match=r"row 5, column 'arrived_at'.*before its event"):
        import_csv(store, view, path)
    assert store.table_counts()[view.labels_table] == 0


def test_mixed_time_zones_in_event_dates_are_read_or_named(
    store: FeatureStore, view: FeatureView
) -> None:
    """Producers calling the store directly: offsets that differ from row to row follow the
    import's rule (the date as written); a value that is no date names column and row."""
    features, _ = generate_day(DAY, StreamConfig(rows_per_day=4))
    features = features.astype({view.event_date: object})
    features.loc[0, view.event_date] = f"{DAY}T23:30:00-05:00"
    features.loc[1, view.event_date] = f"{DAY}T00:30:00+02:00"
    features.loc[2, view.event_date] = f"{DAY}T12:00:00Z"
    features.loc[3, view.event_date] = str(DAY)
    assert store.ingest(view, features)[0] == 4
    assert set(_features_days(store, view)) == {DAY}
    features.loc[2, view.event_date] = f"{DAY} 12:00 CET"
    with pytest.raises(DataValidationError, match=r"column 'event_date'.*row\(s\) 3 do not"):
        store.ingest(view, features)


def _features_days(store: FeatureStore, view: FeatureView) -> list[dt.date]:
    ftable, _ = store.view_tables(view)
    with store.connect() as conn:
        return list(conn.execute(sa.select(ftable.c[view.event_date])).scalars())


def test_mixed_time_zones_in_a_file_exit_2_naming_column_and_row(
    tmp_path: Path, mariadb_url: str, clean_env: dict[str, str], view: FeatureView
) -> None:
    env = {**clean_env, "FEATURE_STORE_URL": mariadb_url,
           "CTLOOP_FEATURES_DIR": str(ROOT / "features")}  # fmt: skip
    assert _finish(_ctloop(["init-db"], env, tmp_path))[0] == 0
    frame = _labelled_days(view, days=1).astype({view.event_date: object})
    frame.loc[0, view.event_date] = f"{DAY}T23:30:00-05:00"
    frame.loc[1, view.event_date] = f"{DAY}T00:30:00+02:00"
    frame.loc[2, view.event_date] = f"{DAY}T10:00:00 Europe/Berlin"
    path = tmp_path / "zones.csv"
    frame.to_csv(path, index=False)
    code, _, err = _finish(_ctloop(["import", view.name, str(path)], env, tmp_path))
    assert code == 2, err
    assert f"row 3, column 'event_date': '{DAY}T10:00:00 Europe/Berlin' is not a date" in err
    assert "Traceback" not in err
    frame.loc[2, view.event_date] = f"{DAY}T10:00:00+01:00"
    frame.to_csv(path, index=False)
    code, _, err = _finish(_ctloop(["import", view.name, str(path)], env, tmp_path))
    assert code == 0, err


# ------------------------------------------------------------ items 10 and 12: creating tables


def test_two_workers_creating_tables_at_once_both_succeed(
    mariadb_url: str, view: FeatureView
) -> None:
    """Both workers find no table, then both CREATE it: the second used to fail with 1050
    ("table exists"), reported as an unreachable store. Each worker holds its own engine;
    a barrier in `before_create` makes them meet between the check and the CREATE."""
    meet = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []

    def worker() -> None:
        store = FeatureStore(mariadb_url)
        first = next(iter(store.metadata.tables.values()))
        met = []

        @sa.event.listens_for(first, "before_create")
        def _both_checked(*_: object, **__: object) -> None:
            if not met:  # once: after this both have seen no table
                met.append(True)
                meet.wait()

        try:
            store.init([view])
        except BaseException as exc:  # reported by the test below
            errors.append(exc)
        finally:
            store.dispose()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    check = FeatureStore(mariadb_url)
    try:
        check.require_tables(view)
    finally:
        check.dispose()


def test_schema_errors_are_not_reported_as_unreachable(store: FeatureStore) -> None:
    with pytest.raises(CtloopError) as info, store.begin() as conn:
        conn.execute(sa.text(f"CREATE INDEX `{'i' * 65}` ON prediction_log (feature_view)"))
    assert "unreachable" not in str(info.value)
    assert "refused a schema operation" in str(info.value) and "1059" in str(info.value)


def test_longest_view_name_allowed_creates_its_tables(mariadb_url: str, view: FeatureView) -> None:
    longest = view.model_copy(update={"name": "v" * 46})
    store = FeatureStore(mariadb_url)
    try:
        store.init([longest])
        store.require_tables(longest)
    finally:
        store.dispose()
