"""Gate-independent training: CatBoost on a time-split set, metrics, plots, MLflow lineage.

The newest `validation_days` days are the validation set (time-based split, never
random) and nothing sees them before the model gate: early stopping watches the newest
`early_stopping_share` of the *training* rows instead, so the validation metric, and the
gate that reads it, is an honest estimate rather than the score the model was tuned to.
The loss follows the label kind (Logloss / MultiClass / RMSE); the plots too (ROC, PR and
calibration for binary, a confusion matrix for classes, residuals and predicted-vs-actual
for regression).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier, CatBoostRegressor
from sklearn import metrics as skm
from sklearn.calibration import CalibrationDisplay

from ctloop.core import metrics
from ctloop.core.predictor import Predictor, to_model_frame
from ctloop.core.stats import numeric_profile, profile
from ctloop.errors import CtloopError
from ctloop.features.view import FeatureView
from ctloop.training.datagate import split_days

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced: the model and everything registration logs with it
    (metrics, params, the reference profile, figures drawn from the validation rows and
    answers), so logging needs no second pass over the data."""

    model: Any
    metrics: dict[str, float]
    params: dict[str, Any]
    train_rows: int
    validation_rows: int
    reference: dict[str, Any]
    validation: pd.DataFrame  # the validation rows, for the champion comparison
    output: metrics.Output  # the model's answers on the validation rows
    early_stopping_rows: int = 0


def labels_of(view: FeatureView, frame: pd.DataFrame) -> pd.Series:
    """The label column typed for the model: floats for regression, text for classes."""
    y = frame[view.label.name]
    return pd.to_numeric(y).astype("float64") if view.label.is_regression else y.astype(str)


def catboost_params(view: FeatureView, threads: int = 2) -> dict[str, Any]:
    """CatBoost's parameters for the view: its kind's loss, the view's training section."""
    cfg, kind = view.training, view.label.kind
    params: dict[str, Any] = {
        "iterations": cfg.iterations,
        "depth": cfg.depth,
        "loss_function": metrics.CATBOOST_LOSS[kind],
        "eval_metric": metrics.CATBOOST_LOSS[kind],
        "random_seed": cfg.seed,
        "thread_count": threads,
        "allow_writing_files": False,
        "verbose": False,
    }
    if cfg.early_stopping_share > 0:
        params["early_stopping_rounds"] = cfg.early_stopping_rounds
    if not view.label.is_regression:
        params["class_names"] = view.label.class_list
    if cfg.learning_rate is not None:
        params["learning_rate"] = cfg.learning_rate
    return params


def new_model(view: FeatureView, params: dict[str, Any]) -> Any:
    """An unfitted CatBoost classifier or regressor, by the view's label kind."""
    cls = CatBoostRegressor if view.label.is_regression else CatBoostClassifier
    return cls(**params, cat_features=[f.name for f in view.categorical_features])


def early_stopping_split(view: FeatureView, train: pd.DataFrame) -> np.ndarray:
    """True for the newest `early_stopping_share` of the (time-sorted) training rows.

    Rows of one event date stay on one side, so the slice is a true "later" period; a
    split that would leave either side empty disables early stopping (all False).
    """
    share = view.training.early_stopping_share
    n = len(train)
    if share <= 0 or n < 10:
        return np.zeros(n, dtype=bool)
    days = train[view.event_date].to_numpy()
    cut_day = days[int(n * (1 - share))]
    mask = days >= cut_day
    if mask.all() or not mask.any():
        mask = np.zeros(n, dtype=bool)
    return mask


def fit(
    view: FeatureView,
    frame: pd.DataFrame,
    as_of: pd.Timestamp,
    threads: int = 2,
    weigh_before: pd.Timestamp | None = None,
):
    """Train CatBoost on the older days, early-stop on their newest slice, score on the
    validation days nothing has seen. Rows dated before `weigh_before` (a concept change)
    count `training.pre_change_weight` as much as the others."""
    frame = frame.sort_values([view.event_date, view.entity], kind="stable").reset_index(drop=True)
    is_val = split_days(view, frame).to_numpy()
    train, valid = frame.loc[~is_val], frame.loc[is_val]
    params = catboost_params(view, threads)
    stop = early_stopping_split(view, train)
    fit_rows, stop_rows = train.loc[~stop], train.loc[stop]
    kwargs: dict[str, Any] = {}
    if weigh_before is not None:
        older = (pd.to_datetime(fit_rows[view.event_date]) < weigh_before).to_numpy()
        kwargs["sample_weight"] = np.where(older, view.training.pre_change_weight, 1.0)
    if len(stop_rows):
        kwargs["eval_set"] = (to_model_frame(view, stop_rows), labels_of(view, stop_rows))
        kwargs["use_best_model"] = True
    else:
        params.pop("early_stopping_rounds", None)
    if not view.label.is_regression:
        absent = sorted(set(view.label.class_list) - set(labels_of(view, fit_rows)))
        if absent:  # CatBoost cannot fit a class it never sees (binary: not at all)
            raise CtloopError(
                f"class(es) {', '.join(absent)} have no rows in the training part of the "
                f"window (before the newest {view.training.validation_days} validation days "
                "and the early-stopping slice): widen training.window_days or wait for labels"
            )
    model = new_model(view, params)
    model.fit(to_model_frame(view, fit_rows), labels_of(view, fit_rows), **kwargs)
    predictor = Predictor(view, model, "candidate", "")
    output = predictor.predict(valid)
    scores = metrics.score(view, valid[view.label.name], output)
    scores["best_iteration"] = float(model.get_best_iteration() or model.tree_count_ or 0)
    reference = profile(view, train, seed=view.training.seed)
    reference["prediction"] = prediction_profile(view, output, view.training.seed)
    reference["validation_metrics"] = {k: v for k, v in scores.items() if k != "best_iteration"}
    # how much the validation figure itself could move by chance: the monitor's decay limit
    # adds it to the live figure's own noise
    primary = view.primary_metric
    reference["validation_se"] = {
        primary: metrics.bootstrap_se(
            view, valid[view.label.name], output, primary, view.training.seed
        )
    }
    reference["primary_metric"] = view.primary_metric
    log.info(
        "trained %s (%s) on %d rows (early stopping on %d), validated on %d: %s=%.4f",
        view.name, view.label.kind, len(fit_rows), len(stop_rows), len(valid),
        view.primary_metric, scores.get(view.primary_metric, float("nan")),
    )  # fmt: skip
    return TrainResult(
        model, scores, params, len(train), len(valid), reference, valid, output, len(stop_rows)
    )


