"""A loaded model as serving uses it: the one loading path shared by infra check and service.

The TFX InfraValidator idea is to load and query a candidate exactly as production will
before it is pushed; that only holds if both use this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ctloop.core.metrics import Output, output_from_proba, output_from_values
from ctloop.core.stats import MISSING
from ctloop.features.view import FeatureView


def to_model_frame(view: FeatureView, frame: pd.DataFrame) -> pd.DataFrame:
    """Feature columns in view order, typed as the model was trained on them.

    Categorical values become plain strings with missing ones as an explicit category
    (CatBoost refuses NaN in categorical features); numeric ones become float64 with NaN.
    """
    out = {}
    for feature in view.features:
        col = frame[feature.name] if feature.name in frame.columns else pd.Series(
            [None] * len(frame), index=frame.index
        )  # fmt: skip
        if feature.is_numeric:
            out[feature.name] = pd.to_numeric(col, errors="coerce").astype("float64")
        else:
            out[feature.name] = col.astype(object).where(col.notna(), MISSING).astype(str)
    return pd.DataFrame(out, index=frame.index)


@dataclass
class Predictor:
    """A CatBoost model (classifier or regressor) with its registry identity.

    Every answer comes back as a `metrics.Output` in the view's terms (probability columns
    in the view's class order, the binary decision threshold applied), so the gate, the
    infra check, the monitor and serving never look at the model's own class order.
    """

    view: FeatureView
    model: Any
    version: str
    model_uri: str
    loaded_at: float = field(default_factory=time.time)
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # the model's own class order (a CatBoostRegressor's `classes_` is empty)
        self.classes = [str(c) for c in getattr(self.model, "classes_", [])]

    @classmethod
    def load(cls, view: FeatureView, model_uri: str, version: str) -> Predictor:
        """Load a registered model in its native CatBoost flavour (MLflow records whether
        it is a classifier or a regressor)."""
        import mlflow.catboost  # (c) heavy: only serving and the gates load models

        return cls(view, mlflow.catboost.load_model(model_uri), str(version), model_uri)

    @property
    def is_regressor(self) -> bool:
        """A model without classes answers values, not probabilities."""
        return not self.classes

    def answer(self, rows: Any, thread_count: int = -1) -> Output:
        """The model's answer for model-ready rows (a typed frame or `model_rows` lists)."""
        if self.is_regressor:
            return output_from_values(self.model.predict(rows, thread_count=thread_count))
        proba = self.model.predict_proba(rows, thread_count=thread_count)
        return output_from_proba(self.view, proba, self.classes)

    def predict(self, frame: pd.DataFrame) -> Output:
        """Answer the rows of a frame that holds the view's feature columns."""
        return self.answer(to_model_frame(self.view, frame))


def kind_problems(view: FeatureView, predictor: Predictor) -> list[str]:
    """Is this a model for this view at all: a regressor for a regression label, a
    classifier with exactly the view's classes otherwise (empty: it is)."""
    if view.label.is_regression != predictor.is_regressor:
        kind = "regressor" if predictor.is_regressor else "classifier"
        return [f"a {kind} for a {view.label.kind} view"]
    if sorted(predictor.classes) != sorted(view.label.class_list):
        return [f"model classes {predictor.classes} != view classes"]
    return []


def answer_problems(view: FeatureView, output: Output, rows: int) -> list[str]:
    """What is wrong with a model's answers to `rows` rows (empty: fit to serve). The one
    definition of "answers as served" that the infra check and serving's loader share."""
    problems = []
    if view.label.is_regression:
        values = output.values
        if values is None or values.shape != (rows,):
            problems.append(f"values have shape {None if values is None else values.shape}")
        elif not np.isfinite(values).all():
            problems.append("predicted values are not finite")
        return problems
    proba = output.proba
    if proba is None or proba.shape != (rows, len(view.label.class_list)):
        problems.append(f"probabilities have shape {None if proba is None else proba.shape}")
    elif not np.isfinite(proba).all() or not np.allclose(proba.sum(axis=1), 1, atol=1e-6):
        problems.append("probabilities are not finite or do not sum to 1")
    if set(output.predictions) - set(view.label.class_list):
        problems.append("predicted an unknown class")
    return problems
