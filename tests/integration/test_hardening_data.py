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
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ctloop.errors import CtloopError
from ctloop.features.view import FeatureView
from ctloop.ingest.files import import_csv
from ctloop.ingest.synth import StreamConfig, generate_day
from ctloop.registry import Registry
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
    settings = Settings(data_dir=tmp_path / "data", feature_store_url=mariadb_url)
    registry = Registry.from_settings(settings)
    first = registry.champion(view.name)
    assert first is not None

    racers = [_ctloop(["train", "--as-of", "2026-02-10"], env, tmp_path) for _ in range(3)]
    results = [_finish(proc) for proc in racers]
    winners = [json.loads(out) for code, out, _ in results if code == 0]
    refused = [err for code, _, err in results if code != 0]
    assert winners, [err for _, _, err in results]
    for err in refused:
        assert "a CT run for view credit_score is in progress since" in err, err
    versions = registry.versions(view.name)
    assert len(versions) <= 2  # the first champion and at most one new version
    champion, previous = registry.champion(view.name), registry.previous(view.name)
    assert champion is not None and champion.version != first.version
    assert previous is not None and previous.version == first.version

    # compare-and-swap: the first version was gated against no champion, and there is one
    # now, so promoting it again (as a stale run would) is refused
    run = Run(view, dt.date(2026, 1, 31), settings=settings)
    with pytest.raises(ModelGateError, match=r"compared it with no champion.*champion is now"):
        promote(run, first.version)
    assert registry.champion(view.name).version == champion.version
