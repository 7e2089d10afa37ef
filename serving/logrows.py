"""What a worker and its shadow scorer write to the prediction log: the answer fields of the
view's kind, one log row per answered record, and the writer's settings.

Both processes build rows here, so a shadow row can never differ in shape from the
champion's row it is compared with by the live gate.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ctloop.core.metrics import Output
from ctloop.features.records import entity_of, logged_features
from ctloop.features.view import FeatureView
from ctloop.predlog.store import CHAMPION_ROLE, FROM_STORE
from ctloop.predlog.writer import PredictionLogWriter, WriterConfig
from ctloop.store.features import FeatureStore
from serving.config import ServingConfig


def answers_of(view: FeatureView, output: Output) -> list[dict[str, Any]]:
    """The per-record answer fields of the view's kind, as plain JSON-able values."""
    if output.proba is None:  # regression
        return [{"prediction": value} for value in output.predictions]
    classes = view.label.class_list
    rows = output.proba.tolist()
    if view.label.is_binary:
        pos = classes.index(str(view.label.positive_class))
        return [
            {"prediction": c, "score": p[pos], "probabilities": dict(zip(classes, p, strict=True))}
            for c, p in zip(output.predictions, rows, strict=True)
        ]
    return [
        {"prediction": c, "probabilities": dict(zip(classes, p, strict=True))}
        for c, p in zip(output.predictions, rows, strict=True)
    ]


def log_rows(
    view: FeatureView,
    version: str,
    values: Sequence[dict[str, Any]],
    ids: Sequence[str],
    answers: Sequence[dict[str, Any]],
    latency_ms: float,
    now: dt.datetime,
    from_store: Sequence[Sequence[str]] | None = None,
    role: str = CHAMPION_ROLE,
) -> list[dict[str, Any]]:
    """One prediction log row per answered record, naming the version that answered.

    `prediction` holds the class, or the value as exact decimal text (regression);
    `probabilities` the class probabilities, empty for regression; `features` the features
    as used, with `_from_store` naming those an online view took from the store.
    """
    feature_names = view.feature_names
    logged = [logged_features(view, rec, feature_names) for rec in values]
    for features, names in zip(logged, from_store or (), strict=False):
        if names:
            features[FROM_STORE] = list(names)
    # The JSON fields last: on MariaDB each JSON_TABLE column scans a row's object up to its
    # key, and a 17-feature object scanned eleven times cost 16 us of server CPU per row
    # (benchmarks/log_insert.py).
    return [
        {
            "request_id": rid,
            "feature_view": view.name,
            "model_version": version,
            "entity_id": entity_of(view, rec),
            "prediction": str(answer["prediction"]),
            "latency_ms": latency_ms,
            "created_at": now,
            "role": role,
            "probabilities": answer.get("probabilities", {}),
            "features": features,
        }
        for rid, rec, answer, features in zip(ids, values, answers, logged, strict=True)
    ]


def log_writer(
    view: FeatureView,
    store: FeatureStore,
    sink: Callable[[list[dict[str, Any]]], int],
    config: ServingConfig,
    state_dir: Path,
    on_count: Callable[[str, int], None] | None = None,
) -> PredictionLogWriter:
    """A started background writer with the service's settings. Every writer of a service
    shares one spill folder: a file a dead process left is claimed by the next writer.
    Before its first write the writer makes the view's typed log table (or gives an older
    one the view's new feature columns)."""
    return PredictionLogWriter(
        sink,
        WriterConfig(
            spill_dir=state_dir / "spill",
            batch_size=config.log_batch_size,
            flush_seconds=config.log_flush_seconds,
            max_queue=config.log_queue_max,
            retry_seconds=config.log_retry_seconds,
            journal=config.journal,
            journal_fsync_seconds=config.journal_fsync_seconds,
        ),
        prepare=functools.partial(store.init, [], log_views=[view]),
        probe=store.ping,
        on_count=on_count,
    ).start()
