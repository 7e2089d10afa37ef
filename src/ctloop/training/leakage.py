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


def _codes(feature: Feature, train: pd.Series, valid: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The feature's values as lookup keys: quantile bin numbers (from the training rows)
    for a number, the text for a category; missing is a key of its own (-1 / "")."""
    if feature.is_numeric:
        t = pd.to_numeric(train, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        v = pd.to_numeric(valid, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        finite = t[np.isfinite(t)]
        edges = (
            np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]))
            if finite.size
            else np.array([])
        )

        def code(x: np.ndarray) -> np.ndarray:
            out = np.searchsorted(edges, x, side="right").astype("int64")
            out[~np.isfinite(x)] = -1
            return out

        return code(t), code(v)
    return (train.astype(object).where(train.notna(), "").astype(str).to_numpy(),
            valid.astype(object).where(valid.notna(), "").astype(str).to_numpy())  # fmt: skip


def feature_skill(
    view: FeatureView, feature: Feature, train: pd.DataFrame, valid: pd.DataFrame
) -> float | None:
    """The skill of `feature` alone (see the module's doc); None when it cannot be
    measured (no training or validation rows, or a label without spread on the
    validation days, which other checks report)."""
    label = view.label.name
    if train.empty or valid.empty:
        return None
    t_codes, v_codes = _codes(feature, train[feature.name], valid[feature.name])
    if view.label.is_regression:
        yt = pd.to_numeric(train[label], errors="coerce").to_numpy(dtype="float64")
        yv = pd.to_numeric(valid[label], errors="coerce").to_numpy(dtype="float64")
        base = float(np.nanmean(yt))
        means = pd.Series(yt).groupby(t_codes).mean()
        pred = pd.Series(v_codes).map(means).fillna(base).to_numpy(dtype="float64")
        loss_base = float(np.nanmean((yv - base) ** 2))
        loss = float(np.nanmean((yv - pred) ** 2))
    else:
        yt = train[label].astype(str).to_numpy()
        yv = valid[label].astype(str).to_numpy()
        base_class = pd.Series(yt).value_counts().index[0]
        counts = pd.DataFrame({"key": t_codes, "y": yt}).groupby(["key", "y"]).size()
        majority = counts.sort_values(ascending=False).reset_index().drop_duplicates("key")
        lookup = pd.Series(majority["y"].to_numpy(), index=majority["key"].to_numpy())
        pred = pd.Series(v_codes).map(lookup).fillna(base_class).to_numpy()
        loss_base = float(np.mean(yv != base_class))
        loss = float(np.mean(yv != pred))
    if not np.isfinite(loss_base) or loss_base <= 0:
        return None
    return 1.0 - loss / loss_base


def leaky_features(
    view: FeatureView, frame: pd.DataFrame, is_validation: pd.Series
) -> tuple[list[Skill], list[Skill]]:
    """(every measured feature's skill, best first; the ones at or above the view's limit
    and not in `gates.data.leakage_allowed`)."""
    gate = view.gates.data
    train, valid = frame.loc[~is_validation], frame.loc[is_validation]
    skills = []
    for feature in view.features:
        skill = feature_skill(view, feature, train, valid)
        if skill is not None:
            skills.append(Skill(feature.name, skill))
    skills.sort(key=lambda s: -s.skill)
    allowed = set(gate.leakage_allowed)
    leaky = [
        s for s in skills if s.skill >= gate.max_single_feature_skill and s.feature not in allowed
    ]
    return skills, leaky
