"""The bounded-read tests (`tests/unit/test_log_sample.py`) again, on MariaDB, where the
sample's blocks are read by the server along the primary key, and a look-back's size may be
the optimizer's estimate."""

from __future__ import annotations

import pytest

from tests.support.databases import mariadb_store_url as store_url  # noqa: F401  MariaDB only
from tests.unit.test_log_sample import (  # noqa: F401  collected here, on MariaDB
    log,
    test_a_fraction_outside_zero_to_one_is_refused,
    test_a_read_in_several_queries_is_the_one_query_read,
    test_a_row_orjson_refuses_is_still_read,
    test_a_sampled_shadow_trial_reads_whole_pairs,
    test_a_window_counted_for_a_narrower_range_is_counted_again,
    test_a_window_past_the_bound_is_an_even_sample_of_its_size,
    test_a_window_within_the_bound_is_read_whole,
    test_an_estimated_look_back_reads_the_same_sample,
    test_rows_read_at_one_fraction_cut_down_to_a_smaller_one_are_that_read,
)

pytestmark = pytest.mark.mariadb
