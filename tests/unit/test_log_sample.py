"""Bounded reads of the prediction log (`bounded_fraction` of a `PredictionLog.window`,
`read(fraction=)`): a window past the bound comes back as a sample of about the bound's
size, the same rows on every read, spread over the window's time and over interleaved
roles; a shadow trial's sample keeps whole pairs. On SQLite here; the monitor's sampled
check runs on MariaDB in `integration/test_monitor.py`."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from ctloop.features.view import FeatureView
from ctloop.monitoring import livegate
from ctloop.predlog import sample
from ctloop.predlog import store as predlog_store
from ctloop.predlog.sample import BLOCK_IDS, bounded_fraction, in_sample
from ctloop.predlog.store import SHADOW_ROLE, PredictionLog
from ctloop.registry import VersionInfo
from ctloop.store.features import FeatureStore

DAY = dt.datetime(2026, 3, 1)
ROWS = 6_000


def fill(log: PredictionLog) -> None:
    """ROWS rows over one day, champion and shadow rows interleaved (as a shadow trial
    logs them), plus rows of another view between them."""
    rows = []
    for i in range(ROWS):
        at = DAY + dt.timedelta(seconds=i * 14)
        role = "shadow" if i % 2 else "champion"
        rows.append({"request_id": f"r{i}", "feature_view": "v", "model_version": "1",
                     "entity_id": f"e{i}", "features": {"i": i}, "prediction": "a",
                     "probabilities": {"a": 1.0}, "latency_ms": 1.0, "created_at": at,
                     "role": role})  # fmt: skip
        if i % 3 == 0:
            rows.append({**rows[-1], "request_id": f"o{i}", "feature_view": "other"})
    log.write(rows)


@pytest.fixture
def log(store: FeatureStore) -> PredictionLog:
    log = PredictionLog(store)
    fill(log)
    return log


def test_a_window_within_the_bound_is_read_whole(log: PredictionLog) -> None:
    assert bounded_fraction(log.window("v", DAY, DAY + dt.timedelta(days=1)).rows, ROWS) == 1.0
    whole = log.read("v", DAY, DAY + dt.timedelta(days=1), expand_features=False)
    assert len(whole) == ROWS


def test_a_window_past_the_bound_is_an_even_sample_of_its_size(log: PredictionLog) -> None:
    end = DAY + dt.timedelta(days=1)
    fraction = bounded_fraction(log.window("v", DAY, end).rows, 1_200)
    assert fraction == pytest.approx(1_200 / ROWS)  # counted over this view only
    sample = log.read("v", DAY, end, fraction=fraction)
    assert 1_100 <= len(sample) <= 1_300, len(sample)
    # the same rows on every read of the window
    again = log.read("v", DAY, end, fraction=fraction)
    assert sample["request_id"].tolist() == again["request_id"].tolist()
    # spread over the day: each quarter of it holds about a quarter of the sample, to
    # within two of its whole blocks of ids (48 of this view's rows in each 64 ids)
    quarter = (sample["created_at"] - DAY) // dt.timedelta(hours=6)
    block = BLOCK_IDS * 3 // 4
    assert quarter.value_counts().between(300 - 2 * block, 300 + 2 * block).all()
    assert quarter.nunique() == 4
    # and over interleaved roles: one role's read keeps about its share
    champion = log.read("v", DAY, end, role="champion", fraction=fraction)
    assert 500 <= len(champion) <= 700, len(champion)
    assert set(champion["request_id"]) <= set(sample["request_id"])
    assert champion["i"].mod(2).eq(0).all()  # the features were expanded from the sample


def test_a_fraction_outside_zero_to_one_is_refused(log: PredictionLog) -> None:
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="fraction must be in"):
            log.read("v", DAY, DAY + dt.timedelta(days=1), fraction=bad)


def test_a_sampled_shadow_trial_reads_whole_pairs(
    store: FeatureStore, view: FeatureView, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the bound the live gate reads a sample of the champion's rows and the shadow
    rows of exactly those requests (ids in several queries), so every pair stays whole."""
    monkeypatch.setattr(predlog_store, "REQUEST_CHUNK", 97)
    log = PredictionLog(store)
    rows = []
    for i in range(3_000):
        at = DAY + dt.timedelta(seconds=i * 20)
        base = {"request_id": f"r{i}", "feature_view": view.name, "model_version": "1",
                "entity_id": f"e{i}", "features": {"i": i}, "prediction": "a",
                "probabilities": {"a": 1.0}, "latency_ms": 1.0, "created_at": at,
                "role": "champion"}  # fmt: skip
        twin = {**base, "request_id": f"r{i}.shadow", "model_version": "2", "role": "shadow"}
        rows += [base, twin]
    log.write(rows)
    bounded = view.model_copy(
        update={"drift": view.drift.model_copy(update={"max_rows_read": 1_000})}
    )
    champion = VersionInfo(view.name, "1", None, {})
    trial = VersionInfo(view.name, "2", None, {"rollout.started": DAY.isoformat()})
    end = DAY + dt.timedelta(days=1)
    mine, theirs, started, sampled = livegate._trial_logs(bounded, store, champion, trial,
                                                          SHADOW_ROLE, end)  # fmt: skip
    assert started == DAY and sampled
    assert 400 <= len(mine) <= 600, len(mine)  # half the sampled rows are the champion's
    assert sorted(theirs["request_id"].str.removesuffix(".shadow")) == sorted(mine["request_id"])
    assert set(theirs["model_version"]) == {"2"} and set(theirs["role"]) == {"shadow"}
    assert (theirs["i"].sort_values().to_numpy() == mine["i"].sort_values().to_numpy()).all()
    whole, twins, _, sampled = livegate._trial_logs(view, store, champion, trial, SHADOW_ROLE, end)
    assert not sampled
    assert len(whole) == len(twins) == 3_000  # within the bound: read whole


