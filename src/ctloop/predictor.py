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

from ctloop.featureview import FeatureView
from ctloop.stats import MISSING


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
    """A CatBoost model with its registry identity, ready to answer requests."""

    view: FeatureView
    model: Any
    version: str
    model_uri: str
    loaded_at: float = field(default_factory=time.time)
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.model.classes_]

    @classmethod
    def load(cls, view: FeatureView, model_uri: str, version: str) -> Predictor:
        """Load a registered model in its native CatBoost flavour."""
        import mlflow.catboost

        return cls(view, mlflow.catboost.load_model(model_uri), str(version), model_uri)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities, columns in `self.classes` order."""
        return self.model.predict_proba(to_model_frame(self.view, frame))

    def predict(self, frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
        """Predicted classes and their probability rows."""
        proba = self.predict_proba(frame)
        return [self.classes[i] for i in proba.argmax(axis=1)], proba
