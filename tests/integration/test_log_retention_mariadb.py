"""The log retention tests (`tests/unit/test_log_retention.py`) again, on MariaDB, where
chunks are `DELETE ... ORDER BY created_at LIMIT n` along the (view, time) index."""

from __future__ import annotations

import pytest

from tests.support.databases import mariadb_store_url as store_url  # noqa: F401  MariaDB only
from tests.unit.test_log_retention import (  # noqa: F401  collected here, on MariaDB
    test_a_retention_shorter_than_the_monitor_reads_is_refused,
    test_prune_log_command,
    test_whole_old_days_of_one_view_go_in_chunks,
)

pytestmark = pytest.mark.mariadb
