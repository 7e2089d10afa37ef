"""Feature views: the shipped view loads, and malformed ones fail naming file, key, problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ctloop.errors import FeatureViewError
from ctloop.features.view import FeatureView, list_views, load_view, load_view_file
from tests.support.paths import ROOT


def test_shipped_view_loads(view: FeatureView) -> None:
    assert view.name == "credit_score"
    assert view.label.classes == ["Good", "Standard", "Poor"]
    assert {f.name for f in view.categorical_features} >= {"occupation", "credit_mix"}
    assert view.feature("age").min == 18
    assert view.gates.model.min_value > 0
    assert view.training.validation_days < view.training.window_days


def test_every_view_in_the_repo_loads() -> None:
    names = list_views(ROOT / "features")
    assert "credit_score" in names
    for name in names:
        assert load_view(name, ROOT / "features").name == name


def _write(tmp_path: Path, data: dict, name: str = "credit_score") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((ROOT / "features" / "credit_score.yaml").read_text())


@pytest.mark.parametrize(
    ("mutate", "key", "problem"),
    [
        (lambda d: d.update(colour="blue"), "colour", "Extra inputs are not permitted"),
        (lambda d: d["features"][0].update(min=200), "features[0]", "greater than max"),
        (lambda d: d["features"][1].pop("categories"), "features[1]", "categories"),
        (lambda d: d["features"][0].update(type="text"), "features[0].type", "'numeric'"),
        (lambda d: d["label"].update(classes=["Good"]), "label", "at least three"),
        (lambda d: d["label"].update(kind="binary", classes=["a", "b"]), "label", "positive_class"),
        (lambda d: d["label"].update(kind="regression"), "label", "not classes"),
        (
            lambda d: d["label"].pop("kind") and d["label"].update(classes=["a", "b"]),
            "label",
            "kind: binary",
        ),
        (lambda d: d["features"].append(dict(d["features"][0])), "features", "duplicate"),
        (
            lambda d: d["gates"]["model"].update(primary_metric="rmse"),
            "primary_metric",
            "does not fit a multiclass label",
        ),
        (lambda d: d["training"].update(validation_days=90), "training", "validation_days"),
        (lambda d: d["gates"]["data"].update(max_missing_rate=2), "max_missing_rate", "less than"),
        (lambda d: d.update(entity="Customer Id"), "entity", "pattern"),
        (lambda d: d["features"][0].update(name="arrived_at"), "features[0]", "ctloop adds"),
        (lambda d: d["features"][0].update(name="proba_good"), "features[0]", "proba_"),
        (lambda d: d["label"].update(name="prediction"), "label.name", "clashes"),
        (lambda d: d.update(event_date="customer_id"), "(top level)", "different columns"),
    ],
)
def test_malformed_view_names_file_key_and_problem(tmp_path, raw, mutate, key, problem) -> None:
    mutate(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(FeatureViewError) as info:
        load_view_file(path)
    message = str(info.value)
    assert str(path) in message
    assert key in message
    assert problem in message


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "credit_score.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(FeatureViewError, match="not valid YAML"):
        load_view_file(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FeatureViewError, match="not found"):
        load_view("nope", tmp_path)


def test_name_must_match_file(tmp_path: Path, raw: dict) -> None:
    path = _write(tmp_path, raw, name="other")
    with pytest.raises(FeatureViewError, match="must match the file name"):
        load_view_file(path)


@pytest.mark.parametrize(
    ("mutate", "key", "problem"),
    [
        (lambda d: d["features"][2].update(name="ingested_at"), "features[2].name", "ctloop adds"),
        (lambda d: d.update(entity="arrived_at"), "entity", "ctloop adds"),
        (lambda d: d.update(event_date="ingested_at"), "event_date", "ctloop adds"),
        (lambda d: d.update(entity="event_date"), "entity", "also the event_date column"),
        (lambda d: d["features"][0].update(name="model_dump"), "features[0].name", "model_"),
        (lambda d: d["features"][0].update(name="model_config"), "features[0].name", "model_"),
        (lambda d: d["features"][0].update(name="model_x"), "features[0].name", "model_"),
        (lambda d: d["features"][0].update(name="json"), "features[0].name", "request model"),
        (lambda d: d["features"][0].update(name="dict"), "features[0].name", "request model"),
        (lambda d: d["label"].update(name="copy"), "label.name", "request model"),
        (lambda d: d.update(entity="schema"), "entity", "request model"),
    ],
)
def test_names_that_break_the_store_or_the_request_model_are_refused(
    tmp_path, raw, mutate, key, problem
) -> None:
    mutate(raw)
    with pytest.raises(FeatureViewError) as info:
        load_view_file(_write(tmp_path, raw))
    assert f"{key}: " in str(info.value) and problem in str(info.value)


def test_a_view_name_too_long_for_its_tables_and_indexes_is_refused(tmp_path, raw) -> None:
    """MariaDB takes 64 characters per identifier; the view's longest derived name (an
    index of its labels table) failed at `init-db` with error 1059."""
    name = "v" * 47
    raw["name"] = name
    with pytest.raises(FeatureViewError, match=r"name: .* is too long: the .* index 'ix_v+_"):
        load_view_file(_write(tmp_path, raw, name))
    fits = "v" * 46
    raw["name"] = fits
    view = load_view_file(_write(tmp_path, raw, fits))
    assert max(len(n) for n in view.store_identifiers().values()) == 64
