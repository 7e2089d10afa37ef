"""Issue 18, the data half, on MariaDB: keys compare as bytes, one CT run per view at a
time, tables created by racing workers, and the import's edge cases.

Each test reproduces a failure found by attacking the store with real processes; each
failed on the code before its fix.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from ctloop.errors import CtloopError
from ctloop.features.view import FeatureView
from ctloop.ingest.files import import_csv
from ctloop.ingest.synth import StreamConfig, generate_day
from ctloop.store.features import FeatureStore

pytestmark = pytest.mark.mariadb

DAY = dt.date(2026, 4, 1)


@pytest.fixture
def store(mariadb_url: str, view: FeatureView) -> FeatureStore:
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
