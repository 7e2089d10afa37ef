"""Gate 1: refuse to train on bad data (TFX ExampleValidator style).

Every check runs and is reported, so one failing run names all that is wrong with its
data, not just the first thing. Thresholds come from the feature view's `gates.data`;
what each feature and the label allow is read by `ctloop.features.schema` (the same rules
import and serving apply); the skew check compares with the current champion's training
profile when there is one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from ctloop.core.stats import MISSING, feature_distance
from ctloop.errors import CtloopError
from ctloop.features.schema import schema_of
from ctloop.features.view import FeatureView
from ctloop.training.leakage import leaky_features


@dataclass(frozen=True)
class Check:
    """One gate check: its name, whether it passed, the measured value and the limit."""

    name: str
    passed: bool
    detail: str
    value: float | None = None
    threshold: float | None = None


@dataclass
class GateReport:
    """All checks of one gate run, kept whole so a refusal names every failed check at
    once instead of the first one."""

    gate: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """A gate passes only when every one of its checks does."""
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        """The checks a refusal names, so the log says what to fix."""
        return [c for c in self.checks if not c.passed]

    def add(
        self,
        name: str,
        passed: bool,
        detail: str,
        value: float | None = None,
        threshold: float | None = None,
    ) -> None:
        """Record one check; a NaN measurement becomes None so the report stays JSON."""
        value = None if value is None or (isinstance(value, float) and math.isnan(value)) else value
        self.checks.append(Check(name, bool(passed), detail, value, threshold))

    def summary(self) -> str:
        """One line when the gate passed, else one line per failed check, for task logs."""
        if self.passed:
            return f"{self.gate} gate passed ({len(self.checks)} checks)"
        lines = [f"{self.gate} gate FAILED: {len(self.failed)} of {len(self.checks)} checks"]
        lines += [f"  - {c.name}: {c.detail}" for c in self.failed]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON, the shape the pipeline's steps return (and XCom
        carries)."""
        return {
            "gate": self.gate,
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
        }


class DataGateError(CtloopError):
    """The data gate refused the training set; `report` names every failed check."""

    def __init__(self, report: GateReport) -> None:
        super().__init__(report.summary())
        self.report = report


def validation_start(view: FeatureView, newest: Any) -> Any:
    """The first validation day, given the newest labelled day (a date or a Timestamp):
    the training split and the pre-change window (`pipeline.training_window`) share it."""
    return newest - pd.Timedelta(days=view.training.validation_days - 1)


def split_days(view: FeatureView, frame: pd.DataFrame) -> pd.Series:
    """True for validation rows: the newest `validation_days` days that have labels.

    Labels land days late, so the newest days before the as-of date usually have none;
    the split is taken from the newest labelled day back, never at random.
    """
    if frame.empty:
        return pd.Series(False, index=frame.index)
    return frame[view.event_date] >= validation_start(view, frame[view.event_date].max())


def _check_labels(view: FeatureView, labels: pd.Series, report: GateReport) -> None:
    """Labels fit the kind: known classes in a workable balance, or finite numbers in the
    label's range (a regression target with a NaN or an impossible value stops the run)."""
    gate = view.gates.data
    report.add(*schema_of(view).label.measure(labels))
    if view.label.is_regression:
        values = pd.to_numeric(labels, errors="coerce")
        spread = float(values.std()) if values.notna().sum() > 1 else 0.0
        report.add("label_spread", spread > 0, f"label standard deviation {spread:.4g}",
                   spread, 0)  # fmt: skip
        return
    classes = view.label.class_list
    shares = labels.astype(str).value_counts(normalize=True)
    smallest = min(float(shares.get(c, 0.0)) for c in classes)
    rare = [c for c in classes if shares.get(c, 0.0) < gate.min_class_share]
    report.add(
        "label_balance", not rare,
        f"class shares {', '.join(f'{c} {shares.get(c, 0.0):.1%}' for c in classes)}"
        f" (each at least {gate.min_class_share:.1%})",
        smallest, gate.min_class_share,
    )  # fmt: skip


