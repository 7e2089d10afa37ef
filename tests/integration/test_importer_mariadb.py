"""The importer's tests (`tests/unit/test_importer.py`) again, on MariaDB.

MariaDB is the production path. The test code is the unit tier's, one body per behaviour:
pytest collects the imported tests here, where `store_url` is MariaDB, while the unit tier
runs the same tests on embedded SQLite (same test ids, `[mariadb]` instead of `[sqlite]`).
"""

from __future__ import annotations

import pytest

from tests.support.databases import mariadb_store_url as store_url  # noqa: F401  MariaDB only
from tests.unit.test_importer import (  # noqa: F401  collected here, on MariaDB
    regression,
    test_arrived_at_offsets_are_converted_to_utc,
    test_bad_or_missing_arrival_time_of_a_label_is_refused,
    test_bad_value_is_reported_and_nothing_written,
    test_custom_missing_values,
    test_duplicate_keys_in_file_are_reported,
    test_extra_columns_refused_by_default_ignored_on_request,
    test_features_only_csv,
    test_headers_resolve_by_normalised_name_and_explicit_mapping,
    test_labels_file_uses_the_same_rules,
    test_missing_and_unknown_columns,
    test_missing_markers_are_missing_values,
    test_name_normalisation_can_be_turned_off,
    test_parquet_file_is_imported_through_the_same_checks,
    test_problems_are_sorted_by_row_then_file_column,
    test_regression_labels_file,
    test_regression_labels_import_as_numbers,
    test_skip_bad_rows_imports_the_rest,
    test_two_columns_for_one_view_column_are_refused,
    test_unreadable_file,
    test_unseen_category_allowed_by_view_passes,
    test_valid_csv_imports_features_and_labels,
    test_whole_numbers_from_parquet_stay_whole,
)

pytestmark = pytest.mark.mariadb
