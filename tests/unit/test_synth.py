"""The synthetic stream: reproducible, plausible, and drifting only when and how it is told."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from ctloop.errors import CtloopError
from ctloop.features.frames import validate_frame
from ctloop.features.view import FeatureView
from ctloop.ingest.synth import NEW_OCCUPATION, Scenario, StreamConfig, generate_day, stream

DAY = dt.date(2026, 5, 1)


def test_same_seed_same_rows_and_days_independent_of_range(view: FeatureView) -> None:
    cfg = StreamConfig(seed=3, rows_per_day=300)
    long = {d: (f, lab) for d, f, lab in stream(view, DAY, 5, cfg)}
    short = {d: (f, lab) for d, f, lab in stream(view, DAY + dt.timedelta(days=3), 2, cfg)}
    for day, (features, labels) in short.items():
        pd.testing.assert_frame_equal(features, long[day][0])
        pd.testing.assert_frame_equal(labels, long[day][1])
    other, _ = generate_day(DAY, StreamConfig(seed=4, rows_per_day=300))
    assert not other["annual_income"].equals(long[DAY][0]["annual_income"])


def test_rows_satisfy_the_view_contract(view: FeatureView) -> None:
    features, labels = generate_day(DAY, StreamConfig(rows_per_day=2000))
    raw = features.astype(str).where(features.notna(), "")
    raw[view.label.name] = labels[view.label.name]
    checked = validate_frame(view, raw)
    assert checked.problems == []
    assert features[view.entity].is_unique


def test_plausible_distributions(view: FeatureView) -> None:
    features, labels = generate_day(DAY, StreamConfig(rows_per_day=5000))
    shares = labels[view.label.name].value_counts(normalize=True)
    assert set(shares.index) == set(view.label.classes)
    assert shares.min() > 0.1  # no class is vanishingly rare
    assert 0 < features["monthly_inhand_salary"].isna().mean() < 0.25  # some missing values
    assert 25_000 < features["annual_income"].median() < 80_000


def test_labels_arrive_after_the_configured_delay() -> None:
    _, labels = generate_day(DAY, StreamConfig(rows_per_day=500, label_delay_days=4))
    delay = labels["arrived_at"] - pd.Timestamp(DAY)
    assert delay.min() >= pd.Timedelta(days=4)
    assert delay.max() < pd.Timedelta(days=5)


def test_covariate_shift_starts_on_its_day(view: FeatureView) -> None:
    cfg = StreamConfig(
        rows_per_day=3000, scenario=Scenario.COVARIATE_SHIFT, drift_start=DAY + dt.timedelta(1)
    )
    before, _ = generate_day(DAY, cfg)
    after, _ = generate_day(DAY + dt.timedelta(days=1), cfg)
    control, _ = generate_day(DAY + dt.timedelta(days=1), StreamConfig(rows_per_day=3000))
    assert NEW_OCCUPATION not in set(before["occupation"])
    assert (after["occupation"] == NEW_OCCUPATION).mean() > 0.15
    assert after["annual_income"].median() < 0.75 * control["annual_income"].median()
    assert NEW_OCCUPATION not in view.feature("occupation").categories


def test_concept_drift_changes_labels_not_features() -> None:
    day = DAY + dt.timedelta(days=1)
    drifted = StreamConfig(rows_per_day=3000, scenario=Scenario.CONCEPT_DRIFT, drift_start=day)
    f_drift, l_drift = generate_day(day, drifted)
    f_ctrl, l_ctrl = generate_day(day, StreamConfig(rows_per_day=3000))
    pd.testing.assert_frame_equal(f_drift, f_ctrl)
    changed = (l_drift["credit_score"] != l_ctrl["credit_score"]).mean()
    assert changed > 0.3


def test_refuses_a_view_it_does_not_simulate(view: FeatureView) -> None:
    other = view.model_copy(update={"features": view.features[:3]})
    with pytest.raises(CtloopError, match="simulates the credit_score view"):
        list(stream(other, DAY, 1, StreamConfig()))
