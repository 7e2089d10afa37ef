"""Airflow on Celery (issue 22): `make up` with `CTLOOP_STACK_EXECUTOR=celery`.

The scheduler hands every task to two Celery workers over Redis. Each worker runs in a
folder of its own (working directory, data folder, AIRFLOW_HOME), so a step that leaned on a
file another step wrote would fail on the other worker: the training set travels by
fingerprint through the feature store, the model through the MLflow server. The CT DAG
runs unchanged and promotes; a worker `kill -9`'d in the middle of `train` (its session:
the Celery worker, the task supervisor and the task process) and taken out of the stack,
as a machine that died, leaves a task with no heartbeat, which the scheduler fails after
the heartbeat timeout and retries on the worker that is left.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from ctloop.dev.stack.supervisor import Supervisor, session_processes
from tests.support.databases import mariadb_database, postgres_database
from tests.support.livestack import (
    CT_DAG,
    INGEST_DAG,
    MONITOR_DAG,
    VIEW,
    LiveStack,
    stack_env,
    stack_ports,
    stack_up,
    write_test_view,
)

WORKERS = ("airflow-worker-1", "airflow-worker-2")
BROKER_DB = 11  # a Redis database of its own, emptied before and after


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The stack under CeleryExecutor with two workers: MariaDB feature store, PostgreSQL
    metadata, Redis broker; a short heartbeat timeout and retry delay so a killed task is
    retried in seconds, not minutes. Training is slowed (more trees, no early stop) so the
    test can catch `train` running."""
    tmp = tmp_path_factory.mktemp("celery")
    write_test_view(tmp / "features", drop=tmp / "drop", iterations=1500,
                    early_stopping_rounds=1500)  # fmt: skip
    broker = f"redis://127.0.0.1:6379/{BROKER_DB}"
    redis.Redis.from_url(broker).flushdb()
    ports = stack_ports()
    with (
        mariadb_database("ctloop_celery") as store_url,
        postgres_database("ctloop_celery_airflow") as airflow_url,
    ):
        env = stack_env(
            tmp, ports,
            CTLOOP_FEATURES_DIR=str(tmp / "features"),
            FEATURE_STORE_URL=store_url,
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=airflow_url,
            CTLOOP_STACK_EXECUTOR="celery",
            CTLOOP_STACK_CELERY_WORKERS="2",
            CTLOOP_STACK_CELERY_BROKER_URL=broker,
            CTLOOP_STACK_CELERY_WORKER_LOG_PORT=str(ports["celery_log"]),
            CTLOOP_STACK_PROMETHEUS="false",
            CTLOOP_TASK_RETRY_DELAY_SECONDS="1",
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="20",
            CTLOOP_SERVING_POLL_SECONDS="3",
        )  # fmt: skip
        try:
            with stack_up(env, tmp) as running:
                yield {**running, "env": env, "tmp": tmp}
        finally:
            redis.Redis.from_url(broker).flushdb()


def wait_running(s: LiveStack, run_id: str, task_id: str, timeout: float = 300) -> dict:
    """Poll until the task instance runs and has a process; its API record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = s.tasks(CT_DAG, run_id).get(task_id) or {}
        if info.get("state") == "running" and info.get("pid"):
            return info
        if info.get("state") in ("success", "failed"):
            pytest.fail(f"{task_id} ended ({info['state']}) before it could be caught running")
        time.sleep(0.2)
    pytest.fail(f"{task_id} never ran:\n{s.failure_report(CT_DAG, run_id)}")


def attempt_log_of(s: LiveStack, dag_id: str, run_id: str, task_id: str, attempt: int) -> str:
    """One try's task log, from the folder the workers write it to (what the UI reads)."""
    folder = s.state / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    path = folder / f"task_id={task_id}" / f"attempt={attempt}.log"
    return path.read_text() if path.is_file() else ""


def attempt_log(s: LiveStack, run_id: str, task_id: str, attempt: int) -> str:
    """One try's log of a CT task."""
    return attempt_log_of(s, CT_DAG, run_id, task_id, attempt)


