"""The long-running stack end to end: `make up` as real processes, driven from outside.

`ctloop.dev.stack.SERVICES` is the one definition of what runs; docker-compose.yml and the
resolved environments are held to it in `tests/unit/test_stack_config.py`, supervision in
`tests/integration/test_stack_supervisor.py`.

The end-to-end test starts the stack exactly as `make up` does (`python -m ctloop.dev.stack
up`, the Makefile's command) on a MariaDB feature store and MLflow backend of its own, a
temporary data folder, free ports and a small copy of the feature view, then drives it
only through its public surfaces: the `ctloop` CLI writes data, the Airflow REST API
triggers DAGs as the UI does (token from /auth/token, unpause, POST dagRuns), the
BentoML service takes HTTP traffic, the MLflow server answers for the registry. Every
wait has a deadline and fails with the tail of the relevant log; teardown always runs
`python -m ctloop.dev.stack down` (what `make down` runs) and checks that no process of the
stack is left.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ctloop.dev import stack
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
from tests.support.readme import readme_blocks, run_block, shim_path

ROWS_PER_DAY = 400
SEED = 21


def test_up_refuses_a_port_in_use_and_starts_nothing(tmp_path: Path) -> None:
    ports = stack_ports()
    env = stack_env(tmp_path, ports)
    cli = LiveStack(env, tmp_path, ports)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports["mlflow"]))
        busy.listen()
        up = cli.command("up", timeout=120)
    assert up.returncode == 2, up.stdout + up.stderr
    assert f"port {ports['mlflow']} for mlflow is already in use" in up.stderr
    assert "CTLOOP_STACK_MLFLOW_PORT" in up.stderr
    assert cli.circusd() is None and not (cli.state / "run" / "circusd.pid").exists()
    # with nothing running: status says so (exit 1), down has nothing to stop (exit 0)
    status = cli.command("status", "--json", timeout=120)
    assert status.returncode == 1
    assert not any(row["running"] for row in json.loads(status.stdout))
    down = cli.command("down", timeout=120)
    assert down.returncode == 0 and "nothing of the stack is running" in down.stderr
    cli.http.close()


# ------------------------------------------------------------------ end to end: `make up`


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_up_with_nothing_configured_runs_on_the_embedded_default(tmp_path: Path) -> None:
    """What a newcomer's `make up` does: SQLite for the feature store, MLflow and Airflow's
    metadata, all under the data folder; the repository's views and DAGs."""
    env = stack_env(tmp_path, stack_ports())
    with stack_up(env, tmp_path) as live:
        s: LiveStack = live["stack"]
        data = tmp_path / "data"
        out = live["up"].stdout
        assert f"sqlite:///{data / 'feature_store.db'}" in out
        assert f"sqlite:///{data / 'mlflow.db'}" in out
        assert (data / "feature_store.db").is_file() and (data / "mlflow.db").is_file()
        assert (s.state / "airflow" / "airflow.db").is_file()
        health = s.http.get(f"{s.airflow}/api/v2/monitor/health").json()
        assert health["metadatabase"]["status"] == "healthy", health
        s.wait_dag(CT_DAG)
        assert s.http.get(f"{s.mlflow}/health").status_code == 200
        assert s.http.get(f"{s.serving}/livez").status_code == 200
        check_readme_airflow_block_and_monitor_defaults(s, env, tmp_path)


