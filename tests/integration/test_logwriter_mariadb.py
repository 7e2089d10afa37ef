"""The prediction-log writer's tests (`tests/unit/test_logwriter.py`) again, on MariaDB.

MariaDB is the production path. The test code is the unit tier's, one body per behaviour:
pytest collects the imported tests here, where `store_url` is MariaDB, while the unit tier
runs the same tests on embedded SQLite (same test ids, `[mariadb]` instead of `[sqlite]`).
"""

from __future__ import annotations

import pytest

from tests.support.databases import mariadb_store_url as store_url  # noqa: F401  MariaDB only
from tests.unit.test_logwriter import (  # noqa: F401  collected here, on MariaDB
    down_log,
    log,
    test_a_damaged_spill_file_is_quarantined_and_never_stops_replay,
    test_a_quarantine_that_cannot_be_written_does_not_stop_replay,
    test_a_spilled_row_is_replayed_exactly_as_it_would_have_been_written,
    test_close_flushes_everything_queued,
    test_close_replays_what_an_overload_spilled,
    test_close_with_a_hung_database_keeps_rows_on_disk,
    test_counter_hook_sees_every_event,
    test_database_down_spills_then_replays_exactly_once,
    test_full_queue_spills_instead_of_blocking,
    test_live_process_files_are_not_claimed_dead_ones_are_claimed_once,
    test_replay_skips_rows_already_stored,
    test_rows_are_batched_by_size_and_by_time,
)

pytestmark = pytest.mark.mariadb
