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

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from ctloop.dev import stack
from ctloop.dev.launcher import tail
from ctloop.dev.stack.supervisor import Supervisor, kill_sessions, session_processes
from tests.support.databases import mariadb_database, postgres_database
from tests.support.paths import ROOT
from tests.support.readme import readme_blocks, run_block, shim_path

VIEW = "credit_score"
CT_DAG, MONITOR_DAG = f"ct_{VIEW}", f"monitor_{VIEW}"
INGEST_DAG = f"ingest_{VIEW}"
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


def free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together, so none repeats)."""
    with contextlib.ExitStack() as hold:
        socks = [hold.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def write_test_view(target_dir: Path) -> None:
    """A small copy of the view: short windows, labels on the day, tiny models, no cooldown.

    One gate is looser than in the real view, because this test is about the wiring of the
    stack, not about model quality: the model gate lets a candidate trail the champion by
    0.1 (a 400-row validation day is noisy). The data gate keeps the real thresholds: the
    drift retrain must get past them because the monitor measured the new `Gig_Worker`
    occupation (a quarter of the drifted customers), not because the test relaxed them.
    """
    data = yaml.safe_load((ROOT / "features" / f"{VIEW}.yaml").read_text())
    data["training"].update(
        window_days=10,
        drift_window_days=4,
        validation_days=1,
        label_delay_days=0,
        iterations=60,
        early_stopping_rounds=10,
    )
    data["gates"]["data"].update(min_rows=1000, min_validation_rows=200)
    data["gates"]["model"].update(max_degradation=0.1)
    data["drift"].update(min_rows=300, min_labelled_rows=200, cooldown_hours=0)
    # a drop folder under the data folder (CTLOOP_DATA_DIR) instead of the synthetic stream
    data["sources"] = [{"kind": "files", "name": "drop", "path": f"drop/{VIEW}"}]
    target_dir.mkdir(parents=True, exist_ok=True)
    (target_dir / f"{VIEW}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


class LiveStack:
    """The stack as the test drives it: its commands, logs, and the Airflow REST API."""

    def __init__(self, env: dict[str, str], cwd: Path, ports: dict[str, int]) -> None:
        self.env, self.cwd, self.ports = env, cwd, ports
        self.state = Path(env["CTLOOP_DATA_DIR"]) / "stack"
        self.airflow = f"http://127.0.0.1:{ports['airflow']}"
        self.mlflow = f"http://127.0.0.1:{ports['mlflow']}"
        self.serving = f"http://127.0.0.1:{ports['serving']}"
        self.http = httpx.Client(timeout=30)
        self._token: str | None = None

    def command(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`python -m ctloop.dev.stack ...`: the command `make up/down/stack-status` runs."""
        return subprocess.run(
            [sys.executable, "-m", "ctloop.dev.stack", *args], cwd=self.cwd, env=self.env,
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def ctloop(self, *args: str) -> str:
        """The `ctloop` console script of this environment."""
        done = subprocess.run(
            [str(Path(sys.executable).parent / "ctloop"), *args], cwd=self.cwd, env=self.env,
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"ctloop {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def log(self, name: str, lines: int = 40) -> str:
        return f"--- {name}.log ---\n{tail(self.state / 'logs' / f'{name}.log', lines)}"

    def logs(self, *names: str) -> str:
        return "\n".join(self.log(n) for n in names)

    def pids(self) -> dict[str, int]:
        """Each running service's pid (also its session id), as `status --json` says."""
        done = self.command("status", "--json", timeout=120)
        assert done.returncode in (0, 1), f"stack status failed:\n{done.stdout}\n{done.stderr}"
        return {row["service"]: row["pid"] for row in json.loads(done.stdout) if row["running"]}

    def circusd(self) -> int | None:
        """The pid of the stack's circusd while it runs."""
        return Supervisor(self.state / "run", self.state / "logs" / "circusd.log", 30).daemon_pid()

    # ---- Airflow REST API, as the UI uses it
    def password(self) -> str:
        file = self.state / "airflow" / stack.PASSWORDS_FILE
        return json.loads(file.read_text())["admin"]

    def token(self) -> str:
        if self._token is None:
            r = self.http.post(f"{self.airflow}/auth/token",
                               json={"username": "admin", "password": self.password()})  # fmt: skip
            assert r.status_code == 201, f"/auth/token answered {r.status_code}: {r.text}"
            self._token = r.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token()}"}
        r = self.http.request(method, f"{self.airflow}/api/v2{path}", headers=headers, **kwargs)
        assert r.status_code < 300, f"{method} {path} answered {r.status_code}: {r.text[:500]}"
        return r.json()

    def run_path(self, dag_id: str, run_id: str) -> str:
        return f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """POST dagRuns as the UI's Trigger form does (no logical date, the form's conf)."""
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None,
                                                                 "conf": conf})  # fmt: skip
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def tasks(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        found = self.api("GET", f"{self.run_path(dag_id, run_id)}/taskInstances")
        return {t["task_id"]: t for t in found["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        path = f"{self.run_path(dag_id, run_id)}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.api("GET", path, params={"deserialize": "true"})["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, attempt: int = 1) -> str:
        """A task's log as the UI shows it (served by the api-server), one line per event."""
        path = f"{self.run_path(dag_id, run_id)}/taskInstances/{task_id}/logs/{attempt}"
        content = self.api("GET", path)["content"]
        lines = []
        for item in content:
            if isinstance(item, dict):
                lines.append(f"{item.get('level', '')} {item.get('event', '')}".strip())
            else:
                lines.append(str(item))
        return "\n".join(lines)

    def failure_report(self, dag_id: str, run_id: str) -> str:
        parts = []
        with contextlib.suppress(Exception):
            for task_id, info in self.tasks(dag_id, run_id).items():
                parts.append(f"{task_id}: {info['state']} (try {info['try_number']})")
                if info["state"] in ("failed", "up_for_retry", "upstream_failed"):
                    parts.append(self.task_log(dag_id, run_id, task_id,
                                               max(info["try_number"], 1))[-3000:])  # fmt: skip
        parts.append(self.logs("airflow-scheduler", "mlflow"))
        return "\n".join(parts)

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 420) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", self.run_path(dag_id, run_id))
            if run["state"] in ("success", "failed"):
                assert run["state"] == "success", (
                    f"{dag_id} run {run_id} failed:\n{self.failure_report(dag_id, run_id)}"
                )
                return run
            time.sleep(3)
        pytest.fail(f"{dag_id} run {run_id} not done after {timeout:.0f}s:\n"
                    f"{self.failure_report(dag_id, run_id)}")  # fmt: skip

    def wait_idle(self, dag_id: str, timeout: float = 420) -> None:
        """Until no run of the DAG is queued or running (e.g. the run unpausing creates)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = [r for r in self.runs(dag_id) if r["state"] in ("queued", "running")]
            if not busy:
                return
            time.sleep(3)
        pytest.fail(f"{dag_id} still has runs in flight after {timeout:.0f}s:\n"
                    f"{self.failure_report(dag_id, busy[0]['dag_run_id'])}")  # fmt: skip

    def wait_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Until the dag-processor has parsed the DAG and the API knows it."""
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.token()}"}
        while time.monotonic() < deadline:
            r = self.http.get(f"{self.airflow}/api/v2/dags/{dag_id}", headers=headers)
            if r.status_code == 200:
                return
            time.sleep(2)
        pytest.fail(f"{dag_id} unknown to Airflow after {timeout:.0f}s\n"
                    f"{self.log('airflow-dag-processor')}")  # fmt: skip

    def settle(self, dag_id: str, timeout: float = 420) -> None:
        """Until the scheduler has created the runs unpausing asks for, and they are done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            after = self.api("GET", f"/dags/{dag_id}")["next_dagrun_run_after"]
            if after and dt.datetime.fromisoformat(after) > dt.datetime.now(dt.UTC):
                break  # the latest schedule's run exists; the next one is in the future
            time.sleep(2)
        else:
            pytest.fail(f"the scheduler did not schedule {dag_id}\n{self.log('airflow-scheduler')}")
        self.wait_idle(dag_id, max(deadline - time.monotonic(), 30))

    def wait_http(self, url: str, check: Any, what: str, log: str, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                last = self.http.get(url, timeout=5)
                if check(last):
                    return last
            time.sleep(1)
        body = getattr(last, "text", last)
        pytest.fail(f"{what}: not after {timeout:.0f}s (last: {str(body)[:300]})\n{self.log(log)}")


def stack_env(tmp: Path, ports: dict[str, int], **settings: str) -> dict[str, str]:
    """This process's environment without ctloop/Airflow/MLflow/BentoML settings, plus a
    temp data folder, free ports, small servers and the settings given."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "CTLOOP_", "MLFLOW_", "BENTOML_"))
        and k != "FEATURE_STORE_URL"
    }
    env.update({
        "CTLOOP_DATA_DIR": str(tmp / "data"),
        "CTLOOP_STACK_AIRFLOW_PORT": str(ports["airflow"]),
        "CTLOOP_STACK_MLFLOW_PORT": str(ports["mlflow"]),
        "CTLOOP_STACK_SERVING_PORT": str(ports["serving"]),
        "CTLOOP_STACK_PROMETHEUS_PORT": str(ports["prometheus"]),
        "CTLOOP_STACK_AIRFLOW_WORKER_LOG_PORT": str(ports["worker_log"]),
        "CTLOOP_STACK_AIRFLOW_TRIGGER_LOG_PORT": str(ports["trigger_log"]),
        "CTLOOP_STACK_MLFLOW_WORKERS": "1",
        "CTLOOP_STACK_START_TIMEOUT_SECONDS": "420",
        "CTLOOP_SERVING_WORKERS": "1",
        "GIT_PYTHON_REFRESH": "quiet",
        **settings,
    })  # fmt: skip
    return env


def stack_ports() -> dict[str, int]:
    names = ["airflow", "mlflow", "serving", "prometheus", "worker_log", "trigger_log"]
    return dict(zip(names, free_ports(len(names)), strict=True))


@contextlib.contextmanager
def stack_up(env: dict[str, str], cwd: Path) -> Iterator[dict[str, Any]]:
    """`python -m ctloop.dev.stack up` (what `make up` runs); always `down` afterwards, and
    fail if any process of the stack or a pid file is left."""
    live_stack = LiveStack(env, cwd, {
        "airflow": int(env["CTLOOP_STACK_AIRFLOW_PORT"]),
        "mlflow": int(env["CTLOOP_STACK_MLFLOW_PORT"]),
        "serving": int(env["CTLOOP_STACK_SERVING_PORT"]),
    })  # fmt: skip
    started = time.monotonic()
    up = live_stack.command("up")
    up_seconds = time.monotonic() - started
    pids = live_stack.pids()
    daemon = live_stack.circusd()
    try:
        assert up.returncode == 0, f"stack up failed:\n{up.stdout}\n{up.stderr}"
        assert daemon is not None, "no circusd after `up`"
        yield {"stack": live_stack, "up": up, "up_seconds": up_seconds, "pids": pids}
    finally:
        pids = live_stack.pids() or pids
        down = live_stack.command("down", timeout=240)
        left = {name: [p.pid for p in session_processes(pid)] for name, pid in pids.items()}
        left = {name: found for name, found in left.items() if found}
        if left:  # never leave processes behind, even when `down` is broken
            kill_sessions({name: pids[name] for name in left})
        daemon_left = live_stack.circusd()
        if daemon_left is not None:
            os.kill(daemon_left, signal.SIGKILL)
        live_stack.http.close()
        assert down.returncode == 0, f"stack down failed:\n{down.stdout}\n{down.stderr}"
        assert not left, f"processes left after `down`: {left}\n{down.stderr}"
        assert daemon_left is None, "circusd still runs after `down`"
        assert not (live_stack.state / "run" / "circusd.pid").exists(), "circusd's pid file left"


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
