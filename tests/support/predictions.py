"""A champion's answers written to the prediction log as serving writes them.

The monitor's tests and the monitor DAG's test need days of logged traffic without paying
for a `bentoml serve` per day: the real champion predicts in-process and the rows go
through the real `PredictionLog`. The HTTP path that writes them in production is tested
in `tests/integration/test_serving.py`.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pandas as pd

from ctloop.core.predictor import Predictor
from ctloop.features.view import FeatureView
from ctloop.predlog.store import PredictionLog
from ctloop.store.features import FeatureStore


def log_day(
    view: FeatureView, store: FeatureStore, predictor: Predictor, day: dt.date,
    features: pd.DataFrame,
) -> None:  # fmt: skip
    """Log the champion's predictions for one day of traffic, as serving does.

    Time is simulated: the day's requests are spread over that day from 08:00, so a
    monitor window over the day sees them.
    """
    output = predictor.predict(features)
    classes, proba = output.predictions, output.proba
    start = dt.datetime.combine(day, dt.time(8))
    rows = []
    for i, (record, cls, p) in enumerate(
        zip(features.to_dict("records"), classes, proba, strict=True)
    ):
        sent = {k: (None if pd.isna(v) else v) for k, v in record.items() if k != view.entity}
        sent[view.event_date] = day.isoformat()
        rows.append({
            "request_id": uuid.uuid4().hex, "feature_view": view.name,
            "model_version": predictor.version, "entity_id": record[view.entity],
            "features": json.dumps(sent, default=str), "prediction": cls,
            "probabilities": json.dumps(dict(zip(view.label.class_list, map(float, p),
                                                  strict=True))),
            "latency_ms": 1.0, "created_at": start + dt.timedelta(seconds=20 * i),
        })  # fmt: skip
    PredictionLog(store).write(rows)
