"""Metrics by label kind: directions, tolerances, binary decisions, naive floors, view
defaults. Pure functions on a few rows, no services."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from ctloop.core import metrics
from ctloop.errors import FeatureViewError
from ctloop.features.view import FeatureView, LabelKind, load_view_file
from tests.support.paths import ROOT


def make_view(label: dict[str, Any], **gates: Any) -> FeatureView:
    raw = {
        "name": "toy",
        "entity": "id",
        "label": label,
        "features": [{"name": "x", "type": "numeric"}],
        "gates": {"model": gates} if gates else {},
    }
    return FeatureView.model_validate(raw)


BINARY = {"name": "y", "kind": "binary", "classes": ["no", "yes"], "positive_class": "yes"}
REGRESSION = {"name": "y", "kind": "regression"}
MULTI = {"name": "y", "kind": "multiclass", "classes": ["a", "b", "c"]}


@pytest.mark.parametrize(
    ("label", "metric", "degradation", "live_drop"),
    [(BINARY, "roc_auc", 0.01, 0.05), (MULTI, "macro_f1", 0.01, 0.05),
     (REGRESSION, "rmse", 0.02, 0.10)],
)  # fmt: skip
def test_each_kind_gets_its_metric_and_tolerances(label, metric, degradation, live_drop) -> None:
    view = make_view(label)
    assert view.primary_metric == metric
    assert view.gates.model.max_degradation == degradation
    assert view.drift.max_accuracy_drop == live_drop
    assert view.gates.model.min_value is None  # floor: beat the naive model


def test_defaults_are_not_shared_between_views() -> None:
    make_view(REGRESSION)
    assert make_view(BINARY).primary_metric == "roc_auc"
    assert FeatureView.model_fields["gates"].default.model.primary_metric is None


def test_a_metric_that_does_not_fit_the_kind_is_refused_when_the_view_loads() -> None:
    with pytest.raises(ValueError, match="does not fit a regression label"):
        make_view(REGRESSION, primary_metric="roc_auc")
    assert make_view(REGRESSION, primary_metric="mae").primary_metric == "mae"


def test_the_shipped_views_load_with_their_kinds() -> None:
    kinds = {
        "breast_cancer": LabelKind.BINARY,
        "wine": LabelKind.MULTICLASS,
        "diabetes": LabelKind.REGRESSION,
    }
    for name, kind in kinds.items():
        assert load_view_file(ROOT / "examples" / "views" / f"{name}.yaml").label.kind is kind
    credit = load_view_file(ROOT / "features" / "credit_score.yaml")
    assert credit.label.kind is LabelKind.MULTICLASS and credit.primary_metric == "macro_f1"


def test_a_category_that_is_also_a_missing_marker_is_refused(tmp_path) -> None:
    import yaml

    raw = yaml.safe_load((ROOT / "features" / "credit_score.yaml").read_text())
    raw["features"][1]["categories"].append("NA")
    path = tmp_path / "credit_score.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(FeatureViewError, match="missing_values"):
        load_view_file(path)


def test_direction_and_tolerance_units() -> None:
    auc, rmse = metrics.metric("roc_auc"), metrics.metric("rmse")
    assert auc.better(0.9, 0.8) and not auc.better(0.8, 0.9)
    assert rmse.better(10.0, 12.0) and not rmse.better(12.0, 10.0)
    assert auc.worsening(0.88, 0.90) == pytest.approx(0.02)  # points
    assert auc.worsening(0.95, 0.90) < 0
    assert rmse.worsening(11.0, 10.0) == pytest.approx(0.10)  # a fraction of the reference
    assert rmse.worsening(9.0, 10.0) < 0


def test_binary_decision_uses_the_positive_class_and_threshold() -> None:
    view = make_view({**BINARY, "decision_threshold": 0.3})
    # the model's own class order is [yes, no]: the output is in the view's order
    out = metrics.output_from_proba(view, np.array([[0.35, 0.65], [0.2, 0.8]]), ["yes", "no"])
    np.testing.assert_allclose(out.proba, [[0.65, 0.35], [0.8, 0.2]])
    assert out.predictions == ["yes", "no"]  # 0.35 >= 0.3 is positive
    np.testing.assert_allclose(out.score_column(view), [0.35, 0.2])


def test_binary_scores_name_the_positive_class() -> None:
    view = make_view(BINARY)
    y = pd.Series(["yes", "no", "yes", "no"])
    proba = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    perfect = metrics.output_from_proba(view, proba, ["no", "yes"])
    scores = metrics.score(view, y, perfect)
    assert scores["roc_auc"] == 1.0 and scores["f1"] == 1.0 and scores["pr_auc"] == 1.0
    inverted = metrics.score(view, y.map({"yes": "no", "no": "yes"}), perfect)
    assert inverted["roc_auc"] == 0.0
    one_class = metrics.score(view, pd.Series(["yes"] * 4), perfect)
    assert "roc_auc" not in one_class  # left out, not faked


def test_regression_scores() -> None:
    view = make_view(REGRESSION)
    out = metrics.output_from_values(np.array([1.0, 2.0, 4.0]))
    scores = metrics.score(view, pd.Series([1.0, 3.0, 4.0]), out)
    assert scores["rmse"] == pytest.approx(np.sqrt(1 / 3))
    assert scores["mae"] == pytest.approx(1 / 3)
    assert scores["r2"] < 1


def test_naive_model_is_the_floor_to_beat() -> None:
    reg = make_view(REGRESSION)
    naive = metrics.naive_output(reg, pd.Series([1.0, 2.0, 3.0]), 2)
    np.testing.assert_allclose(naive.values, [2.0, 2.0])
    binary = make_view(BINARY)
    naive = metrics.naive_output(binary, pd.Series(["yes", "no", "no", "no"]), 3)
    assert naive.predictions == ["no"] * 3
    y = pd.Series(["yes", "no", "yes"])
    assert metrics.score(binary, y, naive)["roc_auc"] == 0.5


def test_class_names_become_metric_names_mlflow_accepts() -> None:
    """`<=50K` is a fine class and an invalid MLflow metric name."""
    from mlflow.utils.validation import _validate_metric_name

    view = make_view({"name": "y", "kind": "binary", "classes": ["<=50K", ">50K"],
                      "positive_class": ">50K"})  # fmt: skip
    out = metrics.output_from_proba(view, np.array([[0.8, 0.2], [0.3, 0.7]]), ["<=50K", ">50K"])
    scores = metrics.score(view, pd.Series(["<=50K", ">50K"]), out)
    per_class = sorted(k for k in scores if k.startswith(("precision_", "recall_")))
    assert per_class == ["precision_c0___50K", "precision_c1__50K",
                         "recall_c0___50K", "recall_c1__50K"]  # fmt: skip
    for name in scores:
        _validate_metric_name(f"val_{name}")
    assert metrics.class_key(make_view(MULTI), "b") == "b"  # plain names stay as they are


def test_macro_f1_is_sklearns_on_any_labels() -> None:
    """The bootstrap's confusion-count macro-F1 equals sklearn's with the view's labels and
    zero_division=0: classes absent on one or both sides, values outside the classes."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        classes = ["a", "b", "c", "d"][: rng.integers(1, 5)]
        pool = [*classes, "x", "y"]
        n = int(rng.integers(1, 60))
        y = rng.choice(pool[: len(classes) + rng.integers(0, 3)], n).astype(object)
        pred = rng.choice(pool[: len(classes) + rng.integers(0, 3)], n).astype(object)
        expected = skm.f1_score(y, pred, average="macro", labels=classes, zero_division=0)
        assert metrics.macro_f1(y, pred, classes) == pytest.approx(expected, abs=1e-12)


