"""Training-serving skew on the embedded store: the share of sent feature values that differ
from the store's row of the same entity and day, per feature. The same check on requests
logged by a real service over MariaDB is in `tests/integration/test_online.py`."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ctloop.features.view import FeatureView
from ctloop.ingest.synth import StreamConfig, generate_day
from ctloop.monitoring import skew
from ctloop.monitoring.skew import skew_findings
from ctloop.store.features import FeatureStore

DAY = dt.date(2026, 3, 1)


def logged(view: FeatureView, features: pd.DataFrame) -> pd.DataFrame:
    """Feature rows as `PredictionLog.read` returns logged requests of them, each sending
    its event date (ISO text, as the log keeps it)."""
    logs = features.rename(columns={view.entity: "entity_id"})
    logs[view.event_date] = pd.to_datetime(logs[view.event_date]).dt.date.astype(str)
    logs["entity_id"] = logs["entity_id"].astype(str)
    logs["created_at"] = pd.Timestamp(DAY) + pd.Timedelta(hours=9)
    return logs.reset_index(drop=True)


def rates(findings: list) -> dict[str, float]:
    return {f.feature: f.value for f in findings if f.statistic == "mismatch_rate"}


def test_sent_values_are_compared_with_the_store_row_of_the_same_entity_and_day(
    store: FeatureStore, view: FeatureView
) -> None:
    features, _ = generate_day(DAY, StreamConfig(seed=3, rows_per_day=200))
    store.ingest(view, features)
    logs = logged(view, features)
    assert set(rates(skew_findings(view, store, logs)).values()) == {0.0}  # as stored
    numeric = next(f.name for f in view.features if f.is_numeric)
    category = next(f for f in view.features if not f.is_numeric)
    logs.loc[:49, numeric] = logs.loc[:49, numeric].fillna(0) * 1.1 + 1  # a unit change
    logs.loc[:9, category.name] = "Somewhere_else"
    logs.loc[10:19, category.name] = None  # missing where the store has a value
    logs.loc[150:, "entity_id"] = "unknown"  # no row of theirs: not compared
    findings = skew_findings(view, store, logs)
    got = rates(findings)
    stored_missing = features[category.name].iloc[10:20].isna().sum()
    assert got[numeric] == 50 / 150
    assert got[category.name] == (20 - stored_missing) / 150
    assert {f.feature for f in findings if f.drifted} == {numeric, category.name}
    compared = {f.feature: f.value for f in findings if f.statistic == "compared_rows"}
    assert set(compared.values()) == {150.0}
    # features serving took from the store are not the caller's: not compared
    logs["from_store"] = ""
    logs.loc[:49, "from_store"] = numeric
    assert numeric not in {f.feature for f in skew_findings(view, store, logs.loc[:49])}
    assert rates(skew_findings(view, store, logs))[numeric] == 0.0  # the 100 others agree


def test_what_cannot_be_compared_gives_no_rate(store: FeatureStore, view: FeatureView) -> None:
    features, _ = generate_day(DAY, StreamConfig(seed=4, rows_per_day=40))
    logs = logged(view, features)
    assert skew_findings(view, store, logs) == []  # the store has nothing for that day
    store.ingest(view, features)
    assert skew_findings(view, store, logs.head(29)) == []  # under MIN_COMPARED requests
    assert len(skew_findings(view, store, logs.head(30))) == 2 * len(view.features)
    assert skew_findings(view, store, logs.assign(entity_id=np.nan)) == []  # no entity named
    # no event date sent: the day the features describe is unknown, so not compared
    assert skew_findings(view, store, logs.assign(**{view.event_date: None})) == []
    assert skew_findings(view, store, logs.drop(columns=[view.event_date])) == []


def test_a_busy_window_is_compared_on_a_bounded_repeatable_sample(
    store: FeatureStore, view: FeatureView, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_COMPARED pairable requests a uniform sample of that many is compared: the
    rate stays the window's (within sampling noise) and a second check gives the same."""
    features, _ = generate_day(DAY, StreamConfig(seed=5, rows_per_day=2000))
    store.ingest(view, features)
    logs = logged(view, features)
    numeric = next(f.name for f in view.features if f.is_numeric)
    logs.loc[::4, numeric] = logs.loc[::4, numeric].fillna(0) * 1.1 + 1  # every 4th: 25 %
    monkeypatch.setattr(skew, "MAX_COMPARED", 800)
    findings = skew_findings(view, store, logs)
    compared = {f.feature: f.value for f in findings if f.statistic == "compared_rows"}
    assert set(compared.values()) == {800.0}
    rate = rates(findings)[numeric]
    assert abs(rate - 0.25) < 4 * (0.25 * 0.75 / 800) ** 0.5  # 4 standard errors
    assert rates(skew_findings(view, store, logs)) == rates(findings)  # repeatable
