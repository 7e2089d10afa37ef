"""Gate 1 as a pure function: what a drift-triggered retrain may accept, and what never.

`check_data` takes frames and a reference profile, so these tests need no database; the
gate inside a real run is tested in tests/integration/test_pipeline.py and test_gates_attack.py.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from ctloop.core.stats import profile
from ctloop.features.view import FeatureView
from ctloop.ingest.synth import NEW_OCCUPATION, Scenario, StreamConfig, generate_day
from ctloop.training.datagate import GateReport, check_data

DAY = dt.date(2026, 5, 1)
AS_OF = pd.Timestamp(DAY + dt.timedelta(days=10))


def training_frame(view: FeatureView, scenario: Scenario, seed: int = 3) -> pd.DataFrame:
    """Ten labelled days of the synthetic stream, drifted from the first day on."""
    config = StreamConfig(seed=seed, rows_per_day=400, label_delay_days=0, scenario=scenario,
                          drift_start=DAY)  # fmt: skip
    days = []
    for offset in range(10):
        features, labels = generate_day(DAY + dt.timedelta(days=offset), config)
        keys = [view.entity, view.event_date]
        days.append(features.merge(labels[[*keys, view.label.name]], on=keys))
    frame = pd.concat(days, ignore_index=True)
    frame[view.event_date] = pd.to_datetime(frame[view.event_date])
    return frame


def check(report: GateReport, name: str) -> tuple[bool, str]:
    found = next(c for c in report.checks if c.name == name)
    return found.passed, found.detail


@pytest.fixture(scope="module")
def frames(view: FeatureView) -> dict[str, pd.DataFrame]:
    return {
        "before": training_frame(view, Scenario.NONE),
        "shifted": training_frame(view, Scenario.COVARIATE_SHIFT, seed=4),
    }


def test_a_new_open_category_refuses_a_run_the_monitor_did_not_ask_for(
    view: FeatureView, frames: dict[str, pd.DataFrame]
) -> None:
    reference = profile(view, frames["before"])
    shifted = frames["shifted"]
    assert (shifted["occupation"] == NEW_OCCUPATION).mean() > 0.1
    report = check_data(view, shifted, AS_OF, reference)
    passed, detail = check(report, "categories:occupation")
    assert not passed and NEW_OCCUPATION in detail
    assert not check(report, "skew:annual_income")[0]


def test_a_drift_retrain_accepts_what_the_monitor_measured_and_nothing_else(
    view: FeatureView, frames: dict[str, pd.DataFrame]
) -> None:
    reference = profile(view, frames["before"])
    shifted = frames["shifted"]
    plain = check_data(view, shifted, AS_OF, reference)
    moved = {c.name.split(":", 1)[1] for c in plain.failed if ":" in c.name}
    assert "occupation" in moved and "annual_income" in moved
    measured = frozenset(moved - {"annual_income"})
    report = check_data(view, shifted, AS_OF, reference, expected_drift=measured)
    passed, detail = check(report, "categories:occupation")
    assert passed and "accepted: drift measured by the monitor" in detail
    # a feature that moved but was not measured by the monitor still refuses the data
    assert [c.name for c in report.failed] == ["skew:annual_income"]


def test_a_closed_category_list_never_takes_a_new_value(
    view: FeatureView, frames: dict[str, pd.DataFrame]
) -> None:
    reference = profile(view, frames["before"])
    frame = frames["before"].copy()
    frame.loc[frame.index[:50], "credit_mix"] = "Excellent"
    report = check_data(view, frame, AS_OF, reference, expected_drift=frozenset({"credit_mix"}))
    passed, detail = check(report, "categories:credit_mix")
    assert not passed and "Excellent" in detail and "accepted" not in detail


def test_once_the_champion_learnt_a_new_category_scheduled_runs_accept_it(
    view: FeatureView, frames: dict[str, pd.DataFrame]
) -> None:
    """After a drift retrain trained on gig workers, the next scheduled run (no expected
    drift) must not be refused for the category its champion already knows."""
    retrained_on = profile(view, frames["shifted"])
    later = training_frame(view, Scenario.COVARIATE_SHIFT, seed=5)
    report = check_data(view, later, AS_OF, retrained_on)
    assert check(report, "categories:occupation")[0]
    assert report.passed, report.summary()
    # without a champion only the view's own list counts
    assert not check(check_data(view, later, AS_OF, None), "categories:occupation")[0]