def _check_leakage(
    view: FeatureView, frame: pd.DataFrame, is_val: pd.Series, report: GateReport
) -> None:
    """No single feature predicts the label almost perfectly (`ctloop.training.leakage`):
    a copy of the label, or a value known only after the outcome, would be promoted on a
    perfect score and fail on every live request."""
    gate = view.gates.data
    skills, leaky = leaky_features(view, frame, is_val)
    if not skills:
        report.add("leakage", True, "not measured (no training or validation rows to score)")
        return
    limit = gate.max_single_feature_skill
    allowed = [s for s in skills if s.feature in gate.leakage_allowed and s.skill >= limit]
    if leaky:
        named = ", ".join(f"'{s.feature}' (skill {s.skill:.3f})" for s in leaky)
        detail = (
            f"target leakage: {named} alone predict(s) the label on the validation days "
            f"(limit {gate.max_single_feature_skill}); a copy of the label or a value known "
            "only after the outcome? Remove the feature, or list it in "
            "gates.data.leakage_allowed if it is genuinely that predictive"
        )
    else:
        best = skills[0]
        detail = (
            f"best single feature '{best.feature}' skill {best.skill:.3f} "
            f"(limit {gate.max_single_feature_skill})"
        )
        if allowed:
            detail += "; allowed by gates.data.leakage_allowed: " + ", ".join(
                f"'{s.feature}' ({s.skill:.3f})" for s in allowed
            )
    top = leaky[0].skill if leaky else skills[0].skill
    report.add("leakage", not leaky, detail, top, gate.max_single_feature_skill)


def check_data(
    view: FeatureView,
    frame: pd.DataFrame,
    as_of: pd.Timestamp,
    reference: dict[str, Any] | None = None,
    expected_drift: frozenset[str] = frozenset(),
    waiting_labels: int = 0,
) -> GateReport:
    """Run every data check on a training set and return the report (does not raise).

    `waiting_labels` is how many labels of the window landed after `as_of`: when too few
    rows are left, the report says they exist and why they are not used.

    `expected_drift` names features the drift monitor measured as drifted in live traffic:
    a drift-triggered retrain must learn their new distribution, so their skew from the
    champion's training data, and new values of an open category list (`allow_unseen`),
    are reported but accepted. Any other feature that moved (a silently rescaled column,
    say) still refuses the data, and a closed category list never takes a new value.

    Categories of an open list that the champion was trained on count as known, so once a
    drift retrain has learnt a new category, scheduled runs accept it too.
    """
    gate = view.gates.data
    report = GateReport("data")
    expected = [view.entity, view.event_date, *view.feature_names, view.label.name]
    missing_cols = [c for c in expected if c not in frame.columns]
    report.add(
        "schema",
        not missing_cols,
        f"missing columns: {', '.join(missing_cols)}" if missing_cols else "all columns present",
    )
    if missing_cols:
        return report

    n = len(frame)
    detail = f"{n} labelled rows (minimum {gate.min_rows})"
    if waiting_labels and n < gate.min_rows:
        detail += (
            f"; {waiting_labels} labels of this window arrived on or after the as-of date "
            f"{as_of:%Y-%m-%d} and are not used (point-in-time): train as of a later date, "
            "or check the labels' arrived_at"
        )
    report.add("min_rows", n >= gate.min_rows, detail, n, gate.min_rows)
    is_val = split_days(view, frame)
    n_val = int(is_val.sum())
    report.add(
        "min_validation_rows",
        n_val >= gate.min_validation_rows and n - n_val > 0,
        f"{n_val} validation rows in the newest {view.training.validation_days} labelled days "
        f"(minimum {gate.min_validation_rows}), {n - n_val} training rows",
        n_val,
        gate.min_validation_rows,
    )
    if n == 0:
        return report

    for rule in schema_of(view).features:
        trained: set[str] = set()
        if reference is not None:
            # an open category the champion was already trained on is no longer new
            shares = (reference["features"].get(rule.name) or {}).get("shares", {})
            trained = set(shares) - {MISSING}
        drifted = rule.name in expected_drift
        for measure in rule.measure(frame[rule.name], gate, trained, drifted):
            report.add(*measure)

    _check_labels(view, frame[view.label.name], report)
    if not view.label.is_regression:
        # with min_class_share 0 nothing else stops a one-class window, and CatBoost
        # then fails deep inside training ("Target contains only one unique value")
        seen = sorted(set(frame.loc[~is_val, view.label.name].astype(str)))
        report.add(
            "label_classes", len(seen) >= 2,
            f"training rows hold {len(seen)} class(es) ({', '.join(seen) or 'none'}); a "
            "classifier needs at least two",
            len(seen), 2,
        )  # fmt: skip
    _check_leakage(view, frame, is_val, report)

    if reference is not None:
        for feature in view.features:
            ref = reference["features"].get(feature.name)
            if ref is None:
                report.add(f"skew:{feature.name}", False, f"{feature.name}: not in the reference")
                continue
            dist = feature_distance(feature.name, ref, frame[feature.name])
            ok = not math.isnan(dist.value) and dist.value <= gate.max_skew_distance
            detail = (
                f"{feature.name}: {dist.statistic} {dist.value:.3f} from the champion's "
                f"training data (limit {gate.max_skew_distance})"
            )
            if not ok and feature.name in expected_drift:
                ok, detail = True, detail + "; accepted: drift measured by the monitor"
            report.add(f"skew:{feature.name}", ok, detail, dist.value, gate.max_skew_distance)
    return report
