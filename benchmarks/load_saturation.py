"""Locust at saturation: the shipped service under growing user counts, and nothing lost.

    uv run python benchmarks/load_saturation.py --users 8,32,96 --duration 30 --repeats 3

One real CatBoost champion in an MLflow store of its own, `bentoml serve` with the shipped
settings (2 workers, prediction log on, async) writing to a MariaDB database of its own.
For each user count, `--repeats` runs of `tests/load/locustfile.py` (the same locustfile
as `make load-test`: realistic customers, 20% batches of 20, 5% invalid requests) with no
think time, so every user sends its next request as soon as the last one is answered.
After each run `tests.load.report` counts the records locust got answers for against the
rows in `prediction_log` for the run's window: they must be equal.

Locust runs as its own process (gevent cannot share a process with mlflow/airflow) on the
same two cores as the service and MariaDB, so "saturation" here is of the whole machine.
The table (medians over the repeats) is printed and written to `--out`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ctloop.dev.launcher import Server, bentoml_command, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARIADB = os.environ.get("CTLOOP_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")


def aggregated(stats_csv: Path) -> dict[str, float]:
    """Locust's `Aggregated` row: requests/s, failures and latency percentiles (ms)."""
    with stats_csv.open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    return {
        "requests": float(row["Request Count"]),
        "failures": float(row["Failure Count"]),
        "rps": float(row["Requests/s"]),
        "p50": float(row["50%"]),
        "p99": float(row["99%"]),
    }


def run_locust(host: str, users: int, duration: int, out: Path, env: dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "tests" / "load" / "locustfile.py"),
        "--headless", "--host", host, "-u", str(users), "-r", str(users),
        "-t", f"{duration}s", "--stop-timeout", "10", "--only-summary",
        "--csv", str(out / "locust"), "--answers-file", str(out / "answers.json"),
        "--think-time", "0",
    ]  # fmt: skip
    with (out / "locust.log").open("w") as log:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=duration + 180, check=False)  # fmt: skip
    # locust exits 1 when a request failed: that is a result to report, not a crash
    if done.returncode not in (0, 1):
        raise RuntimeError(f"locust exited {done.returncode}: see {out / 'locust.log'}")


def compare(out: Path, store_url: str, env: dict[str, str]) -> dict[str, Any]:
    """`python -m tests.load.report` on this run: answered vs logged."""
    cmd = [sys.executable, "-m", "tests.load.report", str(out / "answers.json"),
           "--stats", str(out / "locust_stats.csv"), "--store-url", store_url,
           "--json", str(out / "comparison.json")]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip
    result = json.loads((out / "comparison.json").read_text())
    result["report_ok"] = done.returncode == 0
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-2000:], flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="8,32,96", help="comma-separated user counts")
    parser.add_argument("--duration", type=int, default=30, help="seconds per locust run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per user count (median)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "load_saturation.md")
    parser.add_argument("--keep", type=Path, default=None, help="keep locust reports here")
    args = parser.parse_args()
    users = [int(u) for u in args.users.split(",") if u.strip()]

    import sqlalchemy as sa
    from benchmarks.serving.world import register_version

    from ctloop.features.view import load_view
    from ctloop.store.features import FeatureStore

    view = load_view("credit_score", ROOT / "features")
    db = f"ctloop_bench_load_{uuid.uuid4().hex[:8]}"
    store_url = f"{MARIADB}/{db}"
    admin = sa.create_engine(MARIADB, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{db}`"))
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="ctloop-load-bench-") as tmp_name:
            tmp = args.keep or Path(tmp_name)
            tmp.mkdir(parents=True, exist_ok=True)
            tracking = f"sqlite:///{tmp / 'mlflow.db'}"
            print("training and registering the model ...", flush=True)
            register_version(view, tracking, tmp / "mlartifacts")
            store = FeatureStore(store_url)
            store.init([view])
            store.dispose()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "MLFLOW_"))}
            env.update(
                CTLOOP_DATA_DIR=str(tmp / "data"), CTLOOP_FEATURES_DIR=str(ROOT / "features"),
                MLFLOW_TRACKING_URI=tracking, FEATURE_STORE_URL=store_url,
                CTLOOP_SERVING_WORKERS=str(args.workers), BENTOML_HOME=str(tmp / "bentoml"),
                BENTOML_DO_NOT_TRACK="True",
            )  # fmt: skip
            port = free_port()
            served = Server(bentoml_command(port), env, port, tmp / "serve.log", ROOT,
                            ready_timeout=300)  # fmt: skip
            with served as server:  # ready on entry; stopped (log flushed) on the way out
                time.sleep(5)  # the second worker loads its model too
                print(f"warm-up: 10 s at {users[0]} users", flush=True)
                run_locust(server.url, users[0], 10, tmp / "warmup", env)
                for n in users:
                    runs = []
                    for i in range(args.repeats):
                        out = tmp / f"u{n}-{i}"
                        run_locust(server.url, n, args.duration, out, env)
                        stats = aggregated(out / "locust_stats.csv")
                        comparison = compare(out, store_url, env)
                        runs.append({**stats, "answered": comparison["answered"],
                                     "logged": comparison["logged"],
                                     "report_ok": comparison["report_ok"]})  # fmt: skip
                        print(f"{n:>4} users run {i + 1}: {stats['rps']:.0f} req/s, p50 "
                              f"{stats['p50']:.0f} ms, p99 {stats['p99']:.0f} ms, failures "
                              f"{stats['failures']:.0f}; answered {comparison['answered']}, "
                              f"logged {comparison['logged']}", flush=True)  # fmt: skip
                    rows.append({"users": n, "runs": runs})
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{db}`"))
        admin.dispose()
    table = render(rows, args)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    lines = [
        f"`uv run python benchmarks/load_saturation.py --users {args.users} --duration "
        f"{args.duration} --repeats {args.repeats}` on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
        "",
        "| users | req/s | records/s | p50 ms | p99 ms | failures | answered records | "
        "logged rows | every answer logged once |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        runs = row["runs"]
        answered = sum(r["answered"] for r in runs)
        logged = sum(r["logged"] for r in runs)
        ok = all(r["report_ok"] and r["answered"] == r["logged"] for r in runs)
        lines.append(
            f"| {row['users']} | {med(runs, 'rps'):.0f} | "
            f"{statistics.median(r['answered'] for r in runs) / args.duration:.0f} | "
            f"{med(runs, 'p50'):.0f} | "
            f"{med(runs, 'p99'):.0f} | {sum(r['failures'] for r in runs):.0f} | "
            f"{answered:,} | {logged:,} | {'yes' if ok else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # `benchmarks.serving` and `tests.load` as packages
    main()
