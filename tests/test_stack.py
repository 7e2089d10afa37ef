"""The long-running stack: `make up` as real processes, and docker-compose.yml against it.

`ctloop.dev.stack.SERVICES` is the one definition of what runs (names, ports, health checks,
the variables each process gets). The compose tests parse `docker-compose config` and hold
every compose service to that table; the unit tests hold the local stack's environments
to it; the end-to-end test runs the local stack for real.

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
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from ctloop.dev import stack
from ctloop.dev.launcher import tail
from ctloop.dev.stack import commands as stack_commands
from ctloop.dev.stack.health import wait_healthy
from ctloop.dev.stack.supervisor import Supervisor, Watcher, kill_sessions, session_processes
from ctloop.errors import CtloopError
from ctloop.orchestration.connection import connection_url
from tests.conftest import ROOT, mariadb_database, postgres_database

VIEW = "credit_score"
CT_DAG, MONITOR_DAG = f"ct_{VIEW}", f"monitor_{VIEW}"
INFRA_SERVICES = {"mariadb", "postgres", "airflow-init"}
COMPOSE_FILE = ROOT / "docker-compose.yml"
ROWS_PER_DAY = 400
SEED = 21


# ------------------------------------------------------------------ docker-compose.yml


def env_from_example() -> str:
    """A .env with every variable .env.example shows, at the value it shows."""
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        body = line.lstrip("#").strip()
        name, sep, value = body.partition("=")
        if sep and name.isidentifier() and name.upper() == name:
            lines.append(f"{name}={value}")
    return "\n".join(lines) + "\n"


def compose_config(tmp: Path, env_text: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` on a copy of the compose file with this .env beside it."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: `make install` (scripts/bootstrap.sh) adds it"
    shutil.copy(COMPOSE_FILE, tmp / "docker-compose.yml")
    (tmp / ".env").write_text(env_text)
    return subprocess.run(
        [binary, "-f", str(tmp / "docker-compose.yml"), "config"],
        cwd=tmp, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("compose")
    done = compose_config(tmp, env_from_example())
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    config = yaml.safe_load(done.stdout)
    return {"config": config, "services": config["services"],
            "raw": yaml.safe_load(COMPOSE_FILE.read_text())}  # fmt: skip


def joined(command: Any) -> str:
    return " ".join(command) if isinstance(command, list) else str(command)


def test_compose_runs_the_stack_services_and_its_databases(compose: dict) -> None:
    assert set(compose["services"]) == set(stack.SERVICE_NAMES) | INFRA_SERVICES
    ctloop_image = {name for name, svc in compose["raw"]["services"].items()
                    if svc.get("image") == "ctloop:local"}  # fmt: skip
    assert ctloop_image == set(stack.SERVICE_NAMES) | {"airflow-init"}
    # one image, built from docker/, one shared env_file for every ctloop container
    for name in ctloop_image:
        svc = compose["services"][name]
        assert svc["build"]["dockerfile"] == "docker/Dockerfile", name
        assert compose["raw"]["services"][name]["env_file"] == ".env", name
    assert "uv sync --frozen" in (ROOT / "docker" / "Dockerfile").read_text()
    commands = {name: joined(compose["services"][name]["command"]) for name in ctloop_image}
    assert commands["airflow-init"].count("airflow db migrate") == 1
    for component in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert commands[f"airflow-{component}"].startswith(f"airflow {component}")
    assert (
        commands["mlflow"].startswith("mlflow server") and "--serve-artifacts" in commands["mlflow"]
    )
    assert commands["serving"].startswith("bentoml serve serving.service:ModelService")


def test_compose_services_get_the_variables_ports_and_health_checks_of_the_table(
    compose: dict,
) -> None:
    services = compose["services"]
    for spec in stack.SERVICES:
        svc = services[spec.name]
        env = svc["environment"]
        missing = spec.env - set(env)
        assert not missing, f"{spec.name} lacks {sorted(missing)} (stack.SERVICES says so)"
        if spec.kind == "airflow":
            assert svc["depends_on"]["airflow-init"]["condition"] == (
                "service_completed_successfully"
            )
        if spec.default_port is None:
            assert "ports" not in svc, spec.name
            continue
        published = {(int(p["target"]), int(p["published"])) for p in svc["ports"]}
        setting = f"CTLOOP_STACK_{spec.port_setting.upper()}"
        assert published == {(spec.default_port, int(env[setting]))}, spec.name
        assert f"--port {spec.default_port}" in joined(svc["command"]), spec.name
        health = joined(svc["healthcheck"]["test"])
        assert f"localhost:{spec.default_port}{spec.health_path}" in health, spec.name
    # the cross-service URLs use the same ports as the table
    airflow = services["airflow-scheduler"]["environment"]
    assert airflow["MLFLOW_TRACKING_URI"] == f"http://mlflow:{stack.service('mlflow').default_port}"
    assert airflow["CTLOOP_SERVING_URL"] == (
        f"http://serving:{stack.service('serving').default_port}"
    )
    api = stack.service("airflow-api-server").default_port
    assert airflow["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
        f"http://airflow-api-server:{api}/execution/"
    )
    assert (
        services["serving"]["environment"]["MLFLOW_TRACKING_URI"] == airflow["MLFLOW_TRACKING_URI"]
    )


def test_compose_keeps_airflow_metadata_off_mariadb_and_secrets_shared(compose: dict) -> None:
    services = compose["services"]
    airflow = [s.name for s in stack.SERVICES if s.kind == "airflow"] + ["airflow-init"]
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY",
                "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                "CTLOOP_ADMIN_TOKEN"):  # fmt: skip
        values = {services[name]["environment"][key] for name in airflow}
        assert len(values) == 1, f"{key} differs between the Airflow containers"
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    metadata = make_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert metadata.get_backend_name() == "postgresql" and metadata.host == "postgres"
    assert services["serving"]["environment"]["CTLOOP_ADMIN_TOKEN"] == env["CTLOOP_ADMIN_TOKEN"]
    # the feature store: one MariaDB database, for the DAGs' connection and for the library
    store = make_url(env["FEATURE_STORE_URL"])
    conn = make_url(env["AIRFLOW_CONN_FEATURE_STORE"])
    assert (store.host, store.database) == (conn.host, conn.database) == ("mariadb", "ctloop")
    mlflow_db = make_url(services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"])
    assert (mlflow_db.get_backend_name(), mlflow_db.host) == ("mysql", "mariadb")
    for name in ("mariadb", "postgres"):
        svc = services[name]
        assert svc["healthcheck"]["test"], name
        sources = [v.split(":")[0] if isinstance(v, str) else v["source"] for v in svc["volumes"]]
        assert set(sources) & set(compose["config"]["volumes"]), f"{name}: no named volume"


def test_compose_takes_every_password_from_env(tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text()
    assert "change-me" not in text  # no example value baked in
    for var in ("MARIADB_ROOT_PASSWORD", "MARIADB_PASSWORD", "POSTGRES_PASSWORD",
                "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
                "CTLOOP_ADMIN_TOKEN"):  # fmt: skip
        assert f"${{{var}:?" in text, f"{var} must be required from .env"
        without = "".join(
            line + "\n" for line in env_from_example().splitlines()
            if not line.startswith(f"{var}=")
        )  # fmt: skip
        done = compose_config(tmp_path, without)
        assert done.returncode != 0, f"compose started without {var}"
        assert var in done.stderr


# ------------------------------------------------------------------ the local stack, resolved


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment without any ctloop, Airflow, MLflow or BentoML setting."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "CTLOOP_", "MLFLOW_", "BENTOML_"))
        and k != "FEATURE_STORE_URL"
    }
    env["CTLOOP_DATA_DIR"] = str(tmp_path / "data")
    return env


def test_local_stack_sets_exactly_the_table_variables(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    clean_env.update(CTLOOP_STACK_MLFLOW_PORT="15001", CTLOOP_STACK_SERVING_PORT="13001")
    resolved = stack.resolve(clean_env, cwd=tmp_path)
    for spec in stack.SERVICES:
        assert set(resolved.managed_env(spec)) == spec.env, spec.name
        assert set(resolved.env(spec)) >= spec.env
        if spec.port_setting:
            default = stack.StackConfig.model_fields[spec.port_setting].default
            assert default == spec.default_port, spec.name
    airflow = resolved.env(stack.service("airflow-scheduler"))
    assert airflow["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert airflow["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert airflow["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert airflow["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert airflow["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:15001"
    assert airflow["CTLOOP_SERVING_URL"] == "http://127.0.0.1:13001"
    assert airflow["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
        "http://127.0.0.1:8080/execution/"
    )
    data = tmp_path / "data"
    assert Path(airflow["AIRFLOW_HOME"]).is_relative_to(data)
    assert airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"sqlite:///{data / 'stack' / 'airflow' / 'airflow.db'}"
    )
    assert airflow["FEATURE_STORE_URL"] == f"sqlite:///{data / 'feature_store.db'}"
    mlflow = resolved.env(stack.service("mlflow"))
    assert mlflow["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{data / 'mlflow.db'}"
    assert "MLFLOW_TRACKING_URI" not in mlflow  # the server must not chase itself
    serving = resolved.env(stack.service("serving"))
    # one admin token for the service and the promote step, generated once, kept private
    token = serving["CTLOOP_ADMIN_TOKEN"]
    assert len(token) >= 32 and airflow["CTLOOP_ADMIN_TOKEN"] == token
    secrets_file = data / "stack" / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    again = stack.resolve(clean_env, cwd=tmp_path)
    assert (
        again.env(stack.service("airflow-api-server"))["AIRFLOW__CORE__FERNET_KEY"]
        == (airflow["AIRFLOW__CORE__FERNET_KEY"])
    )
    assert again.secrets == resolved.secrets
    # given values win over generated ones
    clean_env["CTLOOP_ADMIN_TOKEN"] = "from-the-environment-" + "x" * 20
    given = stack.resolve(clean_env, cwd=tmp_path)
    assert (
        given.env(stack.service("serving"))["CTLOOP_ADMIN_TOKEN"]
        == (clean_env["CTLOOP_ADMIN_TOKEN"])
    )


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql://airflow:pw@127.0.0.1:3306/airflow",
        "mysql://airflow@db/airflow",
        "mariadb+mariadbconnector://airflow@db/airflow",
    ],
)
def test_local_stack_refuses_mariadb_for_airflow_metadata(
    url: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    clean_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = url
    with pytest.raises(CtloopError, match="does not support MariaDB") as err:
        stack.resolve(clean_env, cwd=tmp_path)
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in str(err.value)
    assert ":pw@" not in str(err.value)  # the password is not echoed


def test_local_stack_takes_postgresql_for_airflow_metadata(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    url = "postgresql+psycopg2://airflow:pw@127.0.0.1:5432/airflow"
    clean_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = url
    resolved = stack.resolve(clean_env, cwd=tmp_path)
    assert resolved.airflow_db == url
    for name in ("airflow-api-server", "airflow-scheduler"):
        assert resolved.env(stack.service(name))["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == url
    # a driver the environment lacks is named before anything starts
    clean_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = url.replace("psycopg2", "pg8000")
    with pytest.raises(CtloopError, match="driver 'pg8000'") as err:
        stack.resolve(clean_env, cwd=tmp_path)
    assert ":pw@" not in str(err.value)


@pytest.mark.postgres
def test_up_creates_a_missing_postgres_metadata_database_once() -> None:
    with postgres_database("ctloop_stack_probe") as url:
        assert stack.create_postgres_database_if_missing(url) is True
        assert stack.create_postgres_database_if_missing(url) is False
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() in url
        engine.dispose()
    with pytest.raises(CtloopError, match="unreachable"):
        stack.create_postgres_database_if_missing("postgresql+psycopg2://u:pw@127.0.0.1:1/x")


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql://ctloop:p%40ss%2Fw%3Ard@db.internal:3307/features?charset=utf8mb4",
        "mysql+mysqldb://ctloop@db/features",
        "postgresql+psycopg://ctloop:pw@pg:5432/features",
        "sqlite:////var/lib/ctloop/feature_store.db",
    ],
)
def test_feature_store_connection_round_trips_to_the_same_url(url: str) -> None:
    conn = json.loads(stack.airflow_connection_json(url))
    airflow_conn = SimpleNamespace(
        conn_id="feature_store", conn_type=conn["conn_type"], host=conn.get("host"),
        port=conn.get("port"), login=conn.get("login"), password=conn.get("password"),
        schema=conn.get("schema"), extra_dejson=conn.get("extra", {}),
    )  # fmt: skip
    assert make_url(connection_url(airflow_conn)) == make_url(url)


# ------------------------------------------------------------------ supervision (circusd)

STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops it
child = "import os, time; os.setpgid(0, 0); time.sleep(600)"  # a group of its own
subprocess.Popen([sys.executable, "-c", child])
print("stubborn up", flush=True)
time.sleep(600)
"""


