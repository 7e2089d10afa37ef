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
import contextlib
import datetime as dt
import json
import logging
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from ctloop.core.predictor import Predictor
from ctloop.features.view import FeatureView, load_view
from ctloop.ingest.synth import StreamConfig, generate_day, stream
from ctloop.monitoring import check as monitor
from ctloop.predlog.store import PredictionLog
from ctloop.registry import Registry
from ctloop.settings import Settings
from ctloop.store import tables
from ctloop.store.features import FeatureStore
from ctloop.training import pipeline

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.goals import P5_MEMORY, P5_TIME, verdict  # noqa: E402

AS_OF = dt.date(2026, 1, 31)
DAY_US = 86_400_000_000  # a day in microseconds


def monitor_goals(results: list[tuple[int, int | None, list[float], list[float]]]) -> list[str]:
    """P5 as this run's medians decide it, at one `max_rows_read` (the view's own when it
    was run, else the first given): the check's time on the largest window of at least
    10M rows, and the client's peak memory on the largest window against the smallest
    (independent of the rows: about equal)."""
    bound = None if any(r[1] is None for r in results) else results[0][1]
    judged = sorted((r for r in results if r[1] == bound), key=lambda r: r[0])  # one bound
    big = [r for r in judged if r[0] >= 10_000_000]
    took = statistics.median(big[-1][2]) if big else float("nan")
    smallest, largest = judged[0], judged[-1]
    memory = statistics.median(largest[3]) / statistics.median(smallest[3])
    if largest[0] == smallest[0]:
        memory = float("nan")  # one window size: nothing to compare
    return [
        verdict(P5_TIME, took, f"{big[-1][0]:,} rows" if big else "no 10M-row window in this run"),
        verdict(P5_MEMORY, memory, f"{largest[0]:,} vs {smallest[0]:,} rows"),
    ]


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
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the database and the registry (named in DIR/kept.json) "
                             "and reuse them on a later run with the same DIR and layout: "
                             "growing a 10M-row log takes about half an hour")  # fmt: skip
    parser.add_argument("--grow-pool", type=int, default=0, metavar="BYTES",
                        help="raise MariaDB's innodb_buffer_pool_size to BYTES while the log "
                             "grows, and set it back before anything is timed (a server-wide "
                             "setting: on a benchmark machine only). 8589934592 grows a "
                             "10M-row log in minutes instead of half an hour")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sizes = sorted(int(n) for n in args.rows.split(","))
    bounds = [int(n) for n in args.max_rows_read.split(",") if n] or [None]
    if sizes[0] > 100_000:
        parser.error("--rows: the first size is predicted for real: at most 100000")
    view = load_view("credit_score", ROOT / "features")
    server = sa.create_engine(args.server, poolclass=sa.pool.NullPool)
    kept_file = args.keep / "kept.json" if args.keep else None
    kept = json.loads(kept_file.read_text()) if kept_file and kept_file.exists() else None
    if kept is not None:
        if (kept["layout"], kept["base"]) != (args.layout, sizes[0]):
            parser.error(f"{kept_file} holds a {kept['layout']} log of base {kept['base']}: "
                         "delete it (and its database) to start again")  # fmt: skip
        db = kept["database"]
        print(f"reusing database {db} named in {kept_file}", flush=True)
    else:
        db = f"ctloop_bench_{uuid.uuid4().hex[:8]}"
        with server.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{db}`"))
    tmp = None if args.keep else tempfile.TemporaryDirectory()
    workdir = args.keep if args.keep else Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    url = f"{args.server}/{db}"
    try:
        settings = Settings(data_dir=workdir, features_dir=ROOT / "features",
                            feature_store_url=url,
                            mlflow_tracking_uri=f"sqlite:///{workdir}/mlflow.db")  # fmt: skip
        store = FeatureStore(url)
        table = view.log_table if args.layout == "typed" else tables.PREDICTION_LOG
        if kept is None:
            last = set_up(store, view, settings, args.layout, sizes[0])
            if kept_file is not None:
                kept_file.write_text(json.dumps({"database": db, "layout": args.layout,
                                                 "base": sizes[0], "last": last}))  # fmt: skip
        else:
            last = kept["last"]
        spacing = DAY_US // sizes[0]  # microseconds: the base rows fill the day
        t0 = dt.datetime.combine(AS_OF, dt.time(0))
        since, until = t0, t0 + dt.timedelta(days=2)  # labels land by then
        results = []
        spawn = multiprocessing.get_context("spawn")
        for size in sizes:
            held = PredictionLog(store).count(view.name, since=since, before=until)
            if held > size:  # a kept log only grows
                print(f"skipping {size:,} rows: the kept window holds {held:,}", flush=True)
                continue
            with buffer_pool(server, args.grow_pool):
                grow(store, table, last, sizes[0], size, (since, until), spacing)
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
                if times:  # --repeats 0 only grows the log
                    results.append((size, bound, times, peaks))
        if not results:  # --repeats 0: the log grown (and kept), nothing timed
            return
        print()
        print("| logged rows in the window | `max_rows_read` | check (median) | runs | "
              "client peak RSS (median) |")  # fmt: skip
        print("|---:|---:|---:|---|---:|")
        for size, bound, times, peaks in results:
            runs = " / ".join(f"{t:.1f}" for t in times)
            print(f"| {size:,} | {bound or 'view'} | {statistics.median(times):.2f} s | {runs} s | "
                  f"{statistics.median(peaks):.0f} MiB |")  # fmt: skip
        print("\nGoals of issue 19, from this run's medians:")
        for line in monitor_goals(results):
            print(line)
    finally:
        if tmp is not None:
            tmp.cleanup()
            with server.begin() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{db}`"))


