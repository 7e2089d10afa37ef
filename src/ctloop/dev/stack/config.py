"""The local stack resolved once: folders, URLs, secrets and each service's environment.

`resolve()` reads ctloop's settings and the stack's own (`CTLOOP_STACK_*`), environment
over `.env`, as the processes will, and works out every path, URL and secret; `Stack`
then answers, for each service of the table, its command line and its whole environment.
Nothing here starts a process: `up` hands these to the supervisor.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet
from dotenv import dotenv_values
from pydantic import ValidationError

from ctloop.dev.launcher import bentoml_command, local_host
from ctloop.dev.stack.prometheus import find_program
from ctloop.dev.stack.services import (
    EXECUTORS,
    PASSWORDS_FILE,
    SERVICES,
    SIMPLE_AUTH_MANAGER,
    ServiceSpec,
    StackConfig,
    celery_workers,
    service,
    worker_index,
)
from ctloop.dev.stack.urls import absolute_sqlite, airflow_connection_json, airflow_metadata_url
from ctloop.errors import CtloopError
from ctloop.settings import Settings, project_root, settings_error, settings_from


@dataclass(frozen=True)
class Stack:
    """Everything resolved once: folders, URLs, secrets, and each service's environment."""

    root: Path
    config: StackConfig
    data_dir: Path
    features_dir: Path
    state_dir: Path
    store_url: str
    mlflow_backend: str
    artifacts: Path
    airflow_home: Path
    airflow_db: str
    base_env: dict[str, str]
    secrets: dict[str, str]

    @property
    def run_dir(self) -> Path:
        """Where circusd keeps its pid file, control sockets and configuration."""
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        """One log file per service (and one for circusd and the migration)."""
        return self.state_dir / "logs"

    def log_path(self, name: str) -> Path:
        """The log file of a service."""
        return self.log_dir / f"{name}.log"

    def local_url(self, spec: ServiceSpec) -> str | None:
        """Where this machine reaches the service (a 0.0.0.0 bind is reached on 127.0.0.1)."""
        port = self.config.port(spec)
        if port is None:
            return None
        return f"http://{local_host(self.config.host)}:{port}"

    @property
    def mlflow_url(self) -> str:
        """The tracking server, as every other process reaches it."""
        return str(self.local_url(service("mlflow")))

    @property
    def serving_url(self) -> str:
        """The prediction service (the promote step calls its admin endpoint)."""
        return str(self.local_url(service("serving")))

    @property
    def airflow_url(self) -> str:
        """The api-server: UI, REST API and the task processes' execution API."""
        return str(self.local_url(service("airflow-api-server")))

    @property
    def prometheus_dir(self) -> Path:
        """Prometheus's rendered configuration and its time-series database."""
        return self.state_dir / "prometheus"

    def left_out(self, spec: ServiceSpec) -> str | None:
        """Why `up` does not start an optional service (its program is missing or it is
        turned off), or None when it is part of this stack."""
        if spec.program is None:
            return None
        if not getattr(self.config, spec.name, True):
            return f"turned off (CTLOOP_STACK_{spec.name.upper()}=false)"
        if find_program(spec.program, self.base_env.get("PATH")) is None:
            return (f"`{spec.program}` is not installed (scripts/bootstrap.sh installs "
                    "Debian's package); the loop runs without it")  # fmt: skip
        return None

    def services(self) -> tuple[ServiceSpec, ...]:
        """Every service of this stack in start order: the table, and under CeleryExecutor
        its workers right after the scheduler."""
        if self.config.executor != "celery":
            return SERVICES
        at = next(i for i, s in enumerate(SERVICES) if s.name == "airflow-scheduler") + 1
        return (*SERVICES[:at], *celery_workers(self.config.celery_workers), *SERVICES[at:])

    def spec(self, name: str) -> ServiceSpec:
        """One service of this stack, by name (a worker too)."""
        for spec in self.services():
            if spec.name == name:
                return spec
        return service(name)  # raises, naming the services there are

    def wanted(self) -> list[ServiceSpec]:
        """The services of this stack, in start order (optional ones only when present)."""
        return [spec for spec in self.services() if self.left_out(spec) is None]

    @property
    def queue(self) -> str:
        """This stack's Celery queue, named after its state folder: stacks sharing a
        broker (and the default `redis://.../0`) never run each other's tasks."""
        digest = hashlib.sha1(str(self.state_dir).encode(), usedforsecurity=False).hexdigest()
        return f"ctloop-{digest[:10]}"

    def worker_dir(self, spec: ServiceSpec) -> Path:
        """A Celery worker's own working directory (its data folder and AIRFLOW_HOME are in
        it): what a worker on another machine would have, so nothing can lean on a disk
        another process wrote."""
        return self.state_dir / "workers" / spec.name

    def worker_log_port(self, spec: ServiceSpec) -> int:
        """The port a Celery worker serves its running tasks' logs on (one per worker)."""
        return self.config.celery_worker_log_port + worker_index(spec) - 1

    def cwd(self, spec: ServiceSpec) -> Path:
        """Where a service runs: the checkout, or a worker's own folder."""
        return self.worker_dir(spec) if spec.kind == "airflow-worker" else self.root

    @property
    def passwords_file(self) -> Path:
        """Where Airflow's SimpleAuthManager writes the passwords it generated."""
        configured = self.base_env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
        return Path(configured) if configured else self.airflow_home / PASSWORDS_FILE

    def managed_env(self, spec: ServiceSpec) -> dict[str, str]:
        """Exactly the variables of `spec.env`, with this stack's values."""
        given = self.base_env
        ctloop = {
            "CTLOOP_DATA_DIR": str(self.data_dir),
            "CTLOOP_FEATURES_DIR": str(self.features_dir),
            "FEATURE_STORE_URL": self.store_url,
            "MLFLOW_TRACKING_URI": self.mlflow_url,
        }
        if spec.kind == "mlflow":
            values = {
                "MLFLOW_BACKEND_STORE_URI": self.mlflow_backend,
                "MLFLOW_ARTIFACTS_DESTINATION": str(self.artifacts),
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": given.get(
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"
                ),
            }
        elif spec.kind == "serving":
            values = {
                **ctloop,
                "CTLOOP_ADMIN_TOKEN": self.secrets["admin_token"],
                "BENTOML_DO_NOT_TRACK": given.get("BENTOML_DO_NOT_TRACK", "True"),
            }
        elif spec.kind == "prometheus":
            values = {}
        elif spec.kind in ("airflow", "airflow-worker"):
            values = {
                **ctloop,
                "AIRFLOW_HOME": str(self.airflow_home),
                "AIRFLOW__CORE__EXECUTOR": EXECUTORS[self.config.executor],
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.root / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                # the Test button of Admin -> Connections (off by default in Airflow 3)
                "AIRFLOW__CORE__TEST_CONNECTION": given.get(
                    "AIRFLOW__CORE__TEST_CONNECTION", "Enabled"
                ),
                "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": given.get(
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin"
                ),
                # Task processes report to the api-server's execution API: on our port.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.airflow_url}/execution/",
                "AIRFLOW__CORE__FERNET_KEY": self.secrets["fernet_key"],
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.airflow_db,
                "AIRFLOW__API__SECRET_KEY": self.secrets["api_secret_key"],
                "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets["jwt_secret"],
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(
                    self.config.airflow_worker_log_port
                ),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(
                    self.config.airflow_trigger_log_port
                ),
                "AIRFLOW_CONN_FEATURE_STORE": given.get("AIRFLOW_CONN_FEATURE_STORE")
                or airflow_connection_json(self.store_url),
                "CTLOOP_SERVING_URL": self.serving_url,
                "CTLOOP_ADMIN_TOKEN": self.secrets["admin_token"],
                "AIRFLOW__CELERY__BROKER_URL": self.config.celery_broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.airflow_db}",
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
            }
            if spec.kind == "airflow-worker":
                own = self.worker_dir(spec)
                values.update({
                    "CTLOOP_DATA_DIR": str(own / "data"),
                    "AIRFLOW_HOME": str(own / "airflow"),
                    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.airflow_home / "logs"),
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.worker_log_port(spec)),
                })  # fmt: skip
        else:  # pragma: no cover - a new env set must get its values here
            raise CtloopError(f"no environment defined for service {spec.name}")
        return values

    def env(self, spec: ServiceSpec) -> dict[str, str]:
        """The whole environment of a service's process: the caller's, then the stack's."""
        env = dict(self.base_env)
        if spec.kind == "mlflow":  # the server is the tracking URI; it must not chase it
            env.pop("MLFLOW_TRACKING_URI", None)
        env.update(self.managed_env(spec))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def command(self, spec: ServiceSpec) -> list[str]:
        """The command line of a service (the venv's Python, no PATH lookup)."""
        py = sys.executable
        host, port = self.config.host, self.config.port(spec)
        if spec.name == "serving":  # the same command line as the demo and the tests
            return bentoml_command(int(port or 0), host, working_dir=self.root)
        if spec.kind == "airflow-worker":  # named, so `celery inspect` tells them apart
            return [
                py,
                "-m",
                "airflow",
                "celery",
                "worker",
                "--celery-hostname",
                f"{spec.name}@%h",
                "--concurrency",
                str(self.config.celery_concurrency),
            ]
        if spec.name == "prometheus":  # its configuration is rendered by `up`
            program = spec.program or spec.name
            return [find_program(program, self.base_env.get("PATH")) or program,
                    f"--config.file={self.prometheus_dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.prometheus_dir / 'data'}",
                    f"--web.listen-address={host}:{port}"]  # fmt: skip
        commands = {
            "mlflow": [py, "-m", "mlflow", "server", "--host", host, "--port", str(port),
                       "--workers", str(self.config.mlflow_workers), "--serve-artifacts"],
            "airflow-api-server": [py, "-m", "airflow", "api-server", "--host", host,
                                   "--port", str(port)],
            "airflow-scheduler": [py, "-m", "airflow", "scheduler"],
            "airflow-dag-processor": [py, "-m", "airflow", "dag-processor"],
            "airflow-triggerer": [py, "-m", "airflow", "triggerer"],
        }  # fmt: skip
        return commands[spec.name]


