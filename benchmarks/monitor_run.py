"""Monitor run time on 100k logged predictions (MariaDB prediction_log, real champion).

Setup (not timed): synthetic history, a champion trained and promoted by the pipeline,
and N prediction-log rows written in bulk from that champion's predictions. Timed: one
`monitor_step` over the window (read logs, per-feature statistics, prediction drift,
label join for live accuracy, drift_report rows, HTML report to MLflow).

    uv run python benchmarks/monitor_run.py --rows 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from ctloop.core.predictor import Predictor
from ctloop.features.view import load_view
from ctloop.ingest.synth import StreamConfig, generate_day, stream
from ctloop.monitoring import check as monitor
from ctloop.predlog.store import PredictionLog
from ctloop.registry import Registry
from ctloop.settings import Settings
from ctloop.store.features import FeatureStore
from ctloop.training import pipeline

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="mysql+mysqldb://root@127.0.0.1:3306")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    view = load_view("credit_score", ROOT / "features")
    db = f"ctloop_bench_{uuid.uuid4().hex[:8]}"
    server = sa.create_engine(args.server, poolclass=sa.pool.NullPool)
    with server.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{db}`"))
    url = f"{args.server}/{db}"
    tmp = tempfile.TemporaryDirectory()
    try:
        settings = Settings(data_dir=Path(tmp.name), features_dir=ROOT / "features",
                            feature_store_url=url,
                            mlflow_tracking_uri=f"sqlite:///{tmp.name}/mlflow.db")  # fmt: skip
        store = FeatureStore(url)
        store.init([view])
        start, as_of = dt.date(2026, 1, 1), dt.date(2026, 1, 31)
        for _, features, labels in stream(view, start, 30, StreamConfig(rows_per_day=500)):
            store.ingest(view, features, labels[labels["arrived_at"] < pd.Timestamp(as_of)])
        assert pipeline.run_all(pipeline.Run(view, as_of, "manual", "", "", settings))["promoted"]
        registry = Registry(settings.tracking_uri)
        info = registry.champion(view.name)
        predictor = Predictor.load(view, info.uri, info.version)
        features, labels = generate_day(as_of, StreamConfig(rows_per_day=args.rows, seed=3,
                                                            label_delay_days=0))  # fmt: skip
        store.ingest(view, features, labels)
        output = predictor.predict(features)
        classes, proba = output.predictions, output.proba
        t0 = dt.datetime.combine(as_of, dt.time(0))
        records = features.drop(columns=[view.entity]).astype(object)
        records = records.where(records.notna(), None)
        rows = [
            {"request_id": uuid.uuid4().hex, "feature_view": view.name,
             "model_version": info.version, "entity_id": entity,
             "features": json.dumps(rec, default=str), "prediction": cls,
             "probabilities": json.dumps(dict(zip(view.label.class_list, map(float, p),
                                                  strict=True))),
             "latency_ms": 1.0, "created_at": t0 + dt.timedelta(milliseconds=500 * i)}
            for i, (entity, rec, cls, p) in enumerate(zip(
                features[view.entity], records.to_dict("records"), classes, proba, strict=True))
        ]  # fmt: skip
        for i in range(0, len(rows), 10_000):
            PredictionLog(store).write(rows[i : i + 10_000])
        since, until = t0, t0 + dt.timedelta(days=2)
        times = []
        for i in range(args.repeats):
            began = time.perf_counter()
            decision = monitor.monitor_step(view, store, registry, since, until)
            times.append(time.perf_counter() - began)
            print(f"run {i + 1}: {times[-1]:.2f}s  {decision['summary']}")
        print()
        print("| logged rows | monitor run (median) | rows/s |")
        print("|---:|---:|---:|")
        med = statistics.median(times)
        print(f"| {args.rows:,} | {med:.2f} s | {args.rows / med:,.0f} |")
    finally:
        tmp.cleanup()
        with server.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{db}`"))


if __name__ == "__main__":
    main()