def set_up(
    store: FeatureStore, view: FeatureView, settings: Settings, layout: str, base: int
) -> int:
    """The history, a promoted champion and `base` log rows of its real predictions on
    `AS_OF`; returns the last base row's id (copies are made of the rows up to it)."""
    store.init([view])
    if layout == "json":  # the view logs to the shared table, as before typed logs
        with store.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {view.log_table}"))
    table = view.log_table if layout == "typed" else tables.PREDICTION_LOG
    start = dt.date(2026, 1, 1)
    for _, features, labels in stream(view, start, 30, StreamConfig(rows_per_day=500)):
        store.ingest(view, features, labels[labels["arrived_at"] < pd.Timestamp(AS_OF)])
    assert pipeline.run_all(pipeline.Run(view, AS_OF, "manual", "", "", settings))["promoted"]
    info = Registry(settings.tracking_uri).champion(view.name)
    predictor = Predictor.load(view, info.uri, info.version)
    features, labels = generate_day(AS_OF, StreamConfig(rows_per_day=base, seed=3,
                                                        label_delay_days=0))  # fmt: skip
    store.ingest(view, features, labels)
    output = predictor.predict(features)
    classes, proba = output.predictions, output.proba
    t0 = dt.datetime.combine(AS_OF, dt.time(0))
    records = features.drop(columns=[view.entity]).astype(object)
    records = records.where(records.notna(), None)
    spacing = DAY_US // base  # microseconds: the base rows fill the day
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
    with store.connect() as conn:  # the base rows: every row logged before copy 1
        return int(conn.execute(sa.text(f"SELECT MAX(id) FROM {table}")).scalar_one())  # noqa: S608


@contextlib.contextmanager
def buffer_pool(server: sa.Engine, size: int) -> Iterator[None]:
    """MariaDB's buffer pool at `size` bytes inside the block (0: untouched), back to its
    size before once the block ends and the resize has completed, so nothing is timed on
    a pool the user did not configure."""
    if not size:
        yield
        return
    before = _pool_size(server)
    try:
        if size != before:
            _resize_pool(server, size)
        yield
    finally:
        if _pool_size(server) != before:
            _resize_pool(server, before)


def _pool_size(server: sa.Engine) -> int:
    with server.connect() as conn:
        return int(conn.execute(sa.text("SELECT @@innodb_buffer_pool_size")).scalar())


def _resize_pool(server: sa.Engine, size: int, timeout: float = 600.0) -> None:
    """Ask for `size` bytes and wait until the resize is done. The server rounds the size
    to whole chunks, so the size it reports right after the SET is the one waited for."""
    with server.connect() as conn:
        conn.execute(sa.text("SET GLOBAL innodb_buffer_pool_size = :n"), {"n": size})
        target = int(conn.execute(sa.text("SELECT @@innodb_buffer_pool_size")).scalar())
        deadline = time.monotonic() + timeout
        while True:
            status = conn.execute(
                sa.text("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_resize_status'")
            ).fetchone()
            text = status[1] if status else ""
            if not text or "Completed" in text or "did not change" in text:
                print(f"  buffer pool at {target / 2**20:,.0f} MiB", flush=True)
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"the buffer pool did not reach {target} bytes: {text!r}")
            time.sleep(0.5)


def grow(
    store: FeatureStore,
    table: str,
    last: int,
    base: int,
    size: int,
    window: tuple[dt.datetime, dt.datetime],
    spacing: int,
) -> None:
    """Copies of the base rows (ids up to `last`) until the log holds `size`: MariaDB copies
    them itself, copy k `k` microseconds after its original (within the row spacing, so the
    copies stay inside the day), request ids suffixed `.k`, one statement per copy. The
    next copy's number is the number of copies in the window (a kept log grows on; rows a
    user added outside it, say a look-back day, are left alone)."""
    with store.connect() as conn:
        names = [c["name"] for c in sa.inspect(conn).get_columns(table)]
    listed = ", ".join(f"`{c}`" for c in names if c not in ("id", "request_id", "created_at"))
    statement = sa.text(
        f"INSERT INTO {table} (request_id, created_at, {listed}) "  # noqa: S608
        f"SELECT CONCAT(request_id, '.', :k), created_at + INTERVAL :k MICROSECOND, "
        f"{listed} FROM {table} WHERE id <= :last ORDER BY id LIMIT :n"
    )
    have = PredictionLog(store).count(since=window[0], before=window[1])
    copy = -(-have // base)  # the base is copy 0; a partial last copy is not continued
    while have < size:
        if copy >= spacing:
            raise SystemExit(f"{size} rows need more copies than {spacing} us apart")
        with store.begin() as conn:
            have += conn.execute(statement, {"k": copy, "last": last, "n": size - have}).rowcount
        copy += 1
        if copy % 10 == 0:
            print(f"  log grown to {have:,} rows", flush=True)


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
