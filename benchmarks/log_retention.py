"""Retention of one expired day of prediction log on MariaDB: day partition dropped against
chunked DELETE, and what a serving writer inserting meanwhile waits.

For each mode and run, a fresh database: the log as `ctloop init-db` makes it (the view's
own typed table, partitioned by day) or as an older ctloop made it (one plain shared
table), `--rows` rows logged on one day a
month ago (100,000 written by the log's own bulk path, the rest copied by MariaDB itself,
each copy its own request ids), plus today's traffic. The day's row count is checked
before anything is timed. Timed: `retention.prune` of that day, while a thread writes
100-row batches of today's traffic through `PredictionLog.write` every 20 ms; reported
are the prune's wall time and the writer's slowest and median batch during it (a writer
that waits behind the prune is what serving would feel: its queue grows, then spills).

    uv run python -u benchmarks/log_retention.py --rows 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from ctloop.features.view import load_view
from ctloop.predlog import retention
from ctloop.predlog.store import PredictionLog
from ctloop.store import partitions, tables
from ctloop.store.engine import Database
from ctloop.store.features import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
BASE_ROWS = 100_000
WRITER_BATCH, WRITER_PAUSE = 100, 0.02


def log_row(view: str, names: list[str], rid: str, at: dt.datetime) -> dict:
    return {"request_id": rid, "feature_view": view, "model_version": "3", "entity_id": rid[-12:],
            "features": {n: 0.5 + i for i, n in enumerate(names)}, "prediction": "good",
            "probabilities": {"good": 0.7, "standard": 0.2, "poor": 0.1},
            "latency_ms": 1.5, "created_at": at, "role": "champion"}  # fmt: skip


def fill_day(
    db: Database, table: str, view: str, names: list[str], day: dt.date, rows: int
) -> None:
    """`rows` log rows on `day`: the base written by the log (into `table`, the view's own
    or the shared one), the rest copied by MariaDB."""
    start = dt.datetime.combine(day, dt.time(0, 0, 1))
    base = min(rows, BASE_ROWS)
    step = 86_000 / base
    log = PredictionLog(db)
    for lo in range(0, base, 5_000):
        log.write([log_row(view, names, f"old-{i}", start + dt.timedelta(seconds=i * step))
                   for i in range(lo, min(lo + 5_000, base))])  # fmt: skip
    with db.connect() as conn:
        cols = [c["name"] for c in sa.inspect(conn).get_columns(table)
                if c["name"] not in ("id", "request_id")]  # fmt: skip
    listed = ", ".join(f"`{c}`" for c in cols)
    copy = 0
    while True:
        have = log.count(view)
        if have >= rows:
            break
        copy += 1
        with db.begin() as conn:
            conn.execute(sa.text(
                f"INSERT INTO {table} (request_id, {listed}) "  # noqa: S608
                f"SELECT CONCAT(request_id, '.{copy}'), {listed} FROM {table} "
                f"WHERE request_id LIKE 'old-%' AND request_id NOT LIKE '%.%' LIMIT :n"
            ), {"n": rows - have})  # fmt: skip
    got = log.count(view, since=start.replace(second=0), before=start + dt.timedelta(days=1))
    if got != rows:
        raise SystemExit(f"the day holds {got} rows, not {rows}")


def one_run(server: str, partitioned: bool, rows: int) -> dict[str, float]:
    view = load_view("credit_score", ROOT / "features")
    names = [f.name for f in view.features]
    name = f"ctloop_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    url = f"{server}/{name}"
    today = partitions.utc_today()
    old = today - dt.timedelta(days=30)
    try:
        if partitioned:
            store = FeatureStore(url)
            store.init([view])
            table = view.log_table
            partitions.ensure_days(store, old - dt.timedelta(days=1), today, table)
            db: Database = store
        else:
            db = Database(url)
            with db.begin() as conn:
                tables.prediction_log_table(sa.MetaData()).create(conn)
            table = tables.PREDICTION_LOG
        fill_day(db, table, view.name, names, old, rows)
        waits: list[float] = []
        stop = threading.Event()

        def writer() -> None:
            log, n = PredictionLog(db), 0
            while not stop.is_set():
                now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
                batch = [
                    log_row(view.name, names, f"new-{n}-{i}", now) for i in range(WRITER_BATCH)
                ]
                t0 = time.perf_counter()
                log.write(batch)
                waits.append(time.perf_counter() - t0)
                n += 1
                time.sleep(WRITER_PAUSE)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        time.sleep(1.0)  # the writer's pace before the prune
        before = len(waits)
        t0 = time.perf_counter()
        done = retention.prune(PredictionLog(db), view, retention.min_keep_days(view),
                               dt.datetime.combine(today, dt.time(12)))  # fmt: skip
        took = time.perf_counter() - t0
        during = waits[before:] or [float("nan")]
        stop.set()
        thread.join()
        if done.deleted != rows:
            raise SystemExit(f"pruned {done.deleted} rows, not the day's {rows}")
        db.dispose()
        return {"seconds": took, "days_dropped": done.days_dropped,
                "writer_max_ms": max(during) * 1e3,
                "writer_median_ms": statistics.median(during) * 1e3}  # fmt: skip
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="mysql+mysqldb://root@127.0.0.1:3306")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the expired day")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, list[dict[str, float]]] = {"partition drop": [], "chunked DELETE": []}
    for run in range(args.runs):
        for mode, partitioned in (("partition drop", True), ("chunked DELETE", False)):
            got = one_run(args.server, partitioned, args.rows)
            results[mode].append(got)
            print(f"run {run + 1} {mode:15}: {got['seconds']:7.2f} s  writer batch "
                  f"median {got['writer_median_ms']:6.1f} ms, max {got['writer_max_ms']:7.1f} ms"
                  f"  (days dropped {got['days_dropped']:.0f})", flush=True)  # fmt: skip
    print(f"\n{args.rows:,} rows in the expired day, medians of {args.runs} runs")
    print("| retention | prune (median) | runs | writer batch median | writer batch max |")
    print("|---|---:|---|---:|---:|")
    for mode, runs in results.items():
        secs = [r["seconds"] for r in runs]
        print(f"| {mode} | {statistics.median(secs):.2f} s | "
              f"{' / '.join(f'{s:.2f}' for s in secs)} s | "
              f"{statistics.median(r['writer_median_ms'] for r in runs):.1f} ms | "
              f"{statistics.median(r['writer_max_ms'] for r in runs):.1f} ms |")  # fmt: skip


if __name__ == "__main__":
    main()
