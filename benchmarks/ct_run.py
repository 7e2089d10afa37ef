"""Wall time of a whole CT run vs a bare CatBoost fit on the same rows.

The ratio is the pipeline's overhead: extraction (one point-in-time read per run),
the data gate, MLflow logging and registration, the model gate's scoring, the infra check
and promotion. Each repeat starts from an empty MLflow store so that every run really
trains and registers (a re-run of the same data would reuse the version).

    uv run python benchmarks/ct_run.py --rows-per-day 2000 --days 60 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from ctloop.core.predictor import to_model_frame
from ctloop.features.view import load_view
from ctloop.ingest.synth import StreamConfig, stream
from ctloop.settings import Settings
from ctloop.store.features import FeatureStore
from ctloop.training import pipeline

ROOT = Path(__file__).resolve().parents[1]


def bare_fit(view, frame: pd.DataFrame) -> tuple[float, int]:
    """CatBoost alone on the rows, split and parameters ctloop's own fit uses (its
    `catboost_params`, `new_model` and `early_stopping_split`): the time of the fit and
    the number of training rows it saw, which the caller checks against the CT run's."""
    from ctloop.training.datagate import split_days
    from ctloop.training.fit import catboost_params, early_stopping_split, labels_of, new_model

    frame = frame.sort_values([view.event_date, view.entity], kind="stable").reset_index(drop=True)
    train = frame.loc[~split_days(view, frame).to_numpy()]
    stop = early_stopping_split(view, train)
    fit_rows, stop_rows = train.loc[~stop], train.loc[stop]
    model = new_model(view, catboost_params(view))
    start = time.perf_counter()
    model.fit(
        to_model_frame(view, fit_rows), labels_of(view, fit_rows),
        eval_set=(to_model_frame(view, stop_rows), labels_of(view, stop_rows)),
        use_best_model=True,
    )  # fmt: skip
    return time.perf_counter() - start, len(train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="mysql+mysqldb://root@127.0.0.1:3306")
    parser.add_argument("--rows-per-day", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    view = load_view("credit_score", ROOT / "features")
    db = f"ctloop_bench_{uuid.uuid4().hex[:8]}"
    server = sa.create_engine(args.server, poolclass=sa.pool.NullPool)
    with server.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{db}`"))
    url = f"{args.server}/{db}"
    try:
        store = FeatureStore(url)
        store.init([view])
        start = dt.date(2026, 1, 1)
        as_of = start + dt.timedelta(days=args.days)
        cfg = StreamConfig(rows_per_day=args.rows_per_day, label_delay_days=7)
        for _, features, labels in stream(view, start, args.days, cfg):
            store.ingest(view, features, labels[labels["arrived_at"] < pd.Timestamp(as_of)])
        frame = store.training_set(view, as_of)
        print(f"training set: {len(frame)} labelled rows as of {as_of}")

        ct_times, fit_times = [], []
        for i in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                settings = Settings(
                    data_dir=Path(tmp), features_dir=ROOT / "features", feature_store_url=url,
                    mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db",
                )  # fmt: skip
                run = pipeline.Run(view, as_of, "manual", "benchmark", "", settings)
                t0 = time.perf_counter()
                result = pipeline.run_all(run)
                ct = time.perf_counter() - t0
            assert result["promoted"], result
            fit, fit_train_rows = bare_fit(view, frame)
            ct_train_rows = result["extract"]["train_rows"]
            assert fit_train_rows == ct_train_rows, (fit_train_rows, ct_train_rows)
            ct_times.append(ct)
            fit_times.append(fit)
            print(f"run {i + 1}: CT run {ct:.1f}s, bare CatBoost fit {fit:.1f}s")
        ct_med, fit_med = statistics.median(ct_times), statistics.median(fit_times)
        print()
        machine = platform.processor() or platform.machine()
        print(f"machine: {machine}, python {platform.python_version()}")
        print("| rows | CT run (median) | bare CatBoost fit (median) | overhead ratio |")
        print("|---:|---:|---:|---:|")
        print(f"| {len(frame):,} | {ct_med:.1f} s | {fit_med:.1f} s | {ct_med / fit_med:.2f}x |")
    finally:
        with server.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{db}`"))


if __name__ == "__main__":
    main()
