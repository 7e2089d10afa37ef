"""Target leakage: a single feature that predicts the label almost perfectly.

A feature equal to the label (or computed from it, or recorded after the outcome) gave a
macro-F1 of 1.0 at the first iteration and was promoted without a word: every gate
compares models with models, and the leaky one wins. Real signal is never that clean, so
the data gate measures each feature alone.

The measure is one simple model per feature, the same for every label kind and feature
type: a lookup table from the feature's value (its category, or its quantile bin for a
number; missing is a value of its own) to the training rows' majority class or mean label,
fitted on the training days and scored on the validation days the model gate uses. Its
skill is `1 - loss / loss of the label alone` (misclassification rate for binary and
multiclass, squared error for regression): 0 for a feature that says nothing, 1 for a
copy of the label. Scoring on later days keeps an identifier-like feature (a unique value
per row) from looking perfect on the rows it was fitted on. Chosen over mutual information
or correlation because one figure means the same thing for all three kinds, needs no
estimator tuning, and catches non-monotone and categorical copies that a correlation misses.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ctloop.features.view import Feature, FeatureView

BINS = 64
"""Quantile bins of a numeric feature: fine enough that a copy of a regression label keeps
a skill near 1 (about 0.999), coarse enough to need no tuning."""


class Skill(NamedTuple):
    """How well one feature alone predicts the label on the validation days."""

    feature: str
    skill: float


def _codes(feature: Feature, train: pd.Series, valid: pd.Series) -> tuple[np.ndarray, int]:
    """The feature's values as lookup keys 0..n-1 over training then validation rows
    (quantile bins cut on the training rows for a number, the category for a category;
    missing is a key of its own), and n. Integer keys let the lookup be counted with
    `np.bincount`: a million rows take well under a second per feature."""
    if feature.is_numeric:
        t = pd.to_numeric(train, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        v = pd.to_numeric(valid, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        finite = t[np.isfinite(t)]
        edges = (
            np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]))
            if finite.size
            else np.array([])
        )
        values = np.concatenate([t, v])
        codes = np.searchsorted(edges, values, side="right").astype("int64") + 1
        codes[~np.isfinite(values)] = 0
        return codes, len(edges) + 2
    codes, uniques = pd.factorize(
        pd.concat([train, valid], ignore_index=True), use_na_sentinel=True
    )
    codes = np.asarray(codes, dtype="int64") + 1  # missing (-1) becomes key 0
    return codes, len(uniques) + 1


class _Target(NamedTuple):
    """The label of the training and validation rows, encoded once per gate run: class
    numbers (classification) or floats (regression)."""

    train: np.ndarray
    valid: np.ndarray
    n_classes: int  # 0 for regression


def _target(view: FeatureView, train: pd.DataFrame, valid: pd.DataFrame) -> _Target:
    label = view.label.name
    both = pd.concat([train[label], valid[label]], ignore_index=True)
    if view.label.is_regression:
        y = pd.to_numeric(both, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        return _Target(y[: len(train)], y[len(train) :], 0)
    codes, classes = pd.factorize(both.astype(str))
    y = np.asarray(codes, dtype="int64")
    return _Target(y[: len(train)], y[len(train) :], len(classes))


def feature_skill(
    feature: Feature, train: pd.Series, valid: pd.Series, target: _Target
) -> float | None:
    """The skill of `feature` alone (see the module's doc); None when it cannot be
    measured (a label without spread on the validation days, which other checks report)."""
    codes, n_keys = _codes(feature, train, valid)
    kt, kv = codes[: len(train)], codes[len(train) :]
    yt, yv, k = target
    if k == 0:  # regression
        known = np.isfinite(yt)
        base = float(yt[known].mean()) if known.any() else np.nan
        counts = np.bincount(kt[known], minlength=n_keys)
        sums = np.bincount(kt[known], weights=yt[known], minlength=n_keys)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), base)
        loss_base = float(np.nanmean((yv - base) ** 2))
        loss = float(np.nanmean((yv - means[kv]) ** 2))
    else:
        table = np.bincount(kt * k + yt, minlength=n_keys * k).reshape(n_keys, k)
        base_class = int(np.bincount(yt, minlength=k).argmax())
        majority = np.where(table.sum(axis=1) > 0, table.argmax(axis=1), base_class)
        loss_base = float(np.mean(yv != base_class))
        loss = float(np.mean(yv != majority[kv]))
    if not np.isfinite(loss_base) or loss_base <= 0:
        return None
    return 1.0 - loss / loss_base


def leaky_features(
    view: FeatureView, frame: pd.DataFrame, is_validation: pd.Series
) -> tuple[list[Skill], list[Skill]]:
    """(every measured feature's skill, best first; the ones at or above the view's limit
    and not in `gates.data.leakage_allowed`). Nothing is measured without training and
    validation rows."""
    gate = view.gates.data
    mask = is_validation.to_numpy(dtype=bool)
    train, valid = frame.loc[~mask], frame.loc[mask]
    if train.empty or valid.empty:
        return [], []
    target = _target(view, train, valid)
    skills = []
    for feature in view.features:
        skill = feature_skill(feature, train[feature.name], valid[feature.name], target)
        if skill is not None:
            skills.append(Skill(feature.name, skill))
    skills.sort(key=lambda s: -s.skill)
    allowed = set(gate.leakage_allowed)
    limit = gate.max_single_feature_skill
    leaky = [s for s in skills if s.skill >= limit and s.feature not in allowed]
    return skills, leaky