def test_rows_read_at_one_fraction_cut_down_to_a_smaller_one_are_that_read(
    log: PredictionLog,
) -> None:
    """`in_sample` is the database's filter: the monitor cuts its window's sample down to
    the look-back's share instead of reading the window twice."""
    end = DAY + dt.timedelta(days=1)
    larger = log.read("v", DAY, end, fraction=0.4)
    smaller = log.read("v", DAY, end, fraction=0.1)
    assert set(smaller["request_id"]) < set(larger["request_id"])  # the hash nests
    cut = larger[in_sample(larger["id"], 0.1)]
    assert cut["request_id"].tolist() == smaller["request_id"].tolist()
    assert in_sample(larger["id"], 1.0).all()


def test_a_row_orjson_refuses_is_still_read(store: FeatureStore) -> None:
    """Rows written by `json.dumps` may hold NaN, which orjson refuses."""
    log = PredictionLog(store)
    log.write([{"request_id": "nan", "feature_view": "v", "model_version": "1",
                "entity_id": "e", "features": '{"x": NaN, "y": 2}', "prediction": "a",
                "probabilities": '{"a": 1.0}', "latency_ms": 1.0, "created_at": DAY}])  # fmt: skip
    [row] = log.read("v", DAY, DAY + dt.timedelta(days=1)).to_dict("records")
    assert row["y"] == 2 and row["x"] != row["x"]  # NaN