def _load_env_file(path: Path) -> dict[str, str]:
    """`.env` values (the environment wins over them, as in ctloop's settings)."""
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _load_secrets(path: Path, given: Mapping[str, str]) -> dict[str, str]:
    """Secrets shared by the processes, generated once into the state folder (mode 0600).

    Kept across restarts: the Fernet key encrypts what Airflow stores, and a new admin token
    would lock out a promote step started before the restart. A value in the environment
    or `.env` wins over the file.
    """
    stored: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    wanted = {
        "admin_token": lambda: secrets.token_urlsafe(32),
        "jwt_secret": lambda: secrets.token_urlsafe(48),
        "api_secret_key": lambda: secrets.token_urlsafe(32),
        "fernet_key": lambda: Fernet.generate_key().decode(),
    }
    changed = False
    for key, make in wanted.items():
        if not stored.get(key):
            stored[key] = make()
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(stored, fh, indent=2)
    overrides = {
        "admin_token": "CTLOOP_ADMIN_TOKEN",
        "jwt_secret": "AIRFLOW__API_AUTH__JWT_SECRET",
        "api_secret_key": "AIRFLOW__API__SECRET_KEY",
        "fernet_key": "AIRFLOW__CORE__FERNET_KEY",
    }
    return {key: given.get(var) or stored[key] for key, var in overrides.items()}


