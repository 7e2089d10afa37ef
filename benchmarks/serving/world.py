"""A served world for the serving benchmark: a real CatBoost champion in a real MLflow store.

Trains on the synthetic stream with `ctloop.training.fit` (fewer iterations than the view
asks for: the benchmark measures serving, not model quality), registers the model the way
the pipeline does (`mlflow.catboost.log_model(..., registered_model_name=view)`) and moves
the `champion` alias with `Registry.promote`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from ctloop.core.predictor import to_model_frame
from ctloop.features.view import FeatureView
from ctloop.ingest.synth import StreamConfig, stream
from ctloop.registry import GATES, Registry
from ctloop.training import fit as training
from ctloop.training.pipeline import model_signature

START = dt.date(2026, 1, 1)


def labelled_frame(view: FeatureView, days: int = 20, rows_per_day: int = 300, seed: int = 5):
    """Synthetic feature rows joined to their labels."""
    parts = []
    config = StreamConfig(seed=seed, rows_per_day=rows_per_day)
    for _, features, labels in stream(view, START, days, config):
        keys = [view.entity, view.event_date]
        parts.append(features.merge(labels[[*keys, view.label.name]], on=keys))
    return pd.concat(parts, ignore_index=True)


def register_version(
    view: FeatureView, tracking_uri: str, artifact_root: Path, *, seed: int = 5,
    iterations: int = 60, promote: bool = True,
) -> str:  # fmt: skip
    """Train, register and (by default) promote one version; returns its number."""
    import mlflow
    import mlflow.catboost

    small = view.model_copy(
        update={"training": view.training.model_copy(update={"iterations": iterations,
                                                             "seed": seed})}
    )  # fmt: skip
    frame = labelled_frame(view, seed=seed)
    as_of = pd.Timestamp(START + dt.timedelta(days=20))
    result = training.fit(small, frame, as_of)
    registry = Registry(tracking_uri, artifact_root).activate()
    experiment = registry.experiment_id(view.name)
    with mlflow.start_run(experiment_id=experiment, run_name=f"serving-bench-{seed}"):
        mlflow.log_metrics({f"val_{k}": v for k, v in result.metrics.items()})
        example = to_model_frame(view, frame.head(5))
        info = mlflow.catboost.log_model(
            result.model,
            name="model",
            registered_model_name=view.name,
            signature=model_signature(view, result.model, example),
            input_example=example,
            pip_requirements=["catboost"],  # skip requirement inference: ~10 s per model
        )
    version = str(info.registered_model_version)
    window = f"{START.isoformat()}..{(START + dt.timedelta(days=19)).isoformat()}"
    registry.set_tags(view.name, version, {"window": window, "trigger": "manual",
                                           "as_of": as_of.date().isoformat()})  # fmt: skip
    registry.set_tags(view.name, version,
                      {f"metric.{k}": f"{v:.4f}" for k, v in result.metrics.items()})  # fmt: skip
    registry.set_tags(view.name, version, {f"gate.{g}": "passed" for g in GATES})
    if promote:
        registry.promote(view.name, version)
    return version
