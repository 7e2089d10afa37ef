"""Monitor check time and client memory on 100k to 10M logged predictions (MariaDB).

Setup (not timed): synthetic history, a champion trained and promoted by the pipeline,
100k prediction-log rows of that champion's real predictions (labels landed), and for the
larger sizes copies of them made by MariaDB itself (`INSERT ... SELECT`, each copy a few
microseconds later on the same day, its own request ids). Each size is checked for its
row count first. Timed: one `monitor_step` over the day (drift from the database's
summaries of every row in the typed log, or from the bounded read in the JSON log;
prediction drift, the label join for live accuracy and skew on the bounded read,
`drift_report` rows, the HTML report to MLflow), each in a fresh process whose peak RSS is
the check's client memory.

`--layout typed` (default) logs to the view's own table (`<view>_predictions`, what
`init-db` makes now); `--layout json` to the shared JSON table, as before typed logs.

    uv run python benchmarks/monitor_run.py --rows 100000,1000000,10000000 --repeats 3 \
        --max-rows-read 200000,100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing
import resource
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
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
from ctloop.store import tables
from ctloop.store.features import FeatureStore
from ctloop.training import pipeline

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="mysql+mysqldb://root@127.0.0.1:3306")
    parser.add_argument("--rows", default="100000,1000000,10000000",
                        help="window sizes, comma-separated; the first at most 100000")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-rows-read", default="",
                        help="drift.max_rows_read values to check each size with, comma-"
                             "separated (default: the view file's)")  # fmt: skip
    parser.add_argument("--layout", choices=["typed", "json"], default="typed",
                        help="the view's typed log table, or the shared JSON table")  # fmt: skip
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
        table = view.log_table if args.layout == "typed" else tables.PREDICTION_LOG
        if args.layout == "json":  # the view logs to the shared table, as before typed logs
            with store.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE {view.log_table}"))
        start, as_of = dt.date(2026, 1, 1), dt.date(2026, 1, 31)
        for _, features, labels in stream(view, start, 30, StreamConfig(rows_per_day=500)):
            store.ingest(view, features, labels[labels["arrived_at"] < pd.Timestamp(as_of)])
        assert pipeline.run_all(pipeline.Run(view, as_of, "manual", "", "", settings))["promoted"]
        registry = Registry(settings.tracking_uri)
        info = registry.champion(view.name)
        predictor = Predictor.load(view, info.uri, info.version)
        sizes = sorted(int(n) for n in args.rows.split(","))
        bounds = [int(n) for n in args.max_rows_read.split(",") if n] or [None]
        base = sizes[0]
        if base > 100_000:
            parser.error("--rows: the first size is predicted for real: at most 100000")
        features, labels = generate_day(as_of, StreamConfig(rows_per_day=base, seed=3,
                                                            label_delay_days=0))  # fmt: skip
        store.ingest(view, features, labels)
        output = predictor.predict(features)
        classes, proba = output.predictions, output.proba
        t0 = dt.datetime.combine(as_of, dt.time(0))
        records = features.drop(columns=[view.entity]).astype(object)
        records = records.where(records.notna(), None)
        spacing = 86_000_000 // base  # microseconds: the base rows fill the day
        rows = [
            {"request_id": uuid.uuid4().hex, "feature_view": view.name,
             "model_version": info.version, "entity_id": entity,
             "features": json.dumps(rec, default=str), "prediction": cls,
             "probabilities": json.dumps(dict(zip(view.label.class_list, map(float, p),
                                                  strict=True))),
             "latency_ms": 1.0, "created_at": t0 + dt.timedelta(microseconds=spacing * i)}
            for i, (entity, rec, cls, p) in enumerate(zip(
                features[view.entity], records.to_dict("records"), classes, proba, strict=True))
        ]  # fmt: skip
        for i in range(0, len(rows), 10_000):
            PredictionLog(store).write(rows[i : i + 10_000])
        since, until = t0, t0 + dt.timedelta(days=2)  # labels land by then
        results = []
        spawn = multiprocessing.get_context("spawn")
        copy = 1
        with store.connect() as conn:  # the base rows: every row logged before copy 1
            last = conn.execute(sa.text(f"SELECT MAX(id) FROM {table}")).scalar_one()  # noqa: S608
        for size in sizes:
            copy = grow(store, table, last, size, spacing, copy)
            logged = PredictionLog(store).count(view.name, since=since, before=until)
            if logged != size:
                raise SystemExit(f"the window holds {logged} rows, not {size}")
            for bound in bounds:
                times, peaks = [], []
                for i in range(args.repeats):  # rounds: each in a fresh process
                    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                        took, peak, summary = pool.submit(
                            timed_check, url, str(settings.tracking_uri), since, until, bound,
                        ).result()  # fmt: skip
                    times.append(took)
                    peaks.append(peak)
                    print(f"{size:,} rows, max_rows_read {bound or 'view'}, run {i + 1}: "
                          f"{took:.2f} s, peak RSS {peak:.0f} MiB  {summary}",
                          flush=True)  # fmt: skip
                results.append((size, bound, times, peaks))
        print()
        print("| logged rows in the window | `max_rows_read` | check (median) | runs | "
              "client peak RSS (median) |")  # fmt: skip
        print("|---:|---:|---:|---|---:|")
        for size, bound, times, peaks in results:
            runs = " / ".join(f"{t:.1f}" for t in times)
            print(f"| {size:,} | {bound or 'view'} | {statistics.median(times):.2f} s | {runs} s | "
                  f"{statistics.median(peaks):.0f} MiB |")  # fmt: skip
    finally:
        tmp.cleanup()
        with server.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{db}`"))


def grow(store: FeatureStore, table: str, last: int, size: int, spacing: int, copy: int) -> int:
    """Copies of the base rows (ids up to `last`) until the log holds `size`: MariaDB copies
    them itself, copy k `k` microseconds after its original (within the row spacing, so the
    copies stay inside the day), request ids suffixed `.k`, one statement per copy.
    Returns the next copy's number."""
    with store.connect() as conn:
        names = [c["name"] for c in sa.inspect(conn).get_columns(table)]
    listed = ", ".join(f"`{c}`" for c in names if c not in ("id", "request_id", "created_at"))
    statement = sa.text(
        f"INSERT INTO {table} (request_id, created_at, {listed}) "  # noqa: S608
        f"SELECT CONCAT(request_id, '.', :k), created_at + INTERVAL :k MICROSECOND, "
        f"{listed} FROM {table} WHERE id <= :last ORDER BY id LIMIT :n"
    )
    have = PredictionLog(store).count()
    while have < size:
        if copy >= spacing:
            raise SystemExit(f"{size} rows need more copies than {spacing} us apart")
        with store.begin() as conn:
            have += conn.execute(statement, {"k": copy, "last": last, "n": size - have}).rowcount
        copy += 1
        if copy % 10 == 0:
            print(f"  log grown to {have:,} rows", flush=True)
    return copy


def timed_check(
    url: str, tracking_uri: str, since: dt.datetime, until: dt.datetime, max_rows: int | None
) -> tuple[float, float, str]:
    """One monitor check in this (fresh) process: seconds, peak RSS in MiB, its line."""
    logging.basicConfig(level=logging.WARNING)
    view = load_view("credit_score", ROOT / "features")
    if max_rows is not None:
        drift = view.drift.model_copy(update={"max_rows_read": max_rows})
        view = view.model_copy(update={"drift": drift})
    store, registry = FeatureStore(url), Registry(tracking_uri)
    began = time.perf_counter()
    decision = monitor.monitor_step(view, store, registry, since, until)
    took = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return took, peak, decision["summary"]


if __name__ == "__main__":
    main()
