"""How a model's output is scored, by label kind.

Which metrics exist, which way is better and how a tolerance is read is the view
contract's table (`ctloop.features.kinds`, re-exported here); this module computes them.

Every consumer (training's validation metrics, the model gate, the monitor's live metric,
`ctloop models`, the demo) scores through `score`, so a metric means the same number
everywhere. Tolerances (`gates.model.max_degradation`, `drift.max_accuracy_drop`) are
absolute for metrics bounded to [0, 1] (AUC, F1, accuracy: 0.01 = one point) and
relative for unbounded error metrics (RMSE, MAE, log-loss: 0.02 = 2 % worse), because an
absolute RMSE tolerance would mean something different for every target's scale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm

# the metric table and the per-kind defaults are the view contract's; the two names
# callers read through this module are re-exported
from ctloop.features.kinds import DEFAULT_PRIMARY as DEFAULT_PRIMARY
from ctloop.features.kinds import B, M, R
from ctloop.features.kinds import metric as metric
from ctloop.features.view import FeatureView

# the loss of each kind, also the metric early stopping watches (smoother than F1)
CATBOOST_LOSS = {B: "Logloss", M: "MultiClass", R: "RMSE"}


@dataclass(frozen=True)
class Output:
    """What a model answered for some rows, in the view's terms.

    Classification: `predictions` are class names and `proba` has one column per class in
    the view's class order (never the model's). Regression: `predictions` are floats and
    `values` holds them as an array.
    """

    predictions: list
    proba: np.ndarray | None = None
    values: np.ndarray | None = None

    def take(self, rows: np.ndarray) -> Output:
        """The answers of these row positions (repeats allowed: bootstrap draws)."""
        return Output(
            [self.predictions[i] for i in rows],
            None if self.proba is None else self.proba[rows],
            None if self.values is None else self.values[rows],
        )

    def score_column(self, view: FeatureView) -> np.ndarray | None:
        """Binary: the positive class's probability (the score); otherwise None."""
        if not view.label.is_binary or self.proba is None:
            return None
        return self.proba[:, view.label.class_list.index(view.label.positive_class)]


def output_from_proba(view: FeatureView, proba: np.ndarray, model_classes: list[str]) -> Output:
    """Reorder a model's probability columns into view order and decide the classes."""
    classes = view.label.class_list
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise ValueError(f"probabilities of shape {proba.shape} for {len(classes)} classes")
    proba = proba[:, [model_classes.index(c) for c in classes]]
    if view.label.is_binary:
        pos = classes.index(view.label.positive_class)
        hit = proba[:, pos] >= view.label.decision_threshold
        predictions = [view.label.positive_class if h else view.label.negative_class for h in hit]
    else:
        predictions = [classes[i] for i in proba.argmax(axis=1)]
    return Output(predictions, proba=proba)


def output_from_values(values: np.ndarray) -> Output:
    """A regressor's answer in the same `Output` shape classifiers give, so serving, the
    log and the metrics handle every label kind alike."""
    values = np.asarray(values, dtype=float).ravel()
    return Output(values.tolist(), values=values)


def score(view: FeatureView, y_true: pd.Series, output: Output) -> dict[str, float]:
    """Every metric of the view's kind that the rows allow (a ranking metric needs both
    classes present; it is left out, not faked, when they are not)."""
    if view.label.is_regression:
        return _regression(pd.to_numeric(y_true).to_numpy(dtype=float), output)
    return _classification(view, y_true.astype(str).to_numpy(), output)


def _regression(y: np.ndarray, output: Output) -> dict[str, float]:
    pred = np.asarray(output.values, dtype=float)
    out = {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
        "mae": float(skm.mean_absolute_error(y, pred)),
        "mean_prediction": float(pred.mean()),
        "mean_label": float(y.mean()),
    }
    if len(y) >= 2 and np.var(y) > 0:
        out["r2"] = float(skm.r2_score(y, pred))
    return out


