"""The CT pipeline against MariaDB, a real MLflow store and real CatBoost training.

One module-scoped world: synthetic history in MariaDB, a first run that promotes version 1,
then scenarios that must not move the champion. Scenarios that corrupt data restore it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.artifacts
import numpy as np
import pandas as pd
import pytest

from ctloop.features.view import FeatureView, load_view_file
from ctloop.training import pipeline
from ctloop.training.datagate import DataGateError, check_data
from tests.support.paths import FEATURES_DIR
from tests.support.world import History, World, built_world, replaced_features, replaced_labels

START = dt.date(2026, 1, 1)
DAYS = 45
AS_OF = START + dt.timedelta(days=DAYS)
HISTORY = History(start=START, days=DAYS, rows_per_day=300, seed=11, labels_before=AS_OF)


@dataclasses.dataclass
class PipelineWorld(World):
    """The shared world after the first run: `first` is its outcome (version 1 promoted)."""

    run: pipeline.Run
    first: dict[str, Any]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineWorld]:
    """MariaDB with 45 days x 300 rows, an MLflow SQLite store, and version 1 promoted."""
    tmp = tmp_path_factory.mktemp("pipeline")
    view = load_view_file(FEATURES_DIR / "credit_score.yaml")
    with built_world(tmp, [view], history=HISTORY) as shared:
        run = pipeline.Run(view, AS_OF, "manual", "first run", "test__1", shared.settings)
        yield shared.extended(PipelineWorld, run=run, first=pipeline.run_all(run))


def test_first_run_promotes_a_fully_tagged_version(world: PipelineWorld) -> None:
    first, registry, view = world.first, world.registry, world.view
    assert first["promoted"] is True
    assert first["data_gate"]["passed"] is True
    champion = registry.champion(view.name)
    assert champion is not None
    assert champion.version == first["train"]["version"]
    tags = champion.tags
    for key in ("trigger", "as_of", "window", "train_rows", "validation_rows", "data_fingerprint",
                "git_commit", "airflow_run_id", "gate.data", "gate.model", "gate.infra",
                "promoted_at", "metric.macro_f1", "metrics", "gate.model.failed"):  # fmt: skip
        assert key in tags, key
    # the version list stays readable: metrics in one tag, no tag per gate check
    assert len(tags) <= 20, sorted(tags)
    assert json.loads(tags["metrics"]).keys() >= {"accuracy", "macro_f1", "log_loss"}
    assert tags["gate.model.failed"] == "none" and champion.failed_checks == []
    assert tags["trigger"] == "manual"
    assert tags["as_of"] == AS_OF.isoformat()
    assert tags["airflow_run_id"] == "test__1"
    assert tags["data_fingerprint"] == first["extract"]["fingerprint"]
    assert (tags["gate.data"], tags["gate.model"], tags["gate.infra"]) == ("passed",) * 3
    assert int(tags["train_rows"]) + int(tags["validation_rows"]) == first["extract"]["rows"]
    assert float(tags["metric.macro_f1"]) >= view.gates.model.min_value


def test_mlflow_ui_shows_a_training_experiment_with_descriptions(world: PipelineWorld) -> None:
    """Issue 20: the experiment opens in MLflow's classic ML mode, the registered model and
    the version say in words what they are, and the gate's details are one JSON file."""
    registry, view = world.registry, world.view
    client = registry.client
    champion = registry.champion(view.name)
    experiment = client.get_experiment(client.get_run(champion.run_id).info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    model = client.get_registered_model(view.name)
    assert model.description == view.description.strip() != ""
    text = client.get_model_version(view.name, champion.version).description
    assert f"Trained as of {AS_OF.isoformat()} on {champion.tags['window']}" in text
    assert "trigger: manual (first run)" in text
    assert "Gates: data passed, model passed, infra passed." in text
    assert f"macro_f1 {champion.tags['metric.macro_f1']}" in text
    assert f"accuracy {champion.metrics['accuracy']:.4f}" in text
    assert "Promoted " in text and "by test__1" in text
    note = client.get_run(champion.run_id).data.tags["mlflow.note.content"]
    assert note.startswith(f"Trained as of {AS_OF.isoformat()}") and "Validation: " in note
    assert "Gates:" not in note and f"version {champion.version} of {view.name}" in note
    registry.activate()
    gate = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/gates/model.json")
    assert gate["passed"] is True and gate["metric"] == view.primary_metric
    assert {c["name"] for c in gate["checks"]} >= {"floor", "vs_champion"}
    assert all(c["detail"] for c in gate["checks"])


def test_run_logs_lineage_and_artifacts(world: PipelineWorld) -> None:
    registry, view = world.registry, world.view
    champion = registry.champion(view.name)
    client = registry.client
    run = client.get_run(champion.run_id)
    assert run.data.metrics["val_macro_f1"] > 0.6
    assert {"val_accuracy", "val_log_loss", "val_roc_auc", "val_recall_Poor"} <= set(
        run.data.metrics
    )
    assert run.data.params["depth"] == str(view.training.depth)
    artifacts = {a.path for a in client.list_artifacts(champion.run_id)}
    assert {"reference", "plots", "data"} <= artifacts
    plots = {a.path for a in client.list_artifacts(champion.run_id, "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/feature_importance.png"}
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
    assert contexts == {"training", "validation"}
    import mlflow.artifacts
    import mlflow.catboost

    mlflow.set_tracking_uri(registry.tracking_uri)
    reference = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/reference/profile.json")
    assert set(reference["features"]) == set(view.feature_names)
    assert reference["features"]["age"]["type"] == "numeric"
    assert len(reference["features"]["age"]["sample"]) > 1000
    assert abs(sum(reference["label"].values()) - 1) < 1e-9
    assert set(reference["validation_metrics"]) >= {"macro_f1", "accuracy"}
    loaded = mlflow.catboost.load_model(f"models:/{view.name}@champion")
    assert [str(c) for c in loaded.classes_] == view.label.classes


def test_rerun_same_as_of_reuses_version_and_keeps_champion(world: PipelineWorld) -> None:
    registry, view, run = world.registry, world.view, world.run
    before = registry.versions(view.name)
    again = pipeline.run_all(run)
    assert again["train"]["reused"] is True
    assert again["train"]["version"] == world.first["train"]["version"]
    assert [v.version for v in registry.versions(view.name)] == [v.version for v in before]
    assert registry.champion(view.name).version == world.first["train"]["version"]
    assert registry.previous(view.name) is None  # promoting the champion again moved nothing


def test_label_shuffled_data_does_not_move_champion(world: PipelineWorld) -> None:
    registry, view = world.registry, world.view
    champion = registry.champion(view.name).version

    def shuffle(labels: pd.DataFrame) -> pd.DataFrame:
        rng = np.random.default_rng(0)
        labels[view.label.name] = rng.permutation(labels[view.label.name].to_numpy())
        return labels

    with replaced_labels(world, START, AS_OF, shuffle):
        run = pipeline.Run(view, AS_OF, "manual", "shuffled", "test__2", world.settings)
        result = pipeline.run_all(run)
    assert result["promoted"] is False
    verdict = result["model_gate"]
    assert verdict["blessed"] is False
    assert verdict["champion_version"] == champion
    candidate = registry.version(view.name, result["train"]["version"])
    assert candidate.version != champion
    assert candidate.tags["gate.model"] == "failed"
    assert {"floor", "vs_champion"} <= set(candidate.failed_checks)
    assert "Model gate refused it on: " in registry.client.get_model_version(
        view.name, candidate.version).description  # fmt: skip
    assert "gate.infra" not in candidate.tags
    assert registry.champion(view.name).version == champion
    with pytest.raises(pipeline.ModelGateError, match="cannot be promoted"):
        pipeline.promote(run, candidate.version)
    assert registry.champion(view.name).version == champion


def test_null_flooded_data_stops_at_data_gate(world: PipelineWorld) -> None:
    registry, view = world.registry, world.view
    versions = len(registry.versions(view.name))

    def flood(features: pd.DataFrame) -> pd.DataFrame:
        features.loc[features.index % 3 != 0, "annual_income"] = None
        features.loc[features.index % 2 == 0, "interest_rate"] = None
        return features

    with replaced_features(world, START, AS_OF, flood):
        run = pipeline.Run(view, AS_OF, "manual", "nulls", "test__3", world.settings)
        with pytest.raises(DataGateError) as info:
            pipeline.run_all(run)
    message = str(info.value)
    assert "missing_rate:annual_income" in message
    assert "missing_rate:interest_rate" in message
    assert "limit 0.0%" in message  # interest_rate is not nullable
    assert len(registry.versions(view.name)) == versions  # nothing trained or registered


def test_rescaled_feature_is_refused_as_skew(world: PipelineWorld) -> None:
    view = world.view

    def rescale(features: pd.DataFrame) -> pd.DataFrame:
        features["outstanding_debt"] = features["outstanding_debt"] / 1000  # units changed
        return features

    with replaced_features(world, START, AS_OF, rescale):
        run = pipeline.Run(view, AS_OF, "manual", "rescaled", "test__4", world.settings)
        with pytest.raises(DataGateError, match=r"skew:outstanding_debt.*normed_wasserstein"):
            pipeline.run_all(run)


def test_schema_and_range_checks_on_a_frame(world: PipelineWorld) -> None:
    """Schema and range problems are found by the gate itself (pure function, no I/O)."""
    view: FeatureView = world.view
    frame = world.store.training_set(view, AS_OF)
    report = check_data(view, frame.drop(columns=["credit_mix"]), pd.Timestamp(AS_OF))
    assert not report.passed
    assert report.failed[0].name == "schema"
    assert "credit_mix" in report.failed[0].detail
    broken = frame.copy()
    broken.loc[:10, "age"] = 250
    failed = {c.name for c in check_data(view, broken, pd.Timestamp(AS_OF)).failed}
    assert failed == {"range:age"}


def test_data_changed_between_steps_is_caught(world: PipelineWorld) -> None:
    run = pipeline.Run(world.view, AS_OF, "manual", "", "", world.settings)
    with pytest.raises(pipeline.DataChangedError, match="changed during this run"):
        pipeline.train(run, expected_fingerprint="0000000000000000")


def test_infra_check_refuses_a_model_that_cannot_load_as_served(
    world: PipelineWorld, tmp_path: Path
) -> None:
    import mlflow
    import mlflow.sklearn
    from sklearn.dummy import DummyClassifier

    registry, view = world.registry, world.view
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    with mlflow.start_run(experiment_id=registry.experiment_id(view.name)):
        dummy = DummyClassifier().fit([[0], [1]], ["Good", "Poor"])
        info = mlflow.sklearn.log_model(dummy, name="model", registered_model_name=view.name)
    version = str(info.registered_model_version)
    run = pipeline.Run(view, AS_OF, "manual", "", "", world.settings)
    with pytest.raises(pipeline.InfraCheckError, match="failed to load or predict"):
        pipeline.infra_check(run, version)
    assert registry.version(view.name, version).tags["gate.infra"] == "failed"


def test_infra_check_queries_the_newest_rows_however_old(world: PipelineWorld) -> None:
    """Ingestion paused for a week: the newest rows lie 8 days before the as-of date. The
    check queries them, not an empty fixed look-back; outside the window it names it."""
    registry, view = world.registry, world.view
    champion = registry.champion(view.name).version
    late = pipeline.Run(view, AS_OF + dt.timedelta(days=7), "manual", "", "", world.settings)
    result = pipeline.infra_check(late, champion)
    assert result["rows"] == 64
    beyond = AS_OF + dt.timedelta(days=view.training.window_days + 1)
    empty = pipeline.Run(view, beyond, "manual", "", "", world.settings)
    with pytest.raises(pipeline.InfraCheckError, match=r"no feature rows in the window \["):
        pipeline.infra_check(empty, champion)
    registry.set_tags(view.name, champion, {"gate.infra": "passed"})  # undo the refusal


def test_manual_promote_and_rollback(world: PipelineWorld) -> None:
    registry, view = world.registry, world.view
    run = pipeline.Run(view, AS_OF, "manual", "", "", world.settings)
    champion = registry.champion(view.name).version
    refused = [v for v in registry.versions(view.name) if v.tags.get("gate.model") == "failed"]
    assert refused, "the shuffled-label scenario should have left a refused version"
    forced = pipeline.promote(run, refused[-1].version, force=True)
    assert forced["champion"] == refused[-1].version
    assert forced["previous"] == champion
    assert registry.version(view.name, refused[-1].version).tags["forced"] == "true"
    new, old = registry.rollback(view.name)
    assert new.version == champion
    assert registry.champion(view.name).version == champion
    assert registry.previous(view.name).version == old.version == refused[-1].version


def test_a_backfill_never_rolls_the_champion_back(world: PipelineWorld) -> None:
    """A run as of 30 days before the champion's trains on older data: it is registered,
    refused by the freshness check with the reason, and moves the alias only when forced,
    which is recorded; the forced re-run reuses the version and leaves its trace."""
    registry, view = world.registry, world.view
    champion = registry.champion(view.name)
    earlier = AS_OF - dt.timedelta(days=30)
    reason = "retrain after backfill"
    backfill = pipeline.Run(view, earlier, "manual", reason, "test__backfill", world.settings)
    out = pipeline.run_all(backfill)
    assert out["promoted"] is False
    checks = {c["name"]: c for c in out["model_gate"]["checks"]}
    assert checks["freshness"]["passed"] is False
    assert "backfill" in checks["freshness"]["detail"]
    assert champion.tags["as_of"] in checks["freshness"]["detail"]
    assert registry.champion(view.name).version == champion.version
    version = out["train"]["version"]
    assert "freshness" in registry.version(view.name, version).failed_checks

    forced = pipeline.run_all(backfill, force_promote=True)
    assert forced["train"]["reused"] is True and forced["train"]["version"] == version
    assert forced["promoted"] is True and forced["promote"]["forced"] is True
    tags = registry.version(view.name, version).tags
    assert tags["forced"] == "true" and tags["forced_by"] == "test__backfill"
    assert tags["forced_reason"] == "retrain after backfill"
    traces = [v for k, v in tags.items() if k.startswith("reused.")]
    assert traces and "reason=retrain after backfill" in traces[-1]

    # The backfill version is champion now, the first one `previous`. Were the champion
    # newer, a re-run of the first one's date would reuse the first one and the gate would
    # refuse it (freshness): it keeps the verdict it served on, so rollback stays possible.
    registry.set_tags(view.name, version, {"as_of": (AS_OF + dt.timedelta(days=1)).isoformat()})
    rerun = pipeline.run_all(
        pipeline.Run(view, AS_OF, "manual", "rerun", "test__rerun", world.settings)
    )
    assert rerun["train"]["reused"] is True
    assert rerun["train"]["version"] == champion.version
    assert rerun["promoted"] is False
    kept = registry.version(view.name, champion.version).tags
    assert kept["gate.model"] == "passed"
    assert any(v.startswith(f"as_of={AS_OF.isoformat()}; gate.model=failed (freshness")
               for k, v in kept.items() if k.startswith("reevaluated."))  # fmt: skip
    back, _ = registry.rollback(view.name)
    assert back.version == champion.version == registry.champion(view.name).version


def test_a_recorded_change_onset_shapes_every_later_window(world: PipelineWorld) -> None:
    """Rows from before a change the monitor recorded are dropped once the days since it
    hold `min_rows` labelled rows, weighed down before that; a change older than the
    window changes nothing."""
    from ctloop.registry import ONSET_FOUND_TAG, ONSET_TAG

    registry, view, store = world.registry, world.view, world.store
    run = pipeline.Run(view, AS_OF, "schedule", "", "", world.settings)
    client = registry.client
    found = (AS_OF - dt.timedelta(days=8)).isoformat()  # the newest labelled day

    def record(onset: dt.date | str, seen: str = found) -> bool:
        for tag in (ONSET_TAG, ONSET_FOUND_TAG):
            if tag in client.get_registered_model(view.name).tags:
                client.delete_registered_model_tag(view.name, tag)
        return registry.record_change_onset(view.name, str(onset), seen)

    try:
        assert record(AS_OF - dt.timedelta(days=10))  # ~3 labelled days since: too few rows
        days, change = pipeline.training_window(run, store)
        assert days == view.training.window_days and change["pre_change"] == "weighted"
        # an onset before the newest day that showed the change is the same change
        assert not registry.record_change_onset(view.name, START.isoformat(), found)
        # 7 labelled days since (2,100 rows >= min_rows), but all of them validation days:
        # weighted, never a window with nothing to train on
        assert record(AS_OF - dt.timedelta(days=14))
        days, change = pipeline.training_window(run, store)
        assert change["pre_change"] == "weighted"
        assert pipeline.validate_data(run)["passed"] is True
        older = AS_OF - dt.timedelta(days=25)  # ~18 labelled days since: enough rows
        assert record(older)
        days, change = pipeline.training_window(run, store)
        assert (days, change["pre_change"]) == (25, "dropped")
        summary = pipeline.extract(run)
        assert summary["window_start"] == older.isoformat()
        assert summary["change_onset"] == older.isoformat()
        assert record("2025-01-01")  # before the whole window: nothing changes
        assert pipeline.training_window(run, store) == (view.training.window_days, {})
        assert record(older, seen=AS_OF.isoformat())  # not known as of AS_OF yet
        assert pipeline.training_window(run, store) == (view.training.window_days, {})
    finally:
        record("2000-01-01")
        for tag in (ONSET_TAG, ONSET_FOUND_TAG):
            client.delete_registered_model_tag(view.name, tag)