def python_watcher(tmp: Path, name: str, code: str) -> Watcher:
    """A service circusd runs: this venv's Python running `code`, logging to tmp/logs."""
    env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}
    return Watcher(name, [sys.executable, "-c", code], env, tmp, tmp / "logs" / f"{name}.log")


def test_circusd_stops_every_service_and_what_it_started(tmp_path: Path) -> None:
    """`down`'s guarantee: SIGTERM, SIGKILL after the stop timeout, for the service and
    everything in its session (also a child in a process group of its own), then circusd."""
    circus = Supervisor(tmp_path / "run", tmp_path / "logs" / "circusd.log", stop_timeout=3)
    daemon = circus.start_daemon()
    try:
        polite = circus.start(python_watcher(tmp_path, "polite", "import time; time.sleep(600)"))
        stubborn = circus.start(python_watcher(tmp_path, "stubborn", STUBBORN))
        assert circus.running() == {"polite": polite, "stubborn": stubborn}
        assert circus.start_daemon() == daemon  # one daemon per state folder
        deadline = time.monotonic() + 30
        while len(session_processes(stubborn)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(session_processes(stubborn)) == 2, tail(tmp_path / "logs" / "stubborn.log")
        assert circus.command("polite") == [sys.executable, "-c", "import time; time.sleep(600)"]
        circus.quit()
        assert circus.daemon_pid() is None and not circus.pidfile.exists()
        assert not session_processes(polite) and not session_processes(stubborn)
        assert "stubborn up" in (tmp_path / "logs" / "stubborn.log").read_text()
    finally:
        with contextlib.suppress(CtloopError):
            circus.quit()


def test_a_service_that_dies_while_starting_is_named_with_its_log(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    resolved = stack.resolve(clean_env, cwd=tmp_path)
    circus = stack_commands.supervisor(resolved)
    circus.start_daemon()
    try:
        resolved.log_dir.mkdir(parents=True, exist_ok=True)
        crash = "import time; time.sleep(0.5); print('boom: no model store', flush=True); exit(3)"
        watcher = python_watcher(tmp_path, "serving", crash)
        watcher = Watcher(watcher.name, watcher.command, watcher.env, tmp_path,
                          resolved.log_path("serving"))  # fmt: skip
        pid = circus.start(watcher)
        with pytest.raises(CtloopError, match="exited during start-up") as err:
            wait_healthy(resolved, circus, {"serving": pid}, time.monotonic())
        assert "BentoML prediction service (serving)" in str(err.value)
        assert "boom: no model store" in str(err.value)  # the log's tail says why
    finally:
        circus.quit()
    assert not session_processes(pid)


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
    names = ["airflow", "mlflow", "serving", "worker_log", "trigger_log"]
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
                   "airflow_url": airflow_url, "tmp": tmp}  # fmt: skip


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