def check_readme_airflow_block_and_monitor_defaults(
    s: LiveStack, env: dict[str, str], tmp_path: Path
) -> None:
    """Issue 20: the README's Airflow commands work as written (through `ctloop airflow`),
    and the monitor DAG runs when triggered through the REST API with the Trigger form's
    defaults, empty `since`/`until` (they were required strings: Trigger stayed disabled)."""
    s.wait_dag(MONITOR_DAG)
    (block,) = [b for b in readme_blocks() if b.kind == "stack"]
    done = run_block(block, tmp_path, {**env, "PATH": shim_path(tmp_path)})
    assert done.returncode == 0, f"{block.text}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    confs = {dag_id: [r["conf"] for r in s.runs(dag_id)] for dag_id in (CT_DAG, MONITOR_DAG)}
    assert {"as_of": "2026-02-10", "reason": "retrain after backfill"} in confs[CT_DAG]
    assert {"since": "2026-02-10T00:00:00Z", "until": "2026-02-11T00:00:00Z"} in confs[MONITOR_DAG]
    assert s.api("PATCH", f"/dags/{MONITOR_DAG}", json={"is_paused": False})["is_paused"] is False
    run_id = s.trigger(MONITOR_DAG, {"since": None, "until": None})
    s.wait_run(MONITOR_DAG, run_id)
    assert s.tasks(MONITOR_DAG, run_id)["check"]["state"] == "success"
    decision = s.xcom(MONITOR_DAG, run_id, "check")
    assert decision["trigger"] is False, decision


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The stack on MariaDB (feature store, MLflow backend) and PostgreSQL (Airflow's
    metadata, a database `up` must create), with free ports and a temp data folder."""
    tmp = tmp_path_factory.mktemp("stack")
    write_test_view(tmp / "features")
    with (
        mariadb_database("ctloop_stack") as store_url,
        mariadb_database("ctloop_stack_mlflow") as mlflow_url,
        postgres_database("ctloop_stack_airflow") as airflow_url,
    ):
        env = stack_env(
            tmp, stack_ports(),
            CTLOOP_FEATURES_DIR=str(tmp / "features"),
            FEATURE_STORE_URL=store_url,
            CTLOOP_STACK_MLFLOW_BACKEND_STORE_URI=mlflow_url,
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=airflow_url,
            CTLOOP_SERVING_POLL_SECONDS="3",
            CTLOOP_SERVING_LOG_FLUSH_SECONDS="0.5",
        )  # fmt: skip
        with stack_up(env, tmp) as running:
            yield {**running, "store_url": store_url, "mlflow_url": mlflow_url,
                   "airflow_url": airflow_url, "tmp": tmp, "env": env}  # fmt: skip


@pytest.mark.mariadb
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_up_starts_every_service_once_and_healthy(live: dict[str, Any]) -> None:
    s: LiveStack = live["stack"]
    out = live["up"].stdout
    assert s.airflow in out and s.mlflow in out and s.serving in out
    assert f"login admin / {s.password()}" in out
    assert set(live["pids"]) == set(stack.SERVICE_NAMES)
    status = s.command("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert all(row["healthy"] for row in json.loads(status.stdout)), status.stdout
    # a second `up` starts nothing: same processes, same pid files
    again = s.command("up")
    assert again.returncode == 0, again.stderr
    for name in stack.SERVICE_NAMES:
        assert f"{name}: already running (pid {live['pids'][name]})" in again.stderr
    assert s.pids() == live["pids"]
    # Airflow: metadata in the PostgreSQL database `up` created, never in a SQLite file
    up_output = live["up"].stdout + live["up"].stderr
    assert f"created Airflow's metadata database {live['airflow_url']}" in up_output
    assert not (s.state / "airflow" / "airflow.db").exists()
    engine = sa.create_engine(live["airflow_url"], poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM dag")).scalar_one() >= 3
    engine.dispose()
    health = s.http.get(f"{s.airflow}/api/v2/monitor/health").json()
    assert {health[k]["status"] for k in ("metadatabase", "scheduler", "triggerer",
                                          "dag_processor")} == {"healthy"}  # fmt: skip
    s.wait_dag(CT_DAG)
    dags = {d["dag_id"] for d in s.api("GET", "/dags")["dags"]}
    assert {CT_DAG, MONITOR_DAG, f"ingest_{VIEW}"} <= dags
    assert s.http.get(f"{s.mlflow}/health").status_code == 200
    assert s.http.get(f"{s.serving}/livez").status_code == 200
    assert s.http.get(f"{s.serving}/readyz").status_code == 503  # no champion yet
    check_prometheus_scrapes_the_service(s, live["env"])


def check_prometheus_scrapes_the_service(s: LiveStack, env: dict[str, str]) -> None:
    """Issue 20: `make up` starts Prometheus on the shipped rules, aimed at the stack's own
    service (not the compose file's `serving:3000`); its first scrape (15 s interval) is up."""
    prometheus = f"http://127.0.0.1:{env['CTLOOP_STACK_PROMETHEUS_PORT']}"
    assert prometheus in s.command("status").stdout
    rules = s.http.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
    assert any(r["name"] == "CtloopNoModelLoaded" for g in rules for r in g["rules"])
    serving = s.serving.split("//", 1)[1]
    deadline, targets = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        targets = s.http.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
        if [t["health"] for t in targets] == ["up"]:
            break
        time.sleep(2)
    assert [(t["labels"]["instance"], t["health"]) for t in targets] == [(serving, "up")], targets


@pytest.fixture(scope="module")
def first_model(live: dict[str, Any]) -> dict[str, Any]:
    """History through the CLI, then the CT DAG triggered from the REST API as the UI does."""
    s: LiveStack = live["stack"]
    today = dt.datetime.now(dt.UTC).date()
    s.wait_dag(CT_DAG)
    s.wait_dag(MONITOR_DAG)
    for dag_id in (CT_DAG, MONITOR_DAG):  # the UI's toggle (Airflow creates DAGs paused)
        assert s.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})["is_paused"] is False
    # Switching a DAG on runs its latest schedule at once (catchup=False). Done before any
    # data lands, that CT run stops at the data gate and the monitor finds no champion; the
    # manual run below is then the only one that trains.
    s.settle(CT_DAG)
    s.settle(MONITOR_DAG)
    s.ctloop("generate", VIEW, "--start", str(today - dt.timedelta(days=8)), "--days", "6",
             "--rows-per-day", str(ROWS_PER_DAY), "--label-delay-days", "0",
             "--seed", str(SEED))  # fmt: skip
    run_id = s.trigger(CT_DAG, {"reason": "stack test: first model"})
    run = s.wait_run(CT_DAG, run_id)
    from ctloop.registry import Registry

    registry = Registry(s.mlflow)
    champion = registry.champion(VIEW)
    assert champion is not None, s.failure_report(CT_DAG, run_id)
    s.wait_http(f"{s.serving}/readyz", lambda r: r.status_code == 200, "serving ready",
                "serving")  # fmt: skip
    return {"run_id": run_id, "run": run, "champion": champion, "registry": registry,
            "today": today}  # fmt: skip


