"""Prediction-log inserts on MariaDB: rows/s and CPU per row, client and server, by driver.

The serving writer's cost per logged record is paid twice on a machine that also runs the
database: in the service process (encoding, the driver) and in `mariadbd` (parsing,
JSON_TABLE, InnoDB and its four indexes). This measures both for the paths
`PredictionLog.write` can take, on a database of its own (dropped after):

* `load_data typed`: the shipped path, `LOAD DATA LOCAL INFILE` of the batch written as a
  tab-separated temporary file (on PyMySQL connections of its own whatever the store
  URL's driver: `ctloop.store.localfiles`) into the view's own table, one typed column per
  feature (`<view>_predictions`);
* `load_data`: the same into the shared table, features as one JSON text (views without a
  table of their own);
* `json_table`: the path before it (and where the server refuses local files), one JSON
  document per batch (hex-encoded under PyMySQL);
* `json_table_plain`: the same under PyMySQL without the hex encoding (what it replaced);
* `executemany`: the generic multi-row INSERT the other databases use;
* `JSON fields first`: the shipped path with `features` first in each row object, the
  order the service built its rows in before (each JSON_TABLE column scans the object up
  to its key, so a big object early is scanned once per column).

Rows look like the service's (the credit_score view's 17 features, three class
probabilities); they are generated before the clock starts. Server CPU is read from
/proc for the `mariadbd` process, so run it on a machine where nothing else uses that
server.

    uv run python benchmarks/log_insert.py --rows 50000 --batch 500 --repeats 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks.goals import P4, verdict  # noqa: E402

from ctloop.dev.launcher import cpu_seconds, processes_named  # noqa: E402
from ctloop.features.view import load_view  # noqa: E402
from ctloop.predlog.row import encode_row  # noqa: E402
from ctloop.predlog.store import PredictionLog  # noqa: E402
from ctloop.store.features import FeatureStore  # noqa: E402

FIELDS_FIRST = "mysqldb json_table, JSON fields first"
TYPED = "load_data typed (shipped)"
SERVER = os.environ.get("CTLOOP_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")


def mariadbd_cpu() -> float:
    """CPU seconds (user + system) the MariaDB server has used so far."""
    pids = processes_named("mariadbd")
    if not pids:
        raise SystemExit("no mariadbd process on this machine: its CPU cannot be read")
    return cpu_seconds(pids)


VIEW = load_view("credit_score", ROOT / "features")
# The shared-table paths log under a view name no typed table carries: PredictionLog looks
# for a view's own table again after a minute, and would route credit_score's rows there.
SHARED_VIEW = "credit_score_shared"


def make_rows(n: int, rng: random.Random, view_name: str = SHARED_VIEW) -> list[dict[str, Any]]:
    now = dt.datetime.now()
    rows = []
    for _ in range(n):
        features: dict[str, Any] = {
            f.name: round(rng.uniform(0, 1e4), 3)
            if f.is_numeric
            else rng.choice(["Engineer", "Doctor", "_______"])
            for f in VIEW.features
        }
        p = sorted(rng.random() for _ in range(2))
        rows.append({  # in the service's order: the JSON fields last
            "request_id": uuid.uuid4().hex, "feature_view": view_name, "model_version": "3",
            "entity_id": str(rng.randrange(10**6)), "prediction": "Good",
            "latency_ms": rng.uniform(0.5, 5), "created_at": now,
            "probabilities": {"Good": p[0], "Standard": p[1] - p[0], "Poor": 1 - p[1]},
            "features": features,
        })  # fmt: skip
    return rows


def measure(
    write: Callable[[list[dict[str, Any]]], int], batches: list[list[dict[str, Any]]]
) -> dict[str, float]:
    n = sum(len(b) for b in batches)
    server0, client0, wall0 = mariadbd_cpu(), time.process_time(), time.perf_counter()
    written = sum(write(b) for b in batches)
    wall = time.perf_counter() - wall0
    if written != n:
        raise SystemExit(f"wrote {written} rows of {n}: the benchmark is broken")
    return {
        "rows_s": n / wall,
        "server_us": 1e6 * (mariadbd_cpu() - server0) / n,
        "client_us": 1e6 * (time.process_time() - client0) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows per run")
    parser.add_argument(
        "--batch", type=int, default=500, help="rows per insert (the writer's batch)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    db = f"ctloop_bench_log_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(SERVER + "/")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {db}"))
    rng = random.Random(7)
    results: dict[str, list[dict[str, float]]] = {}
    try:
        stores = {
            driver: FeatureStore(SERVER.replace("+pymysql", f"+{driver}") + f"/{db}")
            for driver in ("pymysql", "mysqldb")
        }
        stores["pymysql"].init([])
        bulk = {"pymysql": PredictionLog(stores["pymysql"], bulk_load=True)}
        logs = {driver: PredictionLog(store, bulk_load=False) for driver, store in stores.items()}
        plain = PredictionLog(FeatureStore(SERVER + f"/{db}"), bulk_load=False)
        plain._hex_documents = False  # the PyMySQL path before hex documents
        warmed = (*bulk.values(), *logs.values(), plain)
        for log in warmed:
            log.write(make_rows(10, rng))  # connect, ask for JSON_TABLE: the shared table
        stores["pymysql"].init([], log_views=[VIEW])  # from here on: the typed table too
        typed = PredictionLog(stores["pymysql"], bulk_load=True)
        if typed.layout(VIEW.name) is None:
            raise SystemExit("no typed log table was made: nothing to time")
        paths: dict[str, Callable[[list[dict[str, Any]]], int]] = {
            TYPED: typed.write,
            "load_data shared JSON table": bulk["pymysql"].write,
            "pymysql json_table": logs["pymysql"].write,
            "pymysql json_table_plain": plain.write,
            "pymysql executemany": lambda b: logs["pymysql"]._write_executemany(
                [encode_row(r) for r in b]
            ),
            "mysqldb json_table": logs["mysqldb"].write,
            FIELDS_FIRST: logs["mysqldb"].write,
            "mysqldb executemany": lambda b: logs["mysqldb"]._write_executemany(
                [encode_row(r) for r in b]
            ),
        }
        typed.write(make_rows(10, rng, VIEW.name))
        if not all(log.bulk_load for log in (*bulk.values(), typed)):
            raise SystemExit("the server refuses LOAD DATA LOCAL INFILE: no bulk path to time")
        for repeat in range(args.repeats):
            for name, write in paths.items():
                rows = make_rows(args.rows, rng, VIEW.name if name == TYPED else SHARED_VIEW)
                if name == FIELDS_FIRST:  # the order the service used before
                    rows = [{"features": r["features"], **r} for r in rows]
                batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
                result = measure(write, batches)
                results.setdefault(name, []).append(result)
                print(f"[{repeat + 1}] {name:30} {result['rows_s']:8,.0f} rows/s  "
                      f"server {result['server_us']:5.1f} us/row  "
                      f"client {result['client_us']:5.1f} us/row", flush=True)  # fmt: skip
        if not all(log.bulk_load for log in (*bulk.values(), typed)):
            raise SystemExit("the bulk path fell back to INSERT during the runs: not timed")
        with stores["pymysql"].connect() as conn:
            count = f"SELECT COUNT(*) FROM {VIEW.log_table}"  # noqa: S608  (the view's name)
            in_typed = conn.execute(sa.text(count)).scalar()
            in_shared = conn.execute(sa.text("SELECT COUNT(*) FROM prediction_log")).scalar()
        shared_rows = 10 * len(warmed) + args.repeats * args.rows * (len(paths) - 1)
        if (in_typed, in_shared) != (10 + args.repeats * args.rows, shared_rows):
            raise SystemExit(f"the typed table holds {in_typed} rows and the shared one "
                             f"{in_shared}: not where they were written")  # fmt: skip
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {db}"))

    print(f"\n{platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; {args.rows:,} rows in batches of "
          f"{args.batch}, medians of {args.repeats}\n")  # fmt: skip
    print("| path | rows/s | server CPU µs/row | client CPU µs/row | total µs/row |")
    print("|---|---:|---:|---:|---:|")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {name} | {med['rows_s']:,.0f} | {med['server_us']:.1f} | {med['client_us']:.1f} "
              f"| {med['server_us'] + med['client_us']:.1f} |")  # fmt: skip
    shipped = statistics.median(r["server_us"] for r in results[TYPED])
    print(f"\nGoal of issue 19, from this run's medians:\n{verdict(P4, shipped)}")


if __name__ == "__main__":
    main()
