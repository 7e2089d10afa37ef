"""Gate 1 as a pure function: what a drift-triggered retrain may accept, and what never.

`check_data` takes frames and a reference profile, so these tests need no database; the
gate inside a real run is tested in tests/integration/test_pipeline.py and test_gates_attack.py.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from ctloop.core.stats import profile
from ctloop.features.frames import good_rows, resolve_columns, validate_frame
from ctloop.features.view import FeatureView, load_view_file
from ctloop.ingest.sample import sample_frame
from ctloop.ingest.synth import NEW_OCCUPATION, Scenario, StreamConfig, generate_day
from ctloop.training.datagate import GateReport, check_data
from tests.support.paths import ROOT

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


# ------------------------------------------------------------------- target leakage (issue 18)


def with_feature(view: FeatureView, feature: dict, **data_gate: object) -> FeatureView:
    """The view with one more feature (and data-gate settings), validated as if loaded."""
    raw = view.model_dump(by_alias=True, exclude_none=True)
    raw["features"] = [*raw["features"], feature]
    raw["gates"]["data"].update(data_gate)
    return FeatureView.model_validate(raw)


def sample_view_frame(name: str) -> tuple[FeatureView, pd.DataFrame]:
    """An example view and its sample data, typed as the training set would be."""
    view = load_view_file(ROOT / "examples" / "views" / f"{name}.yaml")
    resolved = resolve_columns(view, sample_frame(name).astype(str))
    features, labels = good_rows(validate_frame(view, resolved.frame))
    return view, features.merge(labels, on=[view.entity, view.event_date])


def test_a_categorical_copy_of_a_multiclass_label_is_refused_and_named(
    view: FeatureView, frames: dict[str, pd.DataFrame]
) -> None:
    classes = view.label.class_list
    leaky = with_feature(view, {"name": "outcome_code", "type": "categorical",
                                "categories": classes})  # fmt: skip
    frame = frames["before"].assign(outcome_code=frames["before"][view.label.name])
    report = check_data(leaky, frame, AS_OF)
    passed, detail = check(report, "leakage")
    assert not passed
    assert "'outcome_code' (skill 1.000)" in detail and "target leakage" in detail
    assert [c.name for c in report.failed] == ["leakage"]
    # a feature the owner says is genuinely that predictive can be allowed, by name
    feature = {"name": "outcome_code", "type": "categorical", "categories": classes}
    allowed = with_feature(view, feature, leakage_allowed=["outcome_code"])
    passed, detail = check(check_data(allowed, frame, AS_OF), "leakage")
    assert passed and "allowed by gates.data.leakage_allowed: 'outcome_code'" in detail


def test_a_numeric_copy_of_a_regression_label_is_refused_and_named() -> None:
    view, frame = sample_view_frame("diabetes")
    leaky = with_feature(view, {"name": "progress_later", "type": "numeric"})
    frame = frame.assign(progress_later=frame[view.label.name] + 0.01)
    passed, detail = check(check_data(leaky, frame, AS_OF), "leakage")
    assert not passed and "'progress_later'" in detail


def test_a_numeric_code_of_a_binary_label_is_refused_and_named() -> None:
    view, frame = sample_view_frame("breast_cancer")
    leaky = with_feature(view, {"name": "biopsy_result", "type": "numeric"})
    code = (frame[view.label.name] == view.label.positive_class).astype(float)
    passed, detail = check(check_data(leaky, frame.assign(biopsy_result=code), AS_OF), "leakage")
    assert not passed and "'biopsy_result'" in detail


@pytest.mark.parametrize("name", ["breast_cancer", "diabetes", "wine"])
def test_the_shipped_examples_have_no_leaky_feature(name: str) -> None:
    view, frame = sample_view_frame(name)
    passed, detail = check(check_data(view, frame, AS_OF), "leakage")
    assert passed, detail


def test_the_shipped_view_has_no_leaky_feature(
    view: FeatureView, frames: dict[str, pd.DataFrame]
) -> None:
    passed, detail = check(check_data(view, frames["before"], AS_OF), "leakage")
    assert passed and detail.startswith("best single feature"), detail


def test_leakage_allowed_must_name_a_feature(view: FeatureView) -> None:
    with pytest.raises(ValueError, match="leakage_allowed names 'nope'"):
        with_feature(view, {"name": "x", "type": "numeric"}, leakage_allowed=["nope"])


def test_a_one_class_window_is_refused_even_with_min_class_share_0(
    view: FeatureView, frames: dict[str, pd.DataFrame]
) -> None:
    """Nothing else stops it with `min_class_share: 0`, and CatBoost then crashed inside
    training ("Target contains only one unique value")."""
    raw = view.model_dump(by_alias=True, exclude_none=True)
    raw["gates"]["data"]["min_class_share"] = 0
    lenient = FeatureView.model_validate(raw)
    frame = frames["before"].assign(**{view.label.name: view.label.class_list[0]})
    report = check_data(lenient, frame, AS_OF)
    passed, detail = check(report, "label_classes")
    assert not passed and "training rows hold 1 class(es)" in detail
    assert check(check_data(lenient, frames["before"], AS_OF), "label_classes")[0]
