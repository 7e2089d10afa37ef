"""Step 3: train a candidate on the run's training set and register it in MLflow with
everything a reviewer needs (params, metrics, plots, lineage, the reference profile the
data gate and the monitor compare against) — or reuse the version already trained on the
same data as of the same date, so re-running a date is safe."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import mlflow
import mlflow.catboost
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.types import ColSpec, DataType, Schema

from ctloop.core.predictor import to_model_frame
from ctloop.features.view import FeatureView
from ctloop.registry import (
    REFERENCE_ARTIFACT,
    Registry,
    VersionInfo,
    metric_tags,
    version_description,
)
from ctloop.training import fit as training
from ctloop.training.datagate import split_days
from ctloop.training.run import Run, git_commit
from ctloop.training.trainset import load

log = logging.getLogger(__name__)


def record_reuse(run: Run, registry: Registry, version: VersionInfo) -> str:
    """Leave this run's trigger and reason on a version it reuses (and on its MLflow run),
    so a reason typed in the Trigger form is never lost because no new model was needed."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    trace = (f"trigger={run.trigger}; run={run.airflow_run_id or 'cli'}; "
             f"as_of={run.as_of.isoformat()}; reason={run.reason[:300]}")  # fmt: skip
    registry.set_tags(run.view.name, version.version, {f"reused.{stamp}": trace})
    if version.run_id:
        registry.client.set_tag(version.run_id, f"ctloop.reused.{stamp}", trace)
    return trace


def train(
    run: Run, store_url: str | None = None, expected_fingerprint: str | None = None
) -> dict[str, Any]:
    """Step 3: train, log everything to MLflow and register a candidate version.

    A version already trained on the same data as of the same date is reused instead of
    registering a duplicate, so re-running a date is safe.
    """
    trainset = load(run, store_url, expected_fingerprint)
    frame, summary = trainset.frame, trainset.summary
    registry = run.registry()
    name = run.view.name
    existing = registry.find(name, data_fingerprint=summary["fingerprint"], as_of=summary["as_of"])
    if existing:
        version = existing[-1]
        log.info(
            "version %s of %s was already trained on this data; reusing it", version.version, name
        )
        record_reuse(run, registry, version)
        return {**summary, "version": version.version, "run_id": version.run_id, "reused": True}

    weigh_before = (
        pd.Timestamp(summary["change_onset"]) if summary.get("pre_change") == "weighted" else None
    )
    result = training.fit(run.view, frame, pd.Timestamp(run.as_of), weigh_before=weigh_before)
    registry.activate()
    experiment_id = registry.experiment_id(name)
    tags = {
        "trigger": run.trigger,
        "reason": run.reason[:500],
        "as_of": summary["as_of"],
        "window": f"{summary['window_start']}..{summary['window_end']}",
        "train_rows": summary["train_rows"],
        "validation_rows": summary["validation_rows"],
        "data_fingerprint": summary["fingerprint"],
        "git_commit": git_commit(),
        "airflow_run_id": run.airflow_run_id or "none",
        "gate.data": "passed",
    }
    if summary.get("pre_change"):
        tags["change_onset"] = f"{summary['change_onset']} ({summary['pre_change']} before)"
    run_name = f"{name}-{summary['as_of']}-{run.trigger}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as active:
        mlflow.set_tags({f"ctloop.{k}": v for k, v in tags.items()})
        mlflow.log_params({k: v for k, v in result.params.items() if k != "class_names"})
        mlflow.log_params(
            {"window_days": run.window_days,
             "validation_days": run.view.training.validation_days}
        )  # fmt: skip
        mlflow.log_metrics({f"val_{k}": v for k, v in result.metrics.items()})
        features = to_model_frame(run.view, frame)
        is_val = split_days(run.view, frame).to_numpy()
        for context, mask in (("training", ~is_val), ("validation", is_val)):
            part = frame.loc[mask, [*run.view.feature_names, run.view.label.name]]
            dataset = mlflow.data.from_pandas(
                part, name=f"{name}_{context}_{summary['as_of']}", targets=run.view.label.name
            )
            mlflow.log_input(dataset, context=context)
        mlflow.log_dict(result.reference, REFERENCE_ARTIFACT)
        mlflow.log_dict(summary, "data/summary.json")
        figures = training.evaluation_figures(
            run.view, result.validation[run.view.label.name], result.output
        )
        figures["plots/feature_importance.png"] = training.importance_figure(run.view, result.model)
        import matplotlib.pyplot as plt  # (c) heavy, figures only (the backend is set)

        for artifact, figure in figures.items():
            mlflow.log_figure(figure, artifact)
            plt.close(figure)  # pyplot keeps every figure open: a long worker would leak
        example = features.head(5)
        info = mlflow.catboost.log_model(
            result.model,
            name="model",
            registered_model_name=name,
            signature=model_signature(run.view, result.model, example),
            input_example=example,
            # the environment is pinned by uv.lock; inferring requirements costs ~20 s a model
            pip_requirements=mlflow.catboost.get_default_pip_requirements(),
        )
        version = str(info.registered_model_version)
        run_id = active.info.run_id
    registry.describe_model(name, run.view.description)
    tagged = registry.set_tags(
        name, version, {**tags, **metric_tags(result.metrics, run.view.primary_metric)}
    )
    registry.client.set_tag(run_id, "mlflow.note.content", run_note(tagged))
    log.info("registered %s version %s from run %s", name, version, run_id)
    return {**summary, "version": version, "run_id": run_id, "reused": False,
            "metrics": result.metrics}  # fmt: skip


def run_note(info: VersionInfo) -> str:
    """The run's description on MLflow's Overview: what it trained on and measured, as the
    version says it, and where the decisions are (the gates run after training, so they
    belong to the version's description, which is rewritten as they decide)."""
    known = [p for p in version_description(info).split("\n\n")
             if p.startswith(("Trained as of", "Validation:"))]  # fmt: skip
    known.append(
        f"Registered as version {info.version} of {info.name}: the version's description "
        "says what the gates decided and whether it was promoted."
    )
    return "\n\n".join(known)


def model_signature(view: FeatureView, model: Any, example: pd.DataFrame) -> Any:
    """The MLflow signature from the view, not inferred from five rows: nullable features
    are optional inputs, numbers are doubles, categories strings; the output is one
    probability per class (classification) or the value (regression)."""
    inputs = Schema([
        ColSpec(DataType.double if f.is_numeric else DataType.string, f.name,
                required=not f.nullable)
        for f in view.features
    ])  # fmt: skip
    answer = model.predict(example) if view.label.is_regression else model.predict_proba(example)
    outputs = infer_signature(example, answer).outputs
    return ModelSignature(inputs=inputs, outputs=outputs)