def test_block_ranges_name_exactly_the_kept_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The id ranges a sampled read names cover the blocks `in_sample` keeps and no
    other, adjacent blocks merged, also where a run crosses the chunks the span is
    walked in; past MAX_RANGES there are none to name."""
    monkeypatch.setattr(sample, "SPAN_CHUNK", 1_000)
    for first, last, fraction in [(1, 200_000, 0.3), (12_345, 987_654, 0.01),
                                  (0, 63, 0.5), (64_000, 64_069, 0.9)]:  # fmt: skip
        ranges = sample.block_ranges(first, last, fraction)
        assert ranges is not None
        ids = pd.Series(range(first - first % BLOCK_IDS, (last // BLOCK_IDS + 1) * BLOCK_IDS))
        named = np.zeros(len(ids), dtype=bool)
        for a, b in ranges:
            named |= ids.between(a, b).to_numpy()
        assert (named == in_sample(ids, fraction)).all(), (first, last, fraction)
        assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(ranges))  # merged
    monkeypatch.setattr(sample, "MAX_RANGES", 10)
    assert sample.block_ranges(1, 200_000, 0.3) is None


def test_an_estimated_look_back_reads_the_same_sample(log: PredictionLog) -> None:
    """A look-back counted by the optimizer's estimate (MariaDB: the whole table's id span
    instead of the range's) reads the same rows as one counted exactly."""
    end = DAY + dt.timedelta(days=1)
    log.write([{"request_id": "later", "feature_view": "other", "model_version": "1",
                "features": {"i": 0}, "prediction": "a", "probabilities": {"a": 1.0},
                "latency_ms": 1.0, "created_at": end + dt.timedelta(days=1)}])  # fmt: skip
    exact = log.window("v", DAY, end)
    guessed = log.window("v", DAY, end, estimate_from=1)
    assert exact.rows == ROWS
    if log.db.dialect == "sqlite":
        assert guessed == exact  # no estimate there: counted
    else:
        assert guessed.rows > 0 and guessed.spans != exact.spans
        with log.db.connect() as conn:
            whole = conn.execute(sa.select(sa.func.min(log.table.c.id),
                                           sa.func.max(log.table.c.id))).one()  # fmt: skip
        assert guessed.spans[log.table.name] == tuple(whole)
    read = log.read("v", DAY, end, fraction=0.2, window=exact)
    again = log.read("v", DAY, end, fraction=0.2, window=guessed)
    assert read["request_id"].tolist() == again["request_id"].tolist()
    assert 0.1 * ROWS < len(read) < 0.3 * ROWS


def test_a_read_in_several_queries_is_the_one_query_read(
    log: PredictionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past RANGES_PER_QUERY kept runs a sampled read asks in several queries: together
    the rows `in_sample` keeps, in time order, typed as one query's (a part that finds no
    row of the champion's version would otherwise make every column an object)."""
    end = DAY + dt.timedelta(days=1)
    whole = log.read("v", DAY, end, role="champion")
    one = log.read("v", DAY, end, role="champion", fraction=0.3)
    monkeypatch.setattr(sample, "RANGES_PER_QUERY", 2)
    parts = log.read("v", DAY, end, role="champion", fraction=0.3)
    assert parts["request_id"].tolist() == one["request_id"].tolist()
    assert parts["id"].tolist() == whole["id"][in_sample(whole["id"], 0.3)].tolist()
    assert parts.dtypes.to_dict() == one.dtypes.to_dict()
    assert parts["created_at"].is_monotonic_increasing
    late = log.read("v", end - dt.timedelta(minutes=30), end, role="champion", fraction=0.3)
    assert late.dtypes.to_dict() == one.dtypes.to_dict() or late.empty


def test_a_window_counted_for_a_narrower_range_is_counted_again(log: PredictionLog) -> None:
    """A read handed the count of a narrower range (whose id span misses rows of its own)
    counts its range itself: its sample is the rows `in_sample` keeps of the whole range;
    two adjacent counts add up to the count of both."""
    end = DAY + dt.timedelta(days=1)
    noon = DAY + dt.timedelta(hours=12)
    morning, afternoon = log.window("v", DAY, noon), log.window("v", noon, end)
    whole = log.read("v", DAY, end)
    read = log.read("v", DAY, end, fraction=0.3, window=morning)
    assert read["id"].tolist() == whole["id"][in_sample(whole["id"], 0.3)].tolist()
    assert read["created_at"].max() >= noon  # the afternoon's rows are in it
    both = morning + afternoon
    assert both == log.window("v", DAY, end) and both.covers(DAY, end)
    assert not morning.covers(DAY, end)