@pytest.mark.mariadb
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_manual_run_trains_a_champion_that_serving_loads(
    live: dict[str, Any], first_model: dict[str, Any]
) -> None:
    s: LiveStack = live["stack"]
    run_id, champion = first_model["run_id"], first_model["champion"]
    assert first_model["run"]["run_type"] == "manual"
    tasks = s.tasks(CT_DAG, run_id)
    assert {t: i["state"] for t, i in tasks.items() if t in ("extract", "validate_data",
            "train", "evaluate")} == dict.fromkeys(("extract", "validate_data", "train",
            "evaluate"), "success")  # fmt: skip
    # the DAG read the feature store through the Airflow connection `make up` derived
    assert "from Airflow connection 'feature_store'" in s.task_log(CT_DAG, run_id, "extract")
    # artifacts travel through the MLflow server, not a shared folder
    client = first_model["registry"].client
    assert client.get_run(champion.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    meta = s.http.get(f"{s.serving}/metadata").json()
    assert meta["version"] == champion.version
    assert champion.tags["airflow_run_id"] == run_id
    assert champion.tags["trigger"] == "manual"
    assert champion.tags["reason"] == "stack test: first model"
    assert champion.tags["gate.model"] == "passed"


@pytest.fixture(scope="module")
def drift_loop(live: dict[str, Any], first_model: dict[str, Any]) -> dict[str, Any]:
    """Covariate-shifted days land, drifted traffic is served, the monitor is triggered."""
    from ctloop.ingest.synth import Scenario, StreamConfig, generate_day
    from ctloop.predlog.store import PredictionLog
    from ctloop.store.features import FeatureStore

    s: LiveStack = live["stack"]
    today = first_model["today"]
    drift_start = today - dt.timedelta(days=2)
    s.ctloop("generate", VIEW, "--start", str(drift_start), "--days", "2",
             "--rows-per-day", str(ROWS_PER_DAY), "--label-delay-days", "0",
             "--seed", str(SEED), "--scenario", "covariate_shift",
             "--drift-start", str(drift_start))  # fmt: skip
    # the customers of the last drifted day, as request bodies with their event date
    config = StreamConfig(seed=SEED, rows_per_day=ROWS_PER_DAY, label_delay_days=0,
                          scenario=Scenario.COVARIATE_SHIFT, drift_start=drift_start)  # fmt: skip
    day = today - dt.timedelta(days=1)
    features, _ = generate_day(day, config)
    assert (features["occupation"] == "Gig_Worker").any()  # the shift is really there
    from ctloop.features.view import load_view

    view = load_view(VIEW, live["tmp"] / "features")
    frame = features[[view.entity, view.event_date, *view.feature_names]].copy()
    frame[view.event_date] = day.isoformat()
    bodies = json.loads(frame.to_json(orient="records"))

    store = FeatureStore(live["store_url"])
    before = PredictionLog(store).count(VIEW)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    versions = set()
    for body in bodies[:10]:
        r = s.http.post(f"{s.serving}/predict", json=body)
        assert r.status_code == 200, r.text
        versions.add(r.json()["model_version"])
    for i in range(10, len(bodies), 100):
        r = s.http.post(f"{s.serving}/predict_batch", json={"records": bodies[i : i + 100]})
        assert r.status_code == 200, r.text
        versions.add(r.json()["model_version"])
    assert versions == {first_model["champion"].version}
    deadline = time.monotonic() + 60
    while PredictionLog(store).count(VIEW) < before + len(bodies):
        assert time.monotonic() < deadline, f"prediction log incomplete\n{s.log('serving')}"
        time.sleep(0.5)
    logged = PredictionLog(store).count(VIEW) - before
    store.dispose()
    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)

    window = {"since": since.isoformat(), "until": until.isoformat()}
    monitor_id = s.trigger(MONITOR_DAG, window)
    monitor_run = s.wait_run(MONITOR_DAG, monitor_id, timeout=300)
    return {"bodies": bodies, "logged": logged, "monitor_id": monitor_id,
            "monitor_run": monitor_run, "since": since}  # fmt: skip


