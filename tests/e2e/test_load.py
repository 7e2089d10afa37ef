"""A short load test against the real service: locust as its own process, then the books.

A real `bentoml serve` (two workers, a real CatBoost champion, the prediction log in
MariaDB) takes `tests/load/locustfile.py` at 4 users for 15 s, with a fifth of the
requests invalid. Locust must report no failure (every valid request answered, every bad
one refused with a 4xx naming the problem), and every record the load generator saw
answered must be exactly one `prediction_log` row, which `tests/load/report.py` (what
`make load-test` runs) checks by request id.

Locust runs in a subprocess because its gevent monkey-patching breaks airflow/mlflow in
the same interpreter; this module never imports it.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctloop.features.view import load_view_file
from ctloop.predlog.row import encode_row
from ctloop.predlog.store import PredictionLog
from ctloop.registry import Registry
from ctloop.store.features import FeatureStore
from tests.support.databases import mariadb_database
from tests.support.paths import ROOT
from tests.support.serving import Server, register_version, service_env

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

TOKEN = "test-admin-token-" + uuid.uuid4().hex
USERS, DURATION = 4, "15s"
FLUSH_SECONDS = "2"
LOCUSTFILE = ROOT / "tests" / "load" / "locustfile.py"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    view = load_view_file(ROOT / "features" / "credit_score.yaml")
    tmp = tmp_path_factory.mktemp("load")
    tracking = f"sqlite:///{tmp / 'mlflow.db'}"
    registry = Registry(tracking, tmp / "mlartifacts")
    registry.promote(view.name, register_version(view, registry, seed=5))
    with mariadb_database("ctloop_load") as url:
        store = FeatureStore(url)
        store.init([view])
        env = service_env(tmp, tracking, url, TOKEN, LOG_FLUSH_SECONDS=FLUSH_SECONDS)
        server = Server(env, tmp / "serve.log")
        try:
            server.wait_every_worker(2)
            yield {"view": view, "store": store, "server": server, "url": server.url,
                   "store_url": url}  # fmt: skip
        finally:
            server.stop()
            store.dispose()


def client_env() -> dict[str, str]:
    """The load generator's environment: none of the caller's ctloop or MLflow settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "MLFLOW_"))}
    env["CTLOOP_FEATURES_DIR"] = str(ROOT / "features")
    return env


def run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=True
        )
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"{cmd[2:4]} exited {exc.returncode}:\n{exc.stdout[-4000:]}\n"
                    f"{exc.stderr[-4000:]}")  # fmt: skip


def stats_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def report(answers: Path, stats: Path, store_url: str, out: Path, quiet: str) -> list[str]:
    return [sys.executable, "-m", "tests.load.report", str(answers), "--stats", str(stats),
            "--store-url", store_url, "--json", str(out), "--quiet-seconds", quiet]  # fmt: skip


def test_load_every_answer_logged_once_every_bad_request_refused(
    service: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "load"
    answers_path, stats_path = out / "answers.json", out / "locust_stats.csv"
    locust = run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
         "-u", str(USERS), "-r", str(USERS), "-t", DURATION, "--stop-timeout", "10",
         "--host", service["url"], "--csv", str(out / "locust"), "--html",
         str(out / "report.html"), "--answers-file", str(answers_path),
         "--invalid-share", "0.2", "--batch-size", "10", "--only-summary"],
        client_env(), timeout=120,
    )  # fmt: skip

    # locust's own view: no failure of any kind, and every kind of request was sent
    stats = stats_rows(stats_path)
    assert stats["Aggregated"]["Failure Count"] == "0", locust.stdout[-3000:]
    for name in ("predict", "predict_batch", "invalid: malformed_json", "invalid: wrong_type"):
        assert int(stats[name]["Request Count"]) > 0, (name, sorted(stats))
    assert (out / "report.html").stat().st_size > 0

    # the load generator's tally: bad requests all refused, nothing cut off in flight
    answers = json.loads(answers_path.read_text())
    assert answers["in_flight_at_stop"] == 0
    assert answers["invalid"] and all(set(o) == {"refused"} for o in answers["invalid"].values())
    assert sum(o["refused"] for o in answers["invalid"].values()) > 20
    assert answers["answered_records"] == len(answers["request_ids"]) > 500

    # answered vs logged, through the same report `make load-test` prints
    compared = out / "comparison.json"
    printed = run(report(answers_path, stats_path, service["store_url"], compared, "3"),
                  client_env(), timeout=120).stdout  # fmt: skip
    result = json.loads(compared.read_text())
    assert result["ok"], printed
    assert result["answered"] == result["logged"] == answers["answered_records"], printed
    assert result["not_logged"] == [] and result["not_answered"] == []
    store = service["store"]
    assert PredictionLog(store).count() == answers["answered_records"]  # nothing outside

    # realistic traffic: many customers, the event date sent and stored
    logged = PredictionLog(store).read("credit_score", dt.datetime(2000, 1, 1),
                                       dt.datetime(2100, 1, 1))  # fmt: skip
    assert logged["entity_id"].nunique() > 300
    today = dt.datetime.now(dt.UTC).date()
    dates = set(logged["event_date"])
    assert dates <= {today.isoformat(), (today - dt.timedelta(days=1)).isoformat()}


def test_the_report_fails_when_a_logged_row_was_not_answered(
    mariadb_url: str, tmp_path: Path
) -> None:
    """A tally one answer short of the log: the report must name the orphan row, exit 1."""
    store = FeatureStore(mariadb_url)
    store.init([])
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    ids = [uuid.uuid4().hex for _ in range(3)]
    rows = [
        {"request_id": rid, "feature_view": "report_check", "model_version": "1",
         "entity_id": None, "features": {}, "prediction": "Good", "probabilities": {},
         "latency_ms": 1.0, "created_at": now}
        for rid in ids
    ]  # fmt: skip
    assert PredictionLog(store).write([encode_row(r) for r in rows]) == 3
    store.dispose()
    window = (now - dt.timedelta(seconds=1), now + dt.timedelta(seconds=1))
    answers = {
        "host": "http://127.0.0.1:3000", "view": "report_check",
        "started_at": window[0].isoformat(), "stopped_at": window[1].isoformat(),
        "answered_records": 2, "answered_requests": {"predict": 2}, "invalid": {},
        "in_flight_at_stop": 0, "request_ids": ids[1:],
    }  # fmt: skip
    path, compared = tmp_path / "answers.json", tmp_path / "comparison.json"
    path.write_text(json.dumps(answers))
    cmd = [sys.executable, "-m", "tests.load.report", str(path), "--store-url", mariadb_url,
           "--json", str(compared), "--quiet-seconds", "0.5"]  # fmt: skip
    # exit 1 is the expected outcome here, so no check=True
    done = subprocess.run(cmd, cwd=ROOT, env=client_env(), capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(compared.read_text())
    assert result["not_answered"] == [ids[0]] and result["logged"] == 3 and not result["ok"]
    assert "MISMATCH" in done.stdout