def class_key(view: FeatureView, cls: str) -> str:
    """A class as MLflow accepts it in a metric or tag name (letters, digits and `_-./ :`):
    `<=50K` becomes `c0__50K` (position and a slug), other names stay as they are."""
    if re.fullmatch(r"[A-Za-z0-9_\-./ :]+", cls):
        return cls
    slug = re.sub(r"[^A-Za-z0-9_\-.]", "_", cls)
    return f"c{view.label.class_list.index(cls)}_{slug}"


def _classification(view: FeatureView, y: np.ndarray, output: Output) -> dict[str, float]:
    classes = view.label.class_list
    proba = output.proba
    pred = np.asarray(output.predictions, dtype=object).astype(str)
    # sklearn's log-loss wants probability columns in sorted label order
    ranked = sorted(classes)
    ranked_proba = proba[:, [classes.index(c) for c in ranked]]
    out: dict[str, float] = {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "macro_f1": float(skm.f1_score(y, pred, average="macro", labels=classes, zero_division=0)),
        "log_loss": float(skm.log_loss(y, ranked_proba, labels=ranked)),
    }
    precision, recall, _, _ = skm.precision_recall_fscore_support(
        y, pred, labels=classes, zero_division=0
    )
    for cls, p, r in zip(classes, precision, recall, strict=True):
        out[f"precision_{class_key(view, cls)}"] = float(p)
        out[f"recall_{class_key(view, cls)}"] = float(r)
    present = set(y)
    if view.label.is_binary:
        positive = view.label.positive_class
        truth = y == positive
        scores = output.score_column(view)
        out["f1"] = float(skm.f1_score(truth, pred == positive, zero_division=0))
        out["precision"] = float(skm.precision_score(truth, pred == positive, zero_division=0))
        out["recall"] = float(skm.recall_score(truth, pred == positive, zero_division=0))
        out["brier"] = float(skm.brier_score_loss(truth, scores))
        if len(present) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(truth, scores))
            out["pr_auc"] = float(skm.average_precision_score(truth, scores))
    elif present >= set(classes):
        out["roc_auc"] = float(skm.roc_auc_score(y, ranked_proba, multi_class="ovr", labels=ranked))
    return out


def score_one(view: FeatureView, y_true: pd.Series, output: Output, name: str) -> float | None:
    """One metric only, for loops that score many resamples (the monitor's bootstrap):
    `score` computes every metric of the kind, ten times the work."""
    if view.label.is_regression:
        y = pd.to_numeric(y_true).to_numpy(dtype=float)
        pred = np.asarray(output.values, dtype=float)
        if name == "rmse":
            return float(np.sqrt(np.mean((y - pred) ** 2)))
        if name == "mae":
            return float(np.mean(np.abs(y - pred)))
        return _regression(y, output).get(name)
    y = y_true.astype(str).to_numpy()
    pred = np.asarray(output.predictions, dtype=object).astype(str)
    if name == "accuracy":
        return float(np.mean(y == pred))
    if name == "macro_f1":
        return macro_f1(y, pred, view.label.class_list)
    return _classification(view, y, output).get(name)