@pytest.mark.mariadb
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_drifted_traffic_makes_the_monitor_retrain_and_serving_swap(
    live: dict[str, Any], first_model: dict[str, Any], drift_loop: dict[str, Any]
) -> None:
    s: LiveStack = live["stack"]
    assert drift_loop["logged"] == len(drift_loop["bodies"])  # every answer logged, in MariaDB
    monitor_id = drift_loop["monitor_id"]
    decision = s.xcom(MONITOR_DAG, monitor_id, "check")
    assert decision["status"] in ("drift", "decay"), decision
    tasks = s.tasks(MONITOR_DAG, monitor_id)
    drift_runs: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while not drift_runs and time.monotonic() < deadline:
        drift_runs = [r for r in s.runs(CT_DAG)
                      if (r.get("conf") or {}).get("trigger") == "drift"]  # fmt: skip
        time.sleep(2)
    assert drift_runs, f"no drift-triggered {CT_DAG} run; monitor tasks: {tasks}"
    if tasks["trigger_ct"]["state"] != "success":  # only if an hourly check got there first
        assert "in flight" in str(decision.get("blocked")), (decision, tasks)
    retrain = drift_runs[0]
    assert "drift" in json.dumps(retrain["conf"]) and retrain["conf"].get("reason")
    s.wait_run(CT_DAG, retrain["dag_run_id"])

    before = first_model["champion"]
    registry = first_model["registry"]
    after = registry.champion(VIEW)
    assert after is not None and after.version != before.version, (
        f"champion did not move from {before.version}:\n"
        f"{s.failure_report(CT_DAG, retrain['dag_run_id'])}"
    )
    assert after.tags["trigger"] == "drift"
    assert after.tags["airflow_run_id"] == retrain["dag_run_id"]
    assert registry.previous(VIEW).version == before.version
    # the promote step told serving; /metadata names the new version
    s.wait_http(f"{s.serving}/metadata", lambda r: r.json().get("version") == after.version,
                f"serving swapped to version {after.version}", "serving", timeout=60)  # fmt: skip
    r = s.http.post(f"{s.serving}/predict", json=drift_loop["bodies"][0])
    assert r.status_code == 200 and r.json()["model_version"] == after.version


