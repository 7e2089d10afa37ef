"""Gate-independent training: CatBoost on a time-split set, metrics, plots, MLflow lineage.

The newest `validation_days` days are the validation set (time-based split, never random),
used for early stopping and for every reported metric. The run logs what a reviewer needs
to trust the model: params, metrics, confusion matrix, feature importance, the model with
signature and input example, the data as an MLflow dataset, and the reference profile the
data gate and the drift monitor compare later data with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from ctloop.datagate import split_days
from ctloop.featureview import FeatureView
from ctloop.predictor import to_model_frame
from ctloop.stats import profile

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "reference/profile.json"


def evaluate_proba(view: FeatureView, y_true: pd.Series, proba: np.ndarray, classes: list[str]):
    """Accuracy, macro-F1, log-loss, per-class precision/recall and ROC-AUC (one-vs-rest)."""
    order = [classes.index(c) for c in view.label.classes]
    proba = proba[:, order]
    y = y_true.astype(str).to_numpy()
    pred = np.array(view.label.classes)[proba.argmax(axis=1)]
    # sklearn's probability metrics want labels in sorted order, columns to match
    ranked = sorted(view.label.classes)
    ranked_proba = proba[:, [view.label.classes.index(c) for c in ranked]]
    out: dict[str, float] = {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "macro_f1": float(skm.f1_score(y, pred, average="macro", labels=view.label.classes)),
        "log_loss": float(skm.log_loss(y, ranked_proba, labels=ranked)),
    }
    precision, recall, _, _ = skm.precision_recall_fscore_support(
        y, pred, labels=view.label.classes, zero_division=0
    )
    for cls, p, r in zip(view.label.classes, precision, recall, strict=True):
        out[f"precision_{cls}"] = float(p)
        out[f"recall_{cls}"] = float(r)
    if len(set(y)) == len(view.label.classes):
        out["roc_auc"] = float(skm.roc_auc_score(y, ranked_proba, multi_class="ovr", labels=ranked))
    return out


@dataclass
class TrainResult:
    """What a training run produced."""

    model: Any
    metrics: dict[str, float]
    params: dict[str, Any]
    train_rows: int
    validation_rows: int
    reference: dict[str, Any]
    validation: pd.DataFrame  # the validation rows, for the champion comparison


def fit(view: FeatureView, frame: pd.DataFrame, as_of: pd.Timestamp, threads: int = 2):
    """Train CatBoost on the older days, early-stop and score on the newest days."""
    from catboost import CatBoostClassifier

    frame = frame.sort_values([view.event_date, view.entity], kind="stable").reset_index(drop=True)
    is_val = split_days(view, frame).to_numpy()
    train, valid = frame.loc[~is_val], frame.loc[is_val]
    cfg = view.training
    params: dict[str, Any] = {
        "iterations": cfg.iterations,
        "depth": cfg.depth,
        "loss_function": "MultiClass",
        "eval_metric": "TotalF1:average=Macro",
        "random_seed": cfg.seed,
        "early_stopping_rounds": cfg.early_stopping_rounds,
        "class_names": view.label.classes,
        "thread_count": threads,
        "allow_writing_files": False,
        "verbose": False,
    }
    if cfg.learning_rate is not None:
        params["learning_rate"] = cfg.learning_rate
    model = CatBoostClassifier(**params, cat_features=[f.name for f in view.categorical_features])
    model.fit(
        to_model_frame(view, train),
        train[view.label.name].astype(str),
        eval_set=(to_model_frame(view, valid), valid[view.label.name].astype(str)),
        use_best_model=True,
    )
    proba = model.predict_proba(to_model_frame(view, valid))
    classes = [str(c) for c in model.classes_]
    scores = evaluate_proba(view, valid[view.label.name], proba, classes)
    scores["best_iteration"] = float(model.get_best_iteration() or 0)
    reference = profile(view, train, seed=cfg.seed)
    pred = np.array(classes)[proba.argmax(axis=1)]
    reference["prediction"] = pd.Series(pred).value_counts(normalize=True).to_dict()
    reference["validation_metrics"] = {k: v for k, v in scores.items() if k != "best_iteration"}
    log.info(
        "trained %s on %d rows, validated on %d: %s",
        view.name, len(train), len(valid),
        ", ".join(f"{k}={v:.3f}" for k, v in scores.items() if k in ("accuracy", "macro_f1")),
    )  # fmt: skip
    return TrainResult(model, scores, params, len(train), len(valid), reference, valid)


def confusion_figure(view: FeatureView, y_true: pd.Series, y_pred: list[str]):
    """A confusion-matrix figure on the validation days."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    skm.ConfusionMatrixDisplay.from_predictions(
        y_true.astype(str), y_pred, labels=view.label.classes, ax=ax, colorbar=False
    )
    ax.set_title(f"{view.name}: validation confusion matrix")
    fig.tight_layout()
    return fig


def importance_figure(view: FeatureView, model: Any):
    """A bar chart of CatBoost's feature importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    importances = pd.Series(model.get_feature_importance(), index=view.feature_names)
    importances = importances.sort_values()
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(importances) + 1))
    ax.barh(importances.index, importances.to_numpy())
    ax.set_title(f"{view.name}: feature importance")
    fig.tight_layout()
    return fig