def macro_f1(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> float:
    """The macro F1 of `f1_score(average="macro", labels=classes, zero_division=0)` from one
    confusion count (`np.bincount`): sklearn's validation and per-class masks cost about
    35 ms a call on 20k rows, and the monitor's bootstrap calls it 50 times a check.
    Values outside `classes` count against the classes they meet, as there."""
    k = len(classes)
    index = {c: i for i, c in enumerate(classes)}
    true = np.array([index.get(v, k) for v in y.tolist()], dtype=np.int64)
    made = np.array([index.get(v, k) for v in pred.tolist()], dtype=np.int64)
    counts = np.bincount(true * (k + 1) + made, minlength=(k + 1) ** 2).reshape(k + 1, k + 1)
    hits = np.diag(counts)[:k].astype(float)
    wrong = counts[:k].sum(axis=1)[:k] + counts[:, :k].sum(axis=0) - 2 * hits  # FN + FP
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(2 * hits + wrong > 0, 2 * hits / (2 * hits + wrong), 0.0)
    return float(per_class.mean()) if k else 0.0


BOOTSTRAP_DRAWS = 50
BOOTSTRAP_MAX_ROWS = 20_000
MIN_GROUPS = 20  # fewer groups: their bootstrap is biased low, so rows are resampled


def bootstrap_se(
    view: FeatureView,
    y_true: pd.Series,
    output: Output,
    name: str,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> float:
    """Bootstrap standard error of one metric on these rows. Past `BOOTSTRAP_MAX_ROWS` rows
    it is measured on a sample of that size and scaled by sqrt(sample / rows), so a check
    over millions of rows stays cheap. With `groups` (one label per row: the log's sample
    blocks when the rows are a sampled read) whole groups are resampled, a cluster
    bootstrap: rows of one block may be alike, and resampling them one by one would
    understate the error. Under `MIN_GROUPS` groups the rows are resampled instead: a
    bootstrap over a handful of groups underrates the error more than the rows' does."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    if n < 2:
        return 0.0
    members = None if groups is None else group_members(groups)
    if members is not None:
        return _cluster_se(view, y_true, output, name, rng, members)
    take = rng.choice(n, BOOTSTRAP_MAX_ROWS, replace=False) if n > BOOTSTRAP_MAX_ROWS else None
    y = y_true.reset_index(drop=True)
    if take is not None:
        y, output = y.iloc[take].reset_index(drop=True), output.take(take)
    m = len(y)
    values = []
    for _ in range(BOOTSTRAP_DRAWS):
        idx = rng.integers(0, m, m)
        value = score_one(view, y.iloc[idx], output.take(idx), name)
        if value is not None and np.isfinite(value):
            values.append(value)
    spread = float(np.std(values)) if len(values) > 1 else 0.0
    return spread * float(np.sqrt(m / n))


def group_members(groups: np.ndarray | pd.Series) -> list[np.ndarray] | None:
    """The row positions of each group (one label per row), what a cluster bootstrap
    draws whole; None under `MIN_GROUPS` groups, where rows are resampled instead."""
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    members = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
    return members if len(members) >= MIN_GROUPS else None


def draw_groups(rng: np.random.Generator, members: list[np.ndarray]) -> np.ndarray:
    """One cluster-bootstrap draw: as many groups as there are, with replacement, as the
    row positions they hold."""
    return np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def _cluster_se(
    view: FeatureView,
    y_true: pd.Series,
    output: Output,
    name: str,
    rng: np.random.Generator,
    members: list[np.ndarray],
) -> float:
    """`bootstrap_se` resampling whole groups (past `BOOTSTRAP_MAX_ROWS` rows, on random
    whole groups holding about that many)."""
    n = len(y_true)
    picked = rng.permutation(len(members))
    sizes = np.cumsum([len(members[g]) for g in picked])
    keep = picked[: max(MIN_GROUPS, int(np.searchsorted(sizes, BOOTSTRAP_MAX_ROWS, side="right")))]
    members = [members[g] for g in keep]
    m = sum(len(rows) for rows in members)
    y = y_true.reset_index(drop=True)
    values = []
    for _ in range(BOOTSTRAP_DRAWS):
        idx = draw_groups(rng, members)
        value = score_one(view, y.iloc[idx], output.take(idx), name)
        if value is not None and np.isfinite(value):
            values.append(value)
    spread = float(np.std(values)) if len(values) > 1 else 0.0
    return spread * float(np.sqrt(m / n))


def naive_output(view: FeatureView, train_labels: pd.Series, n: int) -> Output:
    """What a model that learnt nothing but the training labels' distribution answers:
    the class shares (classification) or the mean (regression) for every row. The model
    gate's default floor is to beat it; a floor of 0 would bless anything."""
    if view.label.is_regression:
        mean = float(pd.to_numeric(train_labels).mean())
        return output_from_values(np.full(n, mean))
    classes = view.label.class_list
    shares = train_labels.astype(str).value_counts(normalize=True)
    row = np.array([float(shares.get(c, 0.0)) for c in classes])
    row = np.clip(row, 1e-6, None)
    row = row / row.sum()
    return output_from_proba(view, np.tile(row, (n, 1)), classes)
