"""Drift statistics over a window of logged traffic against the model's training reference.

Data drift per feature (normed Wasserstein / Jensen-Shannon, PSI reported alongside,
unseen categories and missing-rate changes) and prediction drift (Jensen-Shannon of the
predicted-class shares; normed Wasserstein of a binary score or a regression value).
Each threshold is raised to the window's noise floor, so a small window does not alarm
on sampling noise. Pure functions of frames and the reference dictionary.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ctloop.core.stats import feature_distance, js_distance, noise_floor, normed_wasserstein, z_for
from ctloop.features.view import FeatureView
from ctloop.monitoring.live import logged_output
from ctloop.monitoring.result import Finding


def data_drift(view: FeatureView, reference: dict[str, Any], logs: pd.DataFrame) -> list[Finding]:
    """Per-feature distance, PSI, unseen categories and missing-rate change.

    A feature drifts when its distance passes the larger of the view's threshold and the
    window's noise floor (`stats.noise_floor` at the check's `false_alarm_rate`, shared by
    all features), so small windows do not alarm on sampling noise; the floor is reported
    as `noise_floor`: the smallest shift this window can see.
    """
    policy = view.drift
    present = [f for f in view.features if reference["features"].get(f.name) is not None
               and f.name in logs.columns]  # fmt: skip
    z = z_for(policy.false_alarm_rate, len(present))
    out: list[Finding] = []
    for feature in present:
        ref = reference["features"][feature.name]
        column = logs[feature.name]
        dist = feature_distance(feature.name, ref, column)
        n = int(column.notna().sum()) if feature.is_numeric else len(column)
        floor = noise_floor(ref, n, z)
        limit = policy.numeric_threshold if feature.is_numeric else policy.categorical_threshold
        limit = max(limit, floor)
        drifted = bool(math.isfinite(dist.value) and dist.value > limit)
        out.append(Finding("data", feature.name, dist.statistic, dist.value, limit, drifted))
        out.append(Finding("data", feature.name, "noise_floor", floor, None, False))
        out.append(Finding("data", feature.name, "psi", dist.psi, policy.psi_threshold,
                           bool(dist.psi > policy.psi_threshold)))  # fmt: skip
        change = abs(dist.missing_rate_cur - dist.missing_rate_ref)
        out.append(Finding("data", feature.name, "missing_rate_change", change, 0.1, change > 0.1))
        if not feature.is_numeric:
            out.append(Finding("data", feature.name, "unseen_share", dist.unseen_share,
                               policy.categorical_threshold,
                               dist.unseen_share > policy.categorical_threshold))  # fmt: skip
    return out


def prediction_drift(
    view: FeatureView, reference: dict[str, Any], logs: pd.DataFrame
) -> list[Finding]:
    """Has what the model answers moved? Class shares (Jensen-Shannon) for classes; the
    score's (binary) or the value's (regression) distribution (normed Wasserstein)."""
    policy = view.drift
    ref = reference.get("prediction", {})
    z = z_for(policy.false_alarm_rate, 2 if view.label.is_binary else 1)  # tests below
    out: list[Finding] = []
    shares: dict[str, float] = {}
    if not view.label.is_regression:
        # models trained before label kinds stored the shares at the top level
        table = ref["shares"] if isinstance(ref.get("shares"), dict) else ref
        shares = {k: v for k, v in table.items() if not isinstance(v, dict)}
    if shares:
        cur = logs["prediction"].astype(str).value_counts(normalize=True).to_dict()
        dist = js_distance(shares, cur)
        counted = {"type": "categorical", "shares": shares, "count": ref.get("count", 0)}
        floor = noise_floor(counted, len(logs), z)
        limit = max(policy.prediction_threshold, floor)
        out.append(Finding("prediction", "prediction", "jensen_shannon", dist, limit,
                           bool(math.isfinite(dist) and dist > limit)))  # fmt: skip
    distribution = ref.get("distribution")
    if distribution is not None:
        output = logged_output(view, logs)
        column = output.values if view.label.is_regression else output.score_column(view)
        if column is not None:
            cur = np.asarray(column, dtype=float)
            dist = normed_wasserstein(np.asarray(distribution["sample"], dtype=float), cur)
            floor = noise_floor({"type": "numeric", **distribution}, len(cur), z)
            limit = max(policy.prediction_threshold, floor)
            what = "value" if view.label.is_regression else "score"
            out.append(Finding("prediction", what, "normed_wasserstein", dist, limit,
                               bool(math.isfinite(dist) and dist > limit)))  # fmt: skip
    return out