def test_the_cluster_bootstrap_counts_alike_rows_as_one() -> None:
    """Resampling whole blocks: when a block's rows are all right or all wrong (64 alike
    rows), the error is the blocks' (about 8x the row bootstrap's); when rows are
    independent, about the row bootstrap's."""
    view = make_view(BINARY)
    rng = np.random.default_rng(3)
    blocks = np.repeat(np.arange(300), 64)
    truth = pd.Series(rng.choice(["no", "yes"], blocks.size))
    right_block = rng.random(300) < 0.8
    right = right_block[blocks]
    flipped = truth.map({"no": "yes", "yes": "no"})
    said = truth.where(right, flipped).to_numpy()
    proba = np.where(said[:, None] == np.array(["no", "yes"]), 0.9, 0.1)
    output = metrics.Output(list(said), proba=proba)
    rows = metrics.bootstrap_se(view, truth, output, "accuracy")
    whole = metrics.bootstrap_se(view, truth, output, "accuracy", groups=blocks)
    assert 5 < whole / rows < 12
    independent = truth.where(rng.random(blocks.size) < 0.8, flipped).to_numpy()
    output = metrics.Output(list(independent),
                            proba=np.where(independent[:, None] == np.array(["no", "yes"]),
                                           0.9, 0.1))  # fmt: skip
    rows = metrics.bootstrap_se(view, truth, output, "accuracy")
    whole = metrics.bootstrap_se(view, truth, output, "accuracy", groups=blocks)
    assert 0.6 < whole / rows < 1.6


def test_the_cluster_bootstrap_on_many_rows_and_on_few_groups() -> None:
    """Past BOOTSTRAP_MAX_ROWS whole groups are subsampled and the error scaled back (the
    alike blocks' error stays about the blocks'); under MIN_GROUPS groups the rows are
    resampled, exactly as without groups."""
    view = make_view(BINARY)
    rng = np.random.default_rng(4)
    blocks = np.repeat(np.arange(1000), 64)  # 64,000 rows
    truth = pd.Series(rng.choice(["no", "yes"], blocks.size))
    right = (rng.random(1000) < 0.8)[blocks]
    said = truth.where(right, truth.map({"no": "yes", "yes": "no"})).to_numpy()
    proba = np.where(said[:, None] == np.array(["no", "yes"]), 0.9, 0.1)
    output = metrics.Output(list(said), proba=proba)
    exact = (0.8 * 0.2 / 1000) ** 0.5  # the share of right blocks, 1,000 blocks
    whole = metrics.bootstrap_se(view, truth, output, "accuracy", groups=blocks)
    assert 0.6 * exact < whole < 1.5 * exact
    few = np.arange(blocks.size) % (metrics.MIN_GROUPS - 1)  # one group too few
    assert metrics.bootstrap_se(view, truth, output, "accuracy", groups=few) == (
        metrics.bootstrap_se(view, truth, output, "accuracy")
    )
