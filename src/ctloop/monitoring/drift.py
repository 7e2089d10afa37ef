"""Drift statistics over a window of logged traffic against the model's training reference.

Data drift per feature (normed Wasserstein / Jensen-Shannon, PSI reported alongside,
unseen categories and missing-rate changes) and prediction drift (Jensen-Shannon of the
predicted-class shares; normed Wasserstein of a binary score or a regression value).
Each threshold is raised to the window's noise floor, so a small window does not alarm
on sampling noise. Pure functions of a window's summary (`core.summary`: computed from
rows by `summarize_rows`, or by the database) and the reference dictionary.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ctloop.core.stats import js_distance, noise_floor, z_for
from ctloop.core.summary import (
    CategoricalSummary,
    NumericSummary,
    WindowSummary,
    bucket_edges,
    categorical_summary,
    numeric_summary,
    shares,
    summary_distance,
    summary_wasserstein,
)
from ctloop.features.view import FeatureView
from ctloop.monitoring.live import logged_output
from ctloop.monitoring.result import Finding


def summarize_rows(
    view: FeatureView, reference: dict[str, Any], logs: pd.DataFrame
) -> WindowSummary:
    """The window's summary computed here from its rows (what the database computes with
    GROUP BY in `predlog.summaries`, to rounding)."""
    features: dict[str, NumericSummary | CategoricalSummary] = {}
    for feature in view.features:
        ref = reference["features"].get(feature.name)
        if ref is None or feature.name not in logs.columns:
            continue
        column = logs[feature.name]
        features[feature.name] = (
            numeric_summary(column, bucket_edges(ref))
            if ref["type"] == "numeric"
            else categorical_summary(column)
        )
    predictions = output = None
    if not view.label.is_regression and "prediction" in logs.columns:
        predictions = categorical_summary(logs["prediction"].astype(str))
    distribution = reference.get("prediction", {}).get("distribution")
    if distribution is not None and len(logs):
        answers = logged_output(view, logs)
        values = answers.values if view.label.is_regression else answers.score_column(view)
        if values is not None:
            output = numeric_summary(pd.Series(values, dtype=float), bucket_edges(distribution))
    return WindowSummary(len(logs), features, predictions, output)


def data_drift(
    view: FeatureView, reference: dict[str, Any], window: WindowSummary
) -> list[Finding]:
    """Per-feature distance, PSI, unseen categories and missing-rate change.

    A feature drifts when its distance passes the larger of the view's threshold and the
    window's noise floor (`stats.noise_floor` at the check's `false_alarm_rate`, shared by
    all features), so small windows do not alarm on sampling noise; the floor is reported
    as `noise_floor`: the smallest shift this window can see.
    """
    policy = view.drift
    present = [f for f in view.features if reference["features"].get(f.name) is not None
               and f.name in window.features]  # fmt: skip
    z = z_for(policy.false_alarm_rate, len(present))
    out: list[Finding] = []
    for feature in present:
        ref = reference["features"][feature.name]
        summary = window.features[feature.name]
        dist = summary_distance(feature.name, ref, summary)
        n = summary.present if isinstance(summary, NumericSummary) else summary.rows
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
    view: FeatureView, reference: dict[str, Any], window: WindowSummary
) -> list[Finding]:
    """Has what the model answers moved? Class shares (Jensen-Shannon) for classes; the
    score's (binary) or the value's (regression) distribution (normed Wasserstein)."""
    policy = view.drift
    ref = reference.get("prediction", {})
    z = z_for(policy.false_alarm_rate, 2 if view.label.is_binary else 1)  # tests below
    out: list[Finding] = []
    ref_shares: dict[str, float] = {}
    if not view.label.is_regression:
        # models trained before label kinds stored the shares at the top level
        table = ref["shares"] if isinstance(ref.get("shares"), dict) else ref
        ref_shares = {k: v for k, v in table.items() if not isinstance(v, dict)}
    if ref_shares and window.predictions is not None:
        dist = js_distance(ref_shares, shares(window.predictions))
        counted = {"type": "categorical", "shares": ref_shares, "count": ref.get("count", 0)}
        floor = noise_floor(counted, window.predictions.rows, z)
        limit = max(policy.prediction_threshold, floor)
        out.append(Finding("prediction", "prediction", "jensen_shannon", dist, limit,
                           bool(math.isfinite(dist) and dist > limit)))  # fmt: skip
    distribution = ref.get("distribution")
    if distribution is not None and window.output is not None:
        sample = np.asarray(distribution["sample"], dtype=float)
        dist = summary_wasserstein(sample, window.output)
        floor = noise_floor({"type": "numeric", **distribution}, window.output.present, z)
        limit = max(policy.prediction_threshold, floor)
        what = "value" if view.label.is_regression else "score"
        out.append(Finding("prediction", what, "normed_wasserstein", dist, limit,
                           bool(math.isfinite(dist) and dist > limit)))  # fmt: skip
    return out