def wait_in_step(s: LiveStack, run_id: str, task_id: str, timeout: float = 120) -> str:
    """Until the try's ctloop step has begun (it logs where it runs): the worker's name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = attempt_log(s, run_id, task_id, 1)
        if "working directory" in log:
            return worker_of(log)
        time.sleep(0.1)
    pytest.fail(f"{task_id} did not begin its step:\n{attempt_log(s, run_id, task_id, 1)}")


def worker_of(log: str) -> str:
    """Which worker ran a try: the step logs its working directory."""
    found = re.search(r"working directory \S*/workers/(airflow-worker-\d+)", log)
    assert found, f"no working directory in the task log:\n{log[-2000:]}"
    return found.group(1)


@pytest.mark.mariadb
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ct_dag_runs_on_two_celery_workers_and_a_killed_worker_is_retried_on_the_other(
    celery_stack: dict[str, Any],
) -> None:
    s: LiveStack = celery_stack["stack"]
    pids = celery_stack["pids"]
    assert set(WORKERS) <= set(pids), pids
    out = celery_stack["up"].stdout
    assert "CeleryExecutor" in out and "2 workers" in out, out
    for name in WORKERS:  # each worker in a folder of its own
        cwd = Path(psutil.Process(pids[name]).cwd())
        assert cwd == s.state / "workers" / name, cwd

    s.wait_dag(CT_DAG)
    assert s.api("PATCH", f"/dags/{CT_DAG}", json={"is_paused": False})["is_paused"] is False
    s.settle(CT_DAG)  # unpausing runs the latest schedule at once; no data yet
    today = dt.datetime.now(dt.UTC).date()
    s.ctloop("generate", VIEW, "--start", str(today - dt.timedelta(days=8)), "--days", "6",
             "--rows-per-day", "400", "--label-delay-days", "0", "--seed", "7")  # fmt: skip
    run_id = s.trigger(CT_DAG, {"reason": "celery test"})

    # kill -9 the worker that runs `train`, whole session, and take it out of the stack
    running = wait_running(s, run_id, "train")
    victim = wait_in_step(s, run_id, "train")  # training, not starting up
    assert os.getsid(running["pid"]) == pids[victim], (running, pids)
    survivor = next(name for name in WORKERS if name != victim)
    for proc in session_processes(pids[victim]):
        proc.send_signal(signal.SIGKILL)
    Supervisor(s.state / "run", s.state / "logs" / "circusd.log", 30).remove([victim])

    run = s.wait_run(CT_DAG, run_id, timeout=600)
    assert run["state"] == "success"
    tasks = s.tasks(CT_DAG, run_id)
    assert tasks["train"]["try_number"] == 2, tasks["train"]
    assert tasks["promote"]["state"] == "success", tasks["promote"]
    assert "Done. Returned value" not in attempt_log(s, run_id, "train", 1)  # cut short
    assert worker_of(attempt_log(s, run_id, "train", 2)) == survivor
    assert "Done. Returned value" in attempt_log(s, run_id, "train", 2)
    # steps of one run on two machines' worth of folders: nothing passed between them on disk
    for name in WORKERS:
        written = [p for p in (s.state / "workers" / name / "data").rglob("*") if p.is_file()]
        assert written == [], f"{name} wrote {written}: a later step may read it elsewhere"

    from ctloop.registry import Registry

    champion = Registry(s.mlflow).champion(VIEW)
    assert champion is not None and champion.tags["airflow_run_id"] == run_id, champion
    s.wait_http(f"{s.serving}/metadata",
                lambda r: r.status_code == 200 and r.json().get("version") == champion.version,
                "serving loads the champion", "serving")  # fmt: skip


@pytest.mark.mariadb
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ingest_and_monitor_dags_run_unchanged_on_celery_and_a_worker_comes_back(
    celery_stack: dict[str, Any],
) -> None:
    """After the kill: `up` starts the missing worker again; a file dropped in the view's
    (shared) drop folder is landed by `ingest_<view>` on a worker, its Asset starts a CT run
    that promotes, and the monitor DAG checks the champion's traffic window."""
    from ctloop.ingest.synth import StreamConfig, generate_day
    from ctloop.registry import Registry

    s: LiveStack = celery_stack["stack"]
    again = s.command("up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"airflow-worker-\d: started", again.stderr), again.stderr  # the lost one
    running = s.pids()
    assert set(WORKERS) <= set(running), running
    s.wait_idle(CT_DAG)
    registry = Registry(s.mlflow)
    before = registry.champion(VIEW)

    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    features, labels = generate_day(day, StreamConfig(seed=99, rows_per_day=400,
                                                      label_delay_days=0))  # fmt: skip
    rows = features.merge(labels, on=["customer_id", "event_date"])
    drop = celery_stack["tmp"] / "drop"
    drop.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(drop / ".incoming.parquet")
    (drop / ".incoming.parquet").rename(drop / f"{day}.parquet")
    asset_runs = {r["dag_run_id"] for r in s.runs(CT_DAG)}

    s.wait_dag(INGEST_DAG)
    assert s.api("PATCH", f"/dags/{INGEST_DAG}", json={"is_paused": False})["is_paused"] is False
    s.settle(INGEST_DAG)
    [ingest] = s.runs(INGEST_DAG)
    assert ingest["state"] == "success", s.failure_report(INGEST_DAG, ingest["dag_run_id"])
    assert s.xcom(INGEST_DAG, ingest["dag_run_id"], "land")["taken"] == len(rows)
    assert (drop / "done" / f"{day}.parquet").is_file()

    deadline = time.monotonic() + 180
    new_data: list[dict[str, Any]] = []
    while not new_data:
        new_data = [r for r in s.runs(CT_DAG) if r["run_type"] == "asset_triggered"
                    and r["dag_run_id"] not in asset_runs]  # fmt: skip
        assert time.monotonic() < deadline, "no asset-triggered CT run\n" + s.log(
            "airflow-scheduler"
        )
        time.sleep(2)
    retrain = s.wait_run(CT_DAG, new_data[0]["dag_run_id"])
    after = registry.champion(VIEW)
    assert after is not None and before is not None
    assert after.version != before.version, s.failure_report(CT_DAG, retrain["dag_run_id"])
    assert after.tags["trigger"] == "new-data"

    s.wait_dag(MONITOR_DAG)
    assert s.api("PATCH", f"/dags/{MONITOR_DAG}", json={"is_paused": False})["is_paused"] is False
    s.settle(MONITOR_DAG)
    run_id = s.trigger(MONITOR_DAG, {"since": None, "until": None})
    s.wait_run(MONITOR_DAG, run_id)
    assert s.tasks(MONITOR_DAG, run_id)["check"]["state"] == "success"
    ran = worker_of(attempt_log_of(s, MONITOR_DAG, run_id, "check", 1))
    assert ran in WORKERS