@pytest.mark.mariadb
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_feature_store_connection_is_in_the_ui_and_its_test_passes(
    live: dict[str, Any],
) -> None:
    """`make up` wrote the connection into Airflow's metadata (Admin -> Connections), and
    the UI's Test button (POST /connections/test, enabled by the stack) passes."""
    s: LiveStack = live["stack"]
    conn = s.api("GET", "/connections/feature_store")
    assert conn["conn_type"] == "mysql"
    assert conn["schema"] == sa.engine.make_url(live["store_url"]).database
    listed = {c["connection_id"] for c in s.api("GET", "/connections")["connections"]}
    assert "feature_store" in listed
    body = {k: conn[k] for k in ("connection_id", "conn_type", "host", "port", "login",
                                 "schema", "extra") if conn.get(k) is not None}  # fmt: skip
    tested = s.api("POST", "/connections/test", json=body)
    assert tested["status"] is True, tested


@pytest.mark.mariadb
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_file_dropped_in_the_folder_reaches_a_new_champion(
    live: dict[str, Any], first_model: dict[str, Any]
) -> None:
    """No hand on it but the DAG's switch: the scheduler runs `ingest_<view>`, which takes
    the file and updates the Asset; the Asset starts `ct_<view>` (trigger new-data), which
    promotes a champion trained with the file's rows."""
    from ctloop.ingest.synth import StreamConfig, generate_day

    s: LiveStack = live["stack"]
    registry = first_model["registry"]
    s.wait_idle(CT_DAG)  # a retrain an earlier test started is over
    before = registry.champion(VIEW)
    day = first_model["today"] - dt.timedelta(days=1)
    config = StreamConfig(seed=SEED + 100, rows_per_day=ROWS_PER_DAY, label_delay_days=0)
    features, labels = generate_day(day, config)
    rows = features.merge(labels, on=["customer_id", "event_date"])  # new customers, labelled
    drop = live["tmp"] / "data" / "drop" / VIEW
    drop.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(drop / ".incoming.parquet")  # written, then renamed: taken only whole
    (drop / ".incoming.parquet").rename(drop / f"{day}.parquet")
    asset_runs = {r["dag_run_id"] for r in s.runs(CT_DAG)}

    s.wait_dag(INGEST_DAG)
    assert s.api("PATCH", f"/dags/{INGEST_DAG}", json={"is_paused": False})["is_paused"] is False
    s.settle(INGEST_DAG)  # switched on, it runs its latest interval at once
    [ingest] = s.runs(INGEST_DAG)
    assert ingest["state"] == "success", s.failure_report(INGEST_DAG, ingest["dag_run_id"])
    landed = s.xcom(INGEST_DAG, ingest["dag_run_id"], "land")
    assert landed["taken"] == len(rows), landed  # rows (each with its label) taken
    assert (drop / "done" / f"{day}.parquet").is_file()

    deadline = time.monotonic() + 120
    new_data: list[dict[str, Any]] = []
    while not new_data:
        new_data = [r for r in s.runs(CT_DAG) if r["run_type"] == "asset_triggered"
                    and r["dag_run_id"] not in asset_runs]  # fmt: skip
        assert time.monotonic() < deadline, f"no asset-triggered {CT_DAG} run\n" + s.log(
            "airflow-scheduler"
        )
        time.sleep(2)
    retrain = s.wait_run(CT_DAG, new_data[0]["dag_run_id"])
    after = registry.champion(VIEW)
    assert after.version != before.version, s.failure_report(CT_DAG, retrain["dag_run_id"])
    assert after.tags["trigger"] == "new-data"
    assert after.tags["airflow_run_id"] == retrain["dag_run_id"]
