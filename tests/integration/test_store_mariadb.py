"""The feature store's tests (`tests/unit/test_store.py`) again, on MariaDB.

MariaDB is the production path. The test code is the unit tier's, one body per behaviour:
pytest collects the imported tests here, where `store_url` is MariaDB, while the unit tier
runs the same tests on embedded SQLite (same test ids, `[mariadb]` instead of `[sqlite]`).
Plus what only MariaDB has: the C driver (mysqlclient).
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from ctloop.features.view import FeatureView
from ctloop.store.features import FeatureStore
from tests.support.databases import mariadb_store_url as store_url  # noqa: F401  MariaDB only
from tests.unit.test_store import (  # noqa: F401  collected here, on MariaDB
    DAY,
    _day,
    test_a_large_log_batch_is_split_below_the_packet_budget,
    test_a_request_id_is_stored_once_across_the_shared_and_the_typed_table,
    test_a_views_typed_log_gives_back_every_value_as_logged,
    test_ingest_is_atomic,
    test_init_is_idempotent_and_creates_all_tables,
    test_labels_with_unknown_class_are_refused_and_nothing_written,
    test_latest_features_reads_the_newest_rows_before_a_date,
    test_missing_column_is_refused,
    test_missing_values_round_trip_as_missing,
    test_point_in_time_excludes_late_labels_and_rows_on_or_after_as_of,
    test_prediction_log_rows_are_stored_exactly_as_given,
    test_prediction_log_window_read_and_replay_dedup,
    test_status_reports_days_and_coverage,
    test_training_set_types_order_and_chunking,
    test_upsert_twice_leaves_same_rows,
    test_upsert_updates_values_in_place,
)

pytestmark = pytest.mark.mariadb


def test_c_driver_round_trip(mariadb_url: str, view: FeatureView) -> None:
    """The faster mysqlclient driver (mysql+mysqldb://) reads and writes the same rows."""
    url = mariadb_url.replace("mysql+pymysql://", "mysql+mysqldb://")
    fast = FeatureStore(url, chunk_rows=70)
    fast.init([view])
    features, labels = _day(DAY, rows=300, delay=1)
    fast.ingest(view, features, labels)
    fast.ingest(view, features, labels)
    frame = fast.training_set(view, DAY + dt.timedelta(days=5), window_days=10)
    slow = FeatureStore(mariadb_url).training_set(view, DAY + dt.timedelta(days=5), window_days=10)
    assert len(frame) == 300
    pd.testing.assert_frame_equal(frame, slow)
    fast.dispose()