def resolve(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Stack:
    """Read settings (environment over `.env`) and work out every path, URL and secret."""
    root = project_root()
    if root is None or not (root / "dags").is_dir() or not (root / "serving").is_dir():
        raise CtloopError("the local stack runs from a ctloop checkout (dags/ and serving/)")
    cwd = cwd or Path.cwd()
    given = {**_load_env_file(cwd / ".env"), **(os.environ if environ is None else environ)}
    with contextlib.chdir(cwd):
        try:
            settings = settings_from(Settings, given)
        except ValidationError as exc:
            raise settings_error(Settings, exc) from exc
        try:
            config = settings_from(StackConfig, given)
        except ValidationError as exc:
            raise settings_error(StackConfig, exc) from exc
    data_dir = (cwd / settings.data_dir).resolve()
    features_dir = (cwd / settings.features_dir).resolve()
    state_dir = (cwd / (config.state_dir or data_dir / "stack")).resolve()
    store_url = absolute_sqlite(
        settings.feature_store_url or f"sqlite:///{data_dir / 'feature_store.db'}"
    )
    tracking = settings.mlflow_tracking_uri or ""
    if config.mlflow_backend_store_uri:
        backend = config.mlflow_backend_store_uri
    elif tracking and not tracking.startswith(("http://", "https://")):
        backend = tracking  # MLFLOW_TRACKING_URI names a database: the server serves it
    else:
        backend = f"sqlite:///{data_dir / 'mlflow.db'}"
    if backend.startswith(("http://", "https://")):
        raise CtloopError(
            f"CTLOOP_STACK_MLFLOW_BACKEND_STORE_URI={backend}: the MLflow server needs a "
            "database URL (sqlite:///... or mysql+pymysql://...), not a server"
        )
    with contextlib.chdir(cwd):
        backend = absolute_sqlite(backend) if "://" in backend else backend
    artifacts = (cwd / (settings.mlflow_artifact_root or data_dir / "mlartifacts")).resolve()
    # Never an inherited AIRFLOW_HOME: that may well be another project's Airflow.
    airflow_home = state_dir / "airflow"
    with contextlib.chdir(cwd):
        airflow_db = airflow_metadata_url(given, airflow_home)
    if config.executor == "celery":
        _check_celery(airflow_db, store_url)
    return Stack(
        root=root, config=config, data_dir=data_dir, features_dir=features_dir,
        state_dir=state_dir, store_url=store_url, mlflow_backend=backend,
        artifacts=artifacts, airflow_home=airflow_home, airflow_db=airflow_db,
        base_env=dict(given), secrets=_load_secrets(state_dir / "secrets.json", given),
    )  # fmt: skip


def _check_celery(airflow_db: str, store_url: str) -> None:
    """Refuse a Celery stack whose workers would share a file: Airflow's metadata and the
    feature store must be servers (Airflow refuses SQLite under CeleryExecutor anyway)."""
    if airflow_db.startswith("sqlite"):
        raise CtloopError(
            "CTLOOP_STACK_EXECUTOR=celery needs Airflow's metadata in PostgreSQL: set "
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://user:pass@host:5432/airflow"
        )
    if store_url.startswith("sqlite"):
        raise CtloopError(
            "CTLOOP_STACK_EXECUTOR=celery runs tasks in workers that share no disk: set "
            "FEATURE_STORE_URL to a MariaDB server (mysql+pymysql://user:pass@host:3306/ctloop), "
            f"not {store_url}"
        )