def prediction_profile(view: FeatureView, output: metrics.Output, seed: int) -> dict[str, Any]:
    """The reference the monitor's prediction drift compares with: predicted-class shares
    for classes, plus the score's (binary) or the value's (regression) distribution."""
    out: dict[str, Any] = {"count": len(output.predictions)}
    if not view.label.is_regression:
        out["shares"] = pd.Series(output.predictions).value_counts(normalize=True).to_dict()
    column = output.values if view.label.is_regression else output.score_column(view)
    if column is not None:
        out["distribution"] = numeric_profile(pd.Series(column), np.random.default_rng(seed))
    return out


def _pyplot() -> Any:
    # (c) heavy, and only for figures; the non-GUI backend must be chosen before pyplot loads
    import matplotlib  # (c) heavy, figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # (c) heavy, figures only

    return plt


def evaluation_figures(
    view: FeatureView, y_true: pd.Series, output: metrics.Output
) -> dict[str, Any]:
    """The validation plots a reviewer expects for the view's kind, by artifact name."""
    plt = _pyplot()
    figures: dict[str, Any] = {}
    title = f"{view.name}: validation days"
    if view.label.is_regression:
        y = pd.to_numeric(y_true).to_numpy(dtype=float)
        for kind, name in (("actual_vs_predicted", "predicted_vs_actual"),
                           ("residual_vs_predicted", "residuals")):  # fmt: skip
            fig, ax = plt.subplots(figsize=(5, 4.5))
            skm.PredictionErrorDisplay.from_predictions(
                y, output.values, kind=kind, ax=ax, random_state=0
            )
            ax.set_title(f"{title}, {name.replace('_', ' ')}")
            fig.tight_layout()
            figures[f"plots/{name}.png"] = fig
        return figures
    fig, ax = plt.subplots(figsize=(5, 4.5))
    skm.ConfusionMatrixDisplay.from_predictions(
        y_true.astype(str), [str(p) for p in output.predictions],
        labels=view.label.class_list, ax=ax, colorbar=False,
    )  # fmt: skip
    ax.set_title(f"{title}, confusion matrix")
    fig.tight_layout()
    figures["plots/confusion_matrix.png"] = fig
    truth = (y_true.astype(str) == view.label.positive_class).to_numpy()
    if view.label.is_binary and 0 < truth.sum() < len(truth):
        score = output.score_column(view)
        for name, display in (("roc_curve", skm.RocCurveDisplay),
                              ("precision_recall", skm.PrecisionRecallDisplay)):  # fmt: skip
            fig, ax = plt.subplots(figsize=(5, 4.5))
            label = f"positive: {view.label.positive_class}"
            display.from_predictions(truth, score, ax=ax, name=label)
            ax.set_title(f"{title}, {name.replace('_', ' ')}")
            fig.tight_layout()
            figures[f"plots/{name}.png"] = fig
        fig, ax = plt.subplots(figsize=(5, 4.5))
        CalibrationDisplay.from_predictions(truth, score, n_bins=10, strategy="quantile", ax=ax)
        ax.set_title(f"{title}, calibration")
        fig.tight_layout()
        figures["plots/calibration.png"] = fig
    return figures


def importance_figure(view: FeatureView, model: Any):
    """A bar chart of CatBoost's feature importances."""
    plt = _pyplot()
    importances = pd.Series(model.get_feature_importance(), index=view.feature_names)
    importances = importances.sort_values()
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(importances) + 1))
    ax.barh(importances.index, importances.to_numpy())
    ax.set_title(f"{view.name}: feature importance")
    fig.tight_layout()
    return fig
