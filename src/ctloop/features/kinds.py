"""Label kinds and the metrics each may be judged by: part of the view contract.

A view names its primary metric and its tolerances, or leaves them to its label kind, and
it must be able to check and fill them when it loads without reaching into training or
scoring code. So the table of metrics (name, direction, how a tolerance on it is read,
which kinds it fits) and the per-kind defaults live here; `ctloop.core.metrics` reads
them and adds the scoring. Tolerances are absolute for metrics bounded to [0, 1] (AUC,
F1, accuracy: 0.01 = one point) and relative for unbounded error metrics (RMSE, MAE,
log-loss: 0.02 = 2 % worse), because an absolute RMSE tolerance would mean something
different for every target's scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class LabelKind(StrEnum):
    """What the label is, which decides the loss, the metrics and serving's answer."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


B, M, R = LabelKind.BINARY, LabelKind.MULTICLASS, LabelKind.REGRESSION


@dataclass(frozen=True)
class Metric:
    """A metric's name, direction and how tolerances on it are read."""

    name: str
    higher_is_better: bool
    relative_tolerance: bool  # unbounded error metric: tolerances are fractions of it
    kinds: frozenset[LabelKind]
    description: str

    def better(self, a: float, b: float) -> bool:
        """Is `a` strictly better than `b`?"""
        return a > b if self.higher_is_better else a < b

    def worsening(self, new: float, reference: float) -> float:
        """How much worse `new` is than `reference`, in the unit tolerances use (<= 0: not
        worse): metric points for bounded metrics, a fraction of `reference` otherwise."""
        worse = (reference - new) if self.higher_is_better else (new - reference)
        if self.relative_tolerance:
            return worse / abs(reference) if reference else (0.0 if worse <= 0 else math.inf)
        return worse

    def in_tolerance_units(self, spread: float, reference: float) -> float:
        """A spread of the metric (a standard error) in the unit its tolerances use."""
        return spread / abs(reference) if self.relative_tolerance and reference else spread

    def tolerance_text(self, tolerance: float) -> str:
        """A tolerance as a person reads it: "2.0% relative" or "0.01" (points)."""
        return f"{tolerance:.1%} relative" if self.relative_tolerance else f"{tolerance:g}"


_C = frozenset({B, M})
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("roc_auc", True, False, _C, "area under the ROC curve (one-vs-rest for classes)"),
        Metric("pr_auc", True, False, frozenset({B}), "average precision of the positive class"),
        Metric("macro_f1", True, False, _C, "F1 averaged over classes, unweighted"),
        Metric("f1", True, False, frozenset({B}), "F1 of the positive class at the threshold"),
        Metric("precision", True, False, frozenset({B}), "precision of the positive class"),
        Metric("recall", True, False, frozenset({B}), "recall of the positive class"),
        Metric("accuracy", True, False, _C, "share of correct classes"),
        Metric("log_loss", False, True, _C, "cross-entropy of the class probabilities"),
        Metric("brier", False, False, frozenset({B}), "mean squared error of the score"),
        Metric("rmse", False, True, frozenset({R}), "root mean squared error"),
        Metric("mae", False, True, frozenset({R}), "mean absolute error"),
        Metric("r2", True, False, frozenset({R}), "coefficient of determination"),
    )
}

DEFAULT_PRIMARY = {B: "roc_auc", M: "macro_f1", R: "rmse"}
# tolerance defaults: (absolute for bounded metrics, relative for error metrics)
DEFAULT_MAX_DEGRADATION = (0.01, 0.02)
DEFAULT_MAX_LIVE_DROP = (0.05, 0.10)


def metric(name: str) -> Metric:
    """The metric of this name (KeyError: the view loader already refused unknown names)."""
    return METRICS[name]


def names_for(kind: LabelKind) -> list[str]:
    """The metrics that mean something for this label kind, in table order."""
    return [name for name, m in METRICS.items() if kind in m.kinds]


def default_tolerance(name: str, defaults: tuple[float, float]) -> float:
    """Pick the absolute or the relative default, as the metric's tolerances are read."""
    return defaults[1] if METRICS[name].relative_tolerance else defaults[0]
