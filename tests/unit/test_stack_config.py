"""The stack's configuration, read without running it: docker-compose.yml and the local
stack's resolved environments against `ctloop.dev.stack.SERVICES`, the one table of what
runs (names, ports, health checks, the variables each process gets).

The compose tests parse `docker-compose config` (offline, no Docker engine) and hold every
compose service to that table; the local-stack tests hold `stack.resolve`'s environments
to it. Supervision is `tests/integration/test_stack_supervisor.py`, and `make up` for real
is `tests/e2e/test_stack.py`.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from ctloop.dev import stack
from ctloop.dev.stack import balancer
from ctloop.dev.stack.prometheus import render_config
from ctloop.errors import CtloopError
from ctloop.orchestration.connection import connection_url
from tests.support.paths import ROOT

INFRA_SERVICES = {"mariadb", "postgres", "airflow-init"}
REPLICA_SERVICES = {"serving-2", "balancer"}  # the `replicas` profile
CELERY_SERVICES = {"redis", "airflow-worker"}  # the `celery` profile
REPLICA_DB_SERVICES = {"mariadb-replica"}  # the `replica-db` profile
PROFILED = REPLICA_SERVICES | CELERY_SERVICES | REPLICA_DB_SERVICES
COMPOSE_FILE = ROOT / "docker-compose.yml"


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
    assert set(compose["services"]) == set(stack.SERVICE_NAMES) | INFRA_SERVICES | PROFILED
    ctloop_image = {name for name, svc in compose["raw"]["services"].items()
                    if svc.get("image") == "ctloop:local"}  # fmt: skip
    outside = {s.name for s in stack.SERVICES if s.program}  # Prometheus: its own image
    assert ctloop_image == (
        set(stack.SERVICE_NAMES) - outside | {"airflow-init", "serving-2", "airflow-worker"}
    )
    assert compose["services"]["prometheus"]["image"].startswith("prom/prometheus:")
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
    example = dict(line.split("=", 1) for line in env_from_example().splitlines())
    for spec in stack.SERVICES:
        svc = services[spec.name]
        env = svc.get("environment", {})
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
        assert published == {(spec.default_port, int(example[setting]))}, spec.name
        listens = (f"--web.listen-address=0.0.0.0:{spec.default_port}" if spec.program
                   else f"--port {spec.default_port}")  # fmt: skip
        assert listens in joined(svc["command"]), spec.name
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


def test_celery_stack_runs_workers_in_folders_of_their_own(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    """Issue 22: `CTLOOP_STACK_EXECUTOR=celery` adds N workers after the scheduler; each has
    its own working directory, data folder, AIRFLOW_HOME and log-server port, and every
    Airflow component has the same executor, broker and result backend."""
    clean_env.update(
        CTLOOP_STACK_EXECUTOR="celery", CTLOOP_STACK_CELERY_WORKERS="3",
        CTLOOP_STACK_CELERY_BROKER_URL="redis://127.0.0.1:6379/4",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://airflow@127.0.0.1/airflow",
        FEATURE_STORE_URL="mysql+pymysql://ctloop@127.0.0.1:3306/ctloop",
    )  # fmt: skip
    resolved = stack.resolve(clean_env, cwd=tmp_path)
    names = [spec.name for spec in resolved.services()]
    workers = ["airflow-worker-1", "airflow-worker-2", "airflow-worker-3"]
    at = names.index("airflow-scheduler") + 1
    assert names[at : at + 3] == workers
    assert [n for n in names if n not in workers] == list(stack.SERVICE_NAMES)
    envs = {name: resolved.env(resolved.spec(name)) for name in workers}
    for spec in resolved.services():
        assert set(resolved.managed_env(spec)) == spec.env, spec.name
        if spec.kind.startswith("airflow"):
            env = resolved.env(spec)
            assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", spec.name
            assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/4"
            assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == (
                "db+postgresql+psycopg2://airflow@127.0.0.1/airflow"
            )
    for key in ("CTLOOP_DATA_DIR", "AIRFLOW_HOME", "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"):
        assert len({env[key] for env in envs.values()}) == 3, key  # one each
    for name, env in envs.items():
        own = resolved.state_dir / "workers" / name
        assert resolved.cwd(resolved.spec(name)) == own
        assert Path(env["CTLOOP_DATA_DIR"]) == own / "data"
        assert Path(env["AIRFLOW_HOME"]) == own / "airflow"
        # task logs in the folder the api-server reads (Airflow's shared-log convention)
        assert env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] == str(resolved.airflow_home / "logs")
        command = resolved.command(resolved.spec(name))
        assert command[1:5] == ["-m", "airflow", "celery", "worker"]
        assert f"{name}@%h" in command
    ports = [int(env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"]) for env in envs.values()]
    assert ports == [8795, 8796, 8797]


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"FEATURE_STORE_URL": "mysql+pymysql://ctloop@db/ctloop"},
         "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"),
        ({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://airflow@db/airflow"},
         "FEATURE_STORE_URL"),
    ],
)  # fmt: skip
def test_celery_stack_refuses_what_workers_would_share_on_disk(
    given: dict[str, str], named: str, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    clean_env.update(CTLOOP_STACK_EXECUTOR="celery", **given)
    with pytest.raises(CtloopError, match=named):
        stack.resolve(clean_env, cwd=tmp_path)
    clean_env["CTLOOP_STACK_EXECUTOR"] = "kubernetes"
    with pytest.raises(CtloopError, match="CTLOOP_STACK_EXECUTOR"):
        stack.resolve(clean_env, cwd=tmp_path)


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


def test_compose_prometheus_scrapes_the_serving_service_with_the_shipped_rules(
    compose: dict,
) -> None:
    raw = compose["raw"]["services"]["prometheus"]
    assert "./docker/prometheus:/etc/prometheus:ro" in raw["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in raw["command"]
    shipped = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    serving = f"serving:{stack.service('serving').default_port}"
    assert shipped["scrape_configs"][0]["static_configs"][0]["targets"] == [serving]


def test_local_prometheus_is_aimed_at_the_local_service_or_left_out_with_the_reason(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    prometheus = stack.service("prometheus")
    clean_env.update(CTLOOP_STACK_SERVING_PORT="13001", CTLOOP_STACK_PROMETHEUS_PORT="19090")
    resolved = stack.resolve(clean_env, cwd=tmp_path)
    command = resolved.command(prometheus)
    assert "--web.listen-address=127.0.0.1:19090" in command
    config_path = resolved.prometheus_dir / "prometheus.yml"
    assert f"--config.file={config_path}" in command
    written = render_config(ROOT, "127.0.0.1:13001", resolved.prometheus_dir)
    assert written == config_path
    config = yaml.safe_load(written.read_text())
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:13001"]
    rules = [Path(p) for p in config["rule_files"]]
    assert rules == [ROOT / "docker" / "prometheus" / "alerts.yml"] and rules[0].is_file()
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/bootstrap.sh installs Debian's prometheus"
    checked = subprocess.run([promtool, "check", "config", str(written)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # installed and on: part of the stack; off or missing: left out, saying why
    assert prometheus in resolved.wanted() and resolved.left_out(prometheus) is None
    off = stack.resolve({**clean_env, "CTLOOP_STACK_PROMETHEUS": "false"}, cwd=tmp_path)
    assert prometheus not in off.wanted()
    assert "CTLOOP_STACK_PROMETHEUS=false" in str(off.left_out(prometheus))
    missing = stack.resolve({**clean_env, "PATH": str(tmp_path)}, cwd=tmp_path)
    assert "`prometheus` is not installed" in str(missing.left_out(prometheus))
    assert [s.name for s in missing.wanted()] == [
        s.name for s in stack.SERVICES if s.name != "prometheus"
    ]


def test_compose_celery_profile_runs_workers_like_the_local_celery_stack(
    compose: dict, tmp_path: Path
) -> None:
    """The `celery` profile: Redis and a scalable `airflow-worker` with every variable of
    the local stack's workers; the executor is LocalExecutor unless .env asks for Celery;
    task logs on one volume the api-server and the workers share."""
    raw, services = compose["raw"]["services"], compose["services"]
    assert raw["redis"]["profiles"] == raw["airflow-worker"]["profiles"] == ["celery"]
    worker = services["airflow-worker"]
    assert joined(worker["command"]).startswith("airflow celery worker")
    missing = stack.services.WORKER_ENV - set(worker["environment"])
    assert not missing, f"airflow-worker lacks {sorted(missing)}"
    assert worker["environment"]["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    logs = worker["environment"]["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]
    for name in ("airflow-worker", "airflow-api-server", "airflow-scheduler"):
        assert f"airflow-logs:{logs}:rw" in services[name]["volumes"], name
    airflow = [n for n in services if n.startswith("airflow-")]
    assert {services[n]["environment"]["AIRFLOW__CORE__EXECUTOR"] for n in airflow} == {
        "LocalExecutor"
    }
    # one line in .env switches every Airflow component at once
    done = compose_config(tmp_path, env_from_example() + "CTLOOP_COMPOSE_EXECUTOR=CeleryExecutor\n")
    assert done.returncode == 0, done.stderr
    celery = yaml.safe_load(done.stdout)["services"]
    assert {celery[n]["environment"]["AIRFLOW__CORE__EXECUTOR"] for n in airflow} == {
        "CeleryExecutor"
    }


def test_compose_replica_db_profile_follows_the_primary_read_only(compose: dict) -> None:
    raw, services = compose["raw"]["services"], compose["services"]
    replica = services["mariadb-replica"]
    assert raw["mariadb-replica"]["profiles"] == ["replica-db"]
    assert replica["environment"]["MARIADB_MASTER_HOST"] == "mariadb"
    assert "--read-only=1" in replica["command"] and "--server-id=2" in replica["command"]
    assert "--log-bin" in services["mariadb"]["command"]  # the primary keeps a binary log
    for name in ("mariadb", "mariadb-replica"):
        assert services[name]["environment"]["MARIADB_REPLICATION_USER"] == "repl", name
    # ctloop reads through it when .env names it (.env.example does)
    assert services["airflow-scheduler"]["environment"]["FEATURE_STORE_READ_URL"].startswith(
        "mysql+pymysql://ctloop:"
    )
    assert (
        "@mariadb-replica:3306/ctloop"
        in services["serving"]["environment"]["FEATURE_STORE_READ_URL"]
    )


def test_compose_replicas_profile_balances_two_serving_replicas(compose: dict) -> None:
    """The `replicas` profile: a second serving service on its own state volume, HAProxy
    on the shipped file, which is what `ctloop.dev.stack.balancer` writes for them and
    which HAProxy itself accepts."""
    raw = compose["raw"]["services"]
    assert raw["serving-2"]["profiles"] == raw["balancer"]["profiles"] == ["replicas"]
    assert raw["serving-2"]["command"] == raw["serving"]["command"]
    assert raw["serving-2"]["volumes"] != raw["serving"]["volumes"]  # own journal
    assert "./docker/haproxy:/usr/local/etc/haproxy:ro" in raw["balancer"]["volumes"]
    shipped = (ROOT / "docker" / "haproxy" / "haproxy.cfg").read_text()
    assert shipped == balancer.haproxy_config(balancer.COMPOSE_BIND, balancer.COMPOSE_BACKENDS,
                                              stats_bind=balancer.COMPOSE_STATS)  # fmt: skip
    for backend in balancer.COMPOSE_BACKENDS:
        assert backend.split(":")[0] in compose["services"], backend
    haproxy = shutil.which("haproxy")
    assert haproxy, "haproxy is missing: `make install` (scripts/bootstrap.sh) adds it"
    shipped_file = ROOT / "docker" / "haproxy" / "haproxy.cfg"
    checked = subprocess.run([haproxy, "-c", "-f", str(shipped_file)],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stderr


def test_serving_urls_are_every_replica_listed() -> None:
    from ctloop.settings import Settings
    from ctloop.training.promotion import serving_urls

    both = Settings(serving_url=" http://a:3000/, http://b:3000 ,")
    assert serving_urls(both) == ["http://a:3000", "http://b:3000"]
    assert serving_urls(Settings(serving_url=None)) == []
