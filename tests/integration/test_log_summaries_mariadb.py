"""The monitor's summaries computed by MariaDB (`ctloop.predlog.summaries`) against the
same summaries computed row by row (`monitoring.drift.summarize_rows`), for each task kind.

The rows are written through the prediction log's own path into the view's typed table;
the window holds values exactly on the bucket edges (served rows equal to training rows
are common), NULLs, unseen categories, and rows of another version, another role and
another time that must not count. Bucket counts must be equal, sums and every drift value
equal to 1e-9.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from ctloop.core.metrics import Output
from ctloop.core.stats import profile
from ctloop.core.summary import NumericSummary, WindowSummary
from ctloop.features.view import FeatureView, load_view_file
from ctloop.monitoring.drift import data_drift, prediction_drift, summarize_rows
from ctloop.predlog import summaries
from ctloop.predlog.sample import BLOCK_IDS, Window, in_sample
from ctloop.predlog.store import CHAMPION_ROLE, SHADOW_ROLE, PredictionLog
from ctloop.store.features import FeatureStore
from ctloop.training.fit import prediction_profile
from tests.support.paths import EXAMPLE_VIEWS_DIR, FEATURES_DIR

pytestmark = pytest.mark.mariadb

T0 = dt.datetime(2026, 11, 2, 8)
VIEWS = {
    "multiclass": FEATURES_DIR / "credit_score.yaml",
    "binary": EXAMPLE_VIEWS_DIR / "breast_cancer.yaml",
    "regression": EXAMPLE_VIEWS_DIR / "diabetes.yaml",
}


def frame_of(view: FeatureView, n: int, rng: np.random.Generator, shift: float) -> pd.DataFrame:
    """Feature values for `n` rows: numbers rounded to 2 places (so many equal the
    reference's sample values exactly), a few missing; categories with an unseen one."""
    data: dict[str, Any] = {}
    for feature in view.features:
        if feature.is_numeric:
            values = np.round(rng.normal(50 + shift, 10, n), 2).astype(object)
            values[rng.random(n) < 0.05] = None
        else:
            known = [*(feature.categories or ["a", "b"])][:2]
            # an unseen category, and one only a trailing space tells apart (kept apart)
            choices = [*known, "never-seen", f"{known[0]} "] if shift else known
            values = np.array(rng.choice(choices, n), dtype=object)
            values[rng.random(n) < 0.05] = None
        data[feature.name] = values
    return pd.DataFrame(data)


def output_of(view: FeatureView, n: int, rng: np.random.Generator) -> Output:
    if view.label.is_regression:
        values = np.round(rng.normal(150, 40, n), 3)
        return Output(values.tolist(), values=values)
    classes = view.label.class_list
    proba = rng.dirichlet(np.ones(len(classes)), n)
    return Output([classes[i] for i in proba.argmax(axis=1)], proba=proba)


def log_rows(
    view: FeatureView, features: pd.DataFrame, output: Output, start: dt.datetime, **fields: Any
) -> list[dict[str, Any]]:
    rows = []
    for i, record in enumerate(features.to_dict("records")):
        if view.label.is_regression:
            prediction, probabilities = repr(float(output.values[i])), {}
        else:
            prediction = output.predictions[i]
            probabilities = dict(zip(view.label.class_list, output.proba[i].tolist(), strict=True))
        rows.append({
            "request_id": uuid.uuid4().hex, "feature_view": view.name, "model_version": "1",
            "entity_id": f"e{i}", "features": record, "prediction": prediction,
            "probabilities": probabilities, "latency_ms": 1.0, "role": CHAMPION_ROLE,
            "created_at": start + dt.timedelta(seconds=i), **fields,
        })  # fmt: skip
    return rows


def assert_same_summary(sql: WindowSummary, rows: WindowSummary) -> None:
    assert sql.rows == rows.rows
    assert set(sql.features) == set(rows.features)
    pairs = [(name, sql.features[name], rows.features[name]) for name in sql.features]
    pairs += [
        ("prediction", sql.predictions, rows.predictions),
        ("output", sql.output, rows.output),
    ]
    for name, a, b in pairs:
        if isinstance(a, NumericSummary):
            assert isinstance(b, NumericSummary), name
            assert a.missing == b.missing, name
            assert np.array_equal(a.counts, b.counts), (name, np.flatnonzero(a.counts != b.counts))
            np.testing.assert_allclose(a.sums, b.sums, rtol=1e-12, atol=1e-9, err_msg=name)
        else:
            assert a == b, name


@pytest.mark.parametrize("kind", list(VIEWS))
def test_sql_summaries_give_the_row_by_row_drift_values(mariadb_url: str, kind: str) -> None:
    view = load_view_file(VIEWS[kind])
    store = FeatureStore(mariadb_url)
    store.init([view])
    rng = np.random.default_rng(11)
    reference_frame = frame_of(view, 3000, rng, shift=0.0)
    reference = profile(view, reference_frame)
    reference["prediction"] = prediction_profile(view, output_of(view, 3000, rng), seed=0)
    log = PredictionLog(store)
    n = 4000
    window = frame_of(view, n, rng, shift=10.0)
    window.iloc[: n // 4] = reference_frame.iloc[: n // 4].to_numpy()  # on the edges exactly
    rows = log_rows(view, window, output_of(view, n, rng), T0)
    noise = frame_of(view, 50, rng, shift=40.0)  # must not count: version, role, time
    rows += log_rows(view, noise, output_of(view, 50, rng), T0, model_version="2")
    rows += log_rows(view, noise, output_of(view, 50, rng), T0, role=SHADOW_ROLE)
    rows += log_rows(view, noise, output_of(view, 50, rng), T0 - dt.timedelta(days=2))
    assert log.write(rows) == len(rows)
    until = T0 + dt.timedelta(days=1)

    by_sql = summaries.summarize(log, view, reference, T0, until, "1", CHAMPION_ROLE)
    read = log.read(view.name, T0, until, model_version="1", role=CHAMPION_ROLE)
    by_rows = summarize_rows(view, reference, read)
    assert by_sql is not None and by_sql.rows == n == len(read)
    assert_same_summary(by_sql, by_rows)
    for check in (data_drift, prediction_drift):
        got, want = check(view, reference, by_sql), check(view, reference, by_rows)
        assert [(f.kind, f.feature, f.statistic) for f in got] == [
            (f.kind, f.feature, f.statistic) for f in want
        ]
        for a, b in zip(got, want, strict=True):
            same = math.isclose(a.value, b.value, rel_tol=1e-9, abs_tol=1e-9) or (
                math.isnan(a.value) and math.isnan(b.value)
            )
            assert same, (a.feature, a.statistic, a.value, b.value)
            assert a.drifted == b.drifted, (a.feature, a.statistic)
    assert any(f.drifted for f in data_drift(view, reference, by_sql))  # the shift is seen
    # a window past `max_rows_summarized`: the database's sample is the read's, row for row,
    # and both are the rows `in_sample` keeps
    sampled = summaries.summarize(log, view, reference, T0, until, "1", CHAMPION_ROLE, 0.3)
    read = log.read(view.name, T0, until, model_version="1", role=CHAMPION_ROLE, fraction=0.3)
    every = log.read(view.name, T0, until, model_version="1", role=CHAMPION_ROLE)
    assert sampled is not None and 0.2 * n < sampled.rows < 0.4 * n
    assert read["id"].tolist() == every["id"][in_sample(every["id"], 0.3)].tolist()
    assert_same_summary(sampled, summarize_rows(view, reference, read))
    store.dispose()


@pytest.mark.serial  # reads the server's global handler counters
def test_a_sampled_summary_reads_only_its_blocks(mariadb_url: str) -> None:
    """Past `max_rows_summarized` the database reads the kept blocks of ids along the
    primary key, not the window: for a 30 % sample of 24,000 rows, with rows of another
    day between them, it reads along the key the blocks' rows only, and at least the
    window's rows fewer than the same summary without the window's id span (a filtered
    read of the window); both count exactly the rows `in_sample` keeps."""
    view = load_view_file(VIEWS["binary"])
    store = FeatureStore(mariadb_url)
    store.init([view])
    rng = np.random.default_rng(5)
    reference = profile(view, frame_of(view, 1000, rng, shift=0.0))
    log = PredictionLog(store)
    day, other = T0, T0 - dt.timedelta(days=3)
    for part in range(6):  # 4000 rows of the window, then 1000 of another day, six times
        start = day + dt.timedelta(hours=part)
        log.write(log_rows(view, frame_of(view, 4000, rng, 0.0), output_of(view, 4000, rng),
                           start))  # fmt: skip
        log.write(log_rows(view, frame_of(view, 1000, rng, 0.0), output_of(view, 1000, rng),
                           other + dt.timedelta(hours=part)))  # fmt: skip
    until = day + dt.timedelta(days=1)
    seen = log.window(view.name, day, until)
    assert seen.rows == 24_000 and set(seen.spans) == {view.log_table}
    blind = Window(seen.rows)  # no span: the rows are found by filtering the window
    counters = [handler_reads(store)]
    by_blocks = summaries.summarize(log, view, reference, day, until, "1", CHAMPION_ROLE,
                                    0.3, seen)  # fmt: skip
    counters.append(handler_reads(store))
    filtered = summaries.summarize(log, view, reference, day, until, "1", CHAMPION_ROLE,
                                   0.3, blind)  # fmt: skip
    counters.append(handler_reads(store))
    every = log.read(view.name, day, until, model_version="1", role=CHAMPION_ROLE)
    kept = every[in_sample(every["id"], 0.3)]
    assert by_blocks is not None and filtered is not None
    assert 0.2 * len(every) < by_blocks.rows < 0.4 * len(every)
    assert_same_summary(by_blocks, summarize_rows(view, reference, kept))
    assert_same_summary(filtered, by_blocks)
    first, second, third = counters
    blocks_next = second["Handler_read_next"] - first["Handler_read_next"]
    blocks_rows, window_rows = (
        sum(after[k] - before[k] for k in ("Handler_read_next", "Handler_read_rnd_next"))
        for before, after in ((first, second), (second, third))
    )
    # along the key: the kept blocks' rows (and the other day's rows inside them)
    assert by_blocks.rows <= blocks_next <= 1.4 * by_blocks.rows + 2 * BLOCK_IDS, counters
    assert window_rows - blocks_rows >= 0.8 * len(every), counters
    store.dispose()


def handler_reads(store: FeatureStore) -> dict[str, int]:
    """The server's row-read counters (every session: run alone)."""
    with store.connect() as conn:
        found = conn.execute(sa.text("SHOW GLOBAL STATUS LIKE 'Handler_read%'"))
        return {name: int(value) for name, value in found}


def test_no_summary_where_the_database_cannot_make_one(mariadb_url: str, view: FeatureView) -> None:
    """A view without a typed table, or with window rows still in the shared JSON table
    (logged before its typed table existed): None, and the monitor reads rows."""
    store = FeatureStore(mariadb_url)
    store.init([])
    reference = {"features": {}, "prediction": {}}
    log = PredictionLog(store)
    log.write(log_rows(view, frame_of(view, 5, np.random.default_rng(1), 0.0),
                       output_of(view, 5, np.random.default_rng(1)), T0))  # fmt: skip
    until = T0 + dt.timedelta(days=1)
    assert summaries.summarize(log, view, reference, T0, until) is None  # no typed table
    store.init([view])
    fresh = PredictionLog(store)
    assert fresh.layout(view.name) is not None
    assert summaries.summarize(fresh, view, reference, T0, until) is None  # JSON rows in it
    assert summaries.summarize(fresh, view, reference, until, until + dt.timedelta(days=1))
    store.dispose()
