"""The local stack: every long-running part of ctloop as plain processes, no Docker.

`make up` starts, on this machine and from this checkout:

* the MLflow tracking server with its UI (`mlflow server`, artifacts served by it);
* Airflow 3: api-server (REST API and UI), scheduler (LocalExecutor), dag-processor and
  triggerer, with the repository's `dags/` folder and its metadata in SQLite under the
  data folder (or PostgreSQL, never MariaDB);
* the BentoML prediction service (`bentoml serve serving.service:ModelService`).

The feature store is whatever `FEATURE_STORE_URL` says (MariaDB when configured, the
embedded SQLite file otherwise); the stack only creates its tables.

Why processes and not `airflow standalone`: standalone hides the four Airflow components
behind one parent, forces its own settings and knows nothing of MLflow or serving. Here
each service is its own session (and process group) with a pid file, so `make down` stops
exactly what `make up` started, children included, and nothing else on a shared machine;
`make up` twice starts nothing twice; and every process has one log file.

`SERVICES` is the single definition of what runs: names, ports, health checks and the
variables each process is started with. `docker-compose.yml` runs the same services under
the same names with the same variables, and `tests/test_stack.py` holds the two against
this table.

    python -m ctloop.dev.stack up | down | status
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ctloop.errors import CtloopError

Say = Callable[[str], None]

SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"

# ---------------------------------------------------------------------------- the table

# Every ctloop process reads these: where the data, views, feature store and MLflow are.
CTLOOP_ENV = frozenset(
    {"CTLOOP_DATA_DIR", "CTLOOP_FEATURES_DIR", "FEATURE_STORE_URL", "MLFLOW_TRACKING_URI"}
)
# What the MLflow server is started with (its own CLI reads these variables). Its job
# runner (huey consumers for GenAI jobs ctloop never submits) is off unless asked for: it
# costs four extra processes, about 1 GiB and a steady share of a 2-core machine.
MLFLOW_ENV = frozenset(
    {
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_ARTIFACTS_DESTINATION",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
    }
)
# What every Airflow component is started with. The JWT secret, API secret key and Fernet
# key must be the same in every component (tokens signed by one are checked by another).
AIRFLOW_ENV = CTLOOP_ENV | frozenset(
    {
        "AIRFLOW_HOME",
        "AIRFLOW__CORE__EXECUTOR",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__CORE__LOAD_EXAMPLES",
        "AIRFLOW__CORE__AUTH_MANAGER",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
        "AIRFLOW_CONN_FEATURE_STORE",
        "CTLOOP_SERVING_URL",
        "CTLOOP_ADMIN_TOKEN",
    }
)
# What the prediction service is started with.
SERVING_ENV = CTLOOP_ENV | frozenset({"CTLOOP_ADMIN_TOKEN", "BENTOML_DO_NOT_TRACK"})


ENV_BY_KIND: dict[str, frozenset[str]] = {
    "mlflow": MLFLOW_ENV,
    "serving": SERVING_ENV,
    "airflow": AIRFLOW_ENV,
}


@dataclass(frozen=True)
class ServiceSpec:
    """One long-running process of the stack (and one docker-compose service)."""

    name: str
    """Process name here, service name in docker-compose.yml, log file name."""
    kind: str
    """mlflow | serving | airflow: which environment it gets (`ENV_BY_KIND`)."""
    title: str
    port_setting: str | None = None
    """The `StackConfig` field (env `CTLOOP_STACK_<FIELD>`) holding its HTTP port."""
    default_port: int | None = None
    health_path: str | None = None
    """HTTP path that answers 200 once the process serves."""
    airflow_component: str | None = None
    """Its key in Airflow's /api/v2/monitor/health answer (Airflow components only)."""

    @property
    def env(self) -> frozenset[str]:
        """The variables the stack sets for it, on top of the caller's environment."""
        return ENV_BY_KIND[self.kind]


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("mlflow", "mlflow", "MLflow tracking server and UI", "mlflow_port", 5000,
                "/health"),
    ServiceSpec("serving", "serving", "BentoML prediction service", "serving_port", 3000,
                "/livez"),
    ServiceSpec("airflow-api-server", "airflow", "Airflow API server and UI", "airflow_port",
                8080, "/api/v2/monitor/health", "metadatabase"),
    ServiceSpec("airflow-scheduler", "airflow", "Airflow scheduler (LocalExecutor)",
                airflow_component="scheduler"),
    ServiceSpec("airflow-dag-processor", "airflow", "Airflow DAG processor",
                airflow_component="dag_processor"),
    ServiceSpec("airflow-triggerer", "airflow", "Airflow triggerer",
                airflow_component="triggerer"),
)  # fmt: skip
"""Start order. MLflow and serving first: they start while `airflow db migrate` runs."""

SERVICE_NAMES = tuple(s.name for s in SERVICES)


def service(name: str) -> ServiceSpec:
    """The spec of one service, by name."""
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise CtloopError(f"no stack service '{name}' (services: {', '.join(SERVICE_NAMES)})")


class StackConfig(BaseSettings):
    """Ports, bind address and timeouts of the local stack (`CTLOOP_STACK_*`)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_prefix="CTLOOP_STACK_",
        extra="ignore",
        frozen=True,
    )

    host: str = Field(default="127.0.0.1", description="address every server binds to")
    airflow_port: int = Field(default=8080, ge=1, le=65535)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    serving_port: int = Field(default=3000, ge=1, le=65535)
    airflow_worker_log_port: int = Field(default=8793, ge=1, le=65535,
                                         description="scheduler's task-log server")  # fmt: skip
    airflow_trigger_log_port: int = Field(default=8794, ge=1, le=65535,
                                          description="triggerer's log server")  # fmt: skip
    mlflow_workers: int = Field(default=2, ge=1, le=16)
    mlflow_backend_store_uri: str | None = Field(
        default=None, description="MLflow's database (default: the MLflow backend from settings)"
    )
    state_dir: Path | None = Field(default=None, description="default: <data dir>/stack")
    start_timeout_seconds: float = Field(default=300, gt=0)
    stop_timeout_seconds: float = Field(default=30, gt=0)

    def port(self, spec: ServiceSpec) -> int | None:
        return int(getattr(self, spec.port_setting)) if spec.port_setting else None


# ---------------------------------------------------------------------------- resolution


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
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def local_url(self, spec: ServiceSpec) -> str | None:
        """Where this machine reaches the service (a 0.0.0.0 bind is reached on 127.0.0.1)."""
        port = self.config.port(spec)
        if port is None:
            return None
        host = self.config.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{host}:{port}"

    @property
    def mlflow_url(self) -> str:
        return str(self.local_url(service("mlflow")))

    @property
    def serving_url(self) -> str:
        return str(self.local_url(service("serving")))

    @property
    def airflow_url(self) -> str:
        return str(self.local_url(service("airflow-api-server")))

    @property
    def passwords_file(self) -> Path:
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
        elif spec.kind == "airflow":
            values = {
                **ctloop,
                "AIRFLOW_HOME": str(self.airflow_home),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.root / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
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
            }
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
        host, port = self.config.host, str(self.config.port(spec) or "")
        commands = {
            "mlflow": [py, "-m", "mlflow", "server", "--host", host, "--port", port,
                       "--workers", str(self.config.mlflow_workers), "--serve-artifacts"],
            "serving": [py, "-m", "bentoml", "serve", "serving.service:ModelService",
                        "--host", host, "--port", port, "--working-dir", str(self.root)],
            "airflow-api-server": [py, "-m", "airflow", "api-server", "--host", host,
                                   "--port", port],
            "airflow-scheduler": [py, "-m", "airflow", "scheduler"],
            "airflow-dag-processor": [py, "-m", "airflow", "dag-processor"],
            "airflow-triggerer": [py, "-m", "airflow", "triggerer"],
        }  # fmt: skip
        return commands[spec.name]


def _load_env_file(path: Path) -> dict[str, str]:
    """`.env` values (the environment wins over them, as in ctloop's settings)."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _absolute_sqlite(url: str) -> str:
    """A SQLite URL with an absolute path: every process has another working folder."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return url
    if parsed.database == ":memory:":
        raise CtloopError(f"{url}: an in-memory SQLite database cannot be shared by processes")
    path = Path(parsed.database).expanduser().resolve()
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show nothing of it that could be a secret
        return "<unparseable URL>"


def airflow_metadata_url(env: Mapping[str, str], airflow_home: Path) -> str:
    """Airflow's metadata database: SQLite under AIRFLOW_HOME, or the PostgreSQL URL given.

    Airflow does not support MariaDB for its own metadata (and ctloop's MariaDB holds the
    feature store), so a mysql/mariadb URL is refused here instead of failing later inside
    a migration.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = (env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or "").strip()
    if not url:
        return f"sqlite:///{airflow_home / 'airflow.db'}"
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CtloopError(f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is not a URL: {exc}") from exc
    backend = parsed.get_backend_name()
    if backend in ("mysql", "mariadb"):
        raise CtloopError(
            f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN={_safe(url)} points Airflow's metadata at "
            "MySQL/MariaDB: Airflow does not support MariaDB for its metadata, and ctloop's "
            "MariaDB is the feature store. Use PostgreSQL "
            "(postgresql+psycopg2://user:pass@host:5432/airflow) or unset it for SQLite "
            f"under {airflow_home}"
        )
    if backend == "postgresql":
        try:
            parsed.get_dialect().import_dbapi()
        except ImportError as exc:
            raise CtloopError(
                f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN={_safe(url)} needs the PostgreSQL "
                f"driver '{parsed.get_driver_name()}', which this environment lacks ({exc}); "
                "the locked environment has psycopg2 (postgresql+psycopg2://): run "
                "`make install`, or use that driver"
            ) from exc
        return url
    if backend == "sqlite":
        return _absolute_sqlite(url)
    raise CtloopError(
        f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN={_safe(url)}: '{backend}' is not a database "
        "Airflow's metadata can use here (PostgreSQL, or SQLite for one machine)"
    )


def airflow_connection_json(store_url: str) -> str:
    """The feature store as an Airflow connection (AIRFLOW_CONN_FEATURE_STORE, JSON form).

    JSON, not a URI, so passwords need no escaping; the SQLAlchemy driver travels in the
    `sqlalchemy_scheme` extra, which `ctloop.orchestration.tasks.connection_to_url` reads back.
    """
    from sqlalchemy.engine import make_url

    url = make_url(store_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": url.database or ""})
    conn_type = {"mysql": "mysql", "mariadb": "mysql", "postgresql": "postgres"}.get(backend)
    if conn_type is None:
        raise CtloopError(f"FEATURE_STORE_URL={_safe(store_url)}: unsupported database")
    extra: dict[str, Any] = {"sqlalchemy_scheme": url.drivername}
    extra.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    conn = {
        "conn_type": conn_type,
        "host": url.host or "",
        "port": url.port,
        "login": url.username or "",
        "password": url.password or "",
        "schema": url.database or "",
        "extra": extra,
    }
    return json.dumps({k: v for k, v in conn.items() if v not in (None, "")})


def _load_secrets(path: Path, given: Mapping[str, str]) -> dict[str, str]:
    """Secrets shared by the processes, generated once into the state folder (mode 0600).

    Kept across restarts: the Fernet key encrypts what Airflow stores, and a new admin token
    would lock out a promote step started before the restart. A value in the environment
    or `.env` wins over the file.
    """
    from cryptography.fernet import Fernet

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
    from pydantic import ValidationError

    from ctloop.settings import Settings, project_root, settings_error

    root = project_root()
    if root is None or not (root / "dags").is_dir() or not (root / "serving").is_dir():
        raise CtloopError("the local stack runs from a ctloop checkout (dags/ and serving/)")
    cwd = cwd or Path.cwd()
    given = {**_load_env_file(cwd / ".env"), **(os.environ if environ is None else environ)}
    with _environ(given), contextlib.chdir(cwd):
        try:
            settings = Settings()
        except ValidationError as exc:
            raise settings_error(Settings, exc) from exc
        try:
            config = StackConfig()
        except ValidationError as exc:
            raise settings_error(StackConfig, exc) from exc
    data_dir = (cwd / settings.data_dir).resolve()
    features_dir = (cwd / settings.features_dir).resolve()
    state_dir = (cwd / (config.state_dir or data_dir / "stack")).resolve()
    store_url = _absolute_sqlite(
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
        backend = _absolute_sqlite(backend) if "://" in backend else backend
    artifacts = (cwd / (settings.mlflow_artifact_root or data_dir / "mlartifacts")).resolve()
    # Never an inherited AIRFLOW_HOME: that may well be another project's Airflow.
    airflow_home = state_dir / "airflow"
    with contextlib.chdir(cwd):
        airflow_db = airflow_metadata_url(given, airflow_home)
    return Stack(
        root=root, config=config, data_dir=data_dir, features_dir=features_dir,
        state_dir=state_dir, store_url=store_url, mlflow_backend=backend,
        artifacts=artifacts, airflow_home=airflow_home, airflow_db=airflow_db,
        base_env=dict(given), secrets=_load_secrets(state_dir / "secrets.json", given),
    )  # fmt: skip


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Settings classes read os.environ: let them read `values` instead, then restore."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# ---------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class PidRecord:
    """What `up` wrote about one process it started: enough to find exactly it again."""

    name: str
    pid: int
    pgid: int
    sid: int
    """Session id: `up` starts each service as a session (and group) leader, pid = sid."""
    create_time: float
    command: list[str]
    log: str
    url: str | None
    started_at: str


def _read_record(path: Path) -> PidRecord | None:
    try:
        return PidRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def session_processes(sid: int) -> list[Any]:
    """Live (non-zombie) processes of a session: the service and everything it started.

    A session, not only the process group: Airflow's task supervisors put themselves in
    process groups of their own, but they stay in the scheduler's session.
    """
    import psutil

    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getsid(proc.pid) == sid:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def is_ours(record: PidRecord) -> bool:
    """Whether the recorded session still runs what `up` started.

    The leader is matched on pid and start time, so a recycled pid is never taken for
    ours. If the leader is gone but members remain, they are still ours: Linux does not
    hand out a pid that is in use as a session or process-group id.
    """
    members = session_processes(record.sid)
    leader = next((p for p in members if p.pid == record.sid), None)
    if leader is not None:
        with contextlib.suppress(Exception):
            return abs(leader.create_time() - record.create_time) < 1.0
        return False
    return bool(members)


def _start(stack: Stack, spec: ServiceSpec) -> PidRecord:
    """Start one service in its own session (process group), appending to its log."""
    import psutil

    command = stack.command(spec)
    log_path = stack.log_path(spec.name)
    with log_path.open("ab") as log:
        stamp = dt.datetime.now().isoformat(timespec="seconds")
        log.write(f"\n===== {stamp} ctloop stack: {' '.join(command)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            command, cwd=stack.root, env=stack.env(spec), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        created = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        created = time.time()
    record = PidRecord(
        name=spec.name, pid=proc.pid, pgid=proc.pid, sid=proc.pid, create_time=created,
        command=command, log=str(log_path), url=stack.local_url(spec),
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    stack.pid_path(spec.name).write_text(json.dumps(asdict(record), indent=2))
    return record


def _signalsession_processes(record: PidRecord, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pgid, sig)
    for proc in session_processes(record.sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, sig)


def stop_sessions(records: list[PidRecord], timeout: float) -> list[str]:
    """SIGTERM every session, wait, SIGKILL what is left; the names that needed SIGKILL."""
    for record in records:
        _signalsession_processes(record, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    pending = list(records)
    while pending and time.monotonic() < deadline:
        time.sleep(0.3)
        pending = [r for r in pending if session_processes(r.sid)]
    killed = [r.name for r in pending]
    deadline = time.monotonic() + 10
    while pending and time.monotonic() < deadline:
        for record in pending:  # again and again: a process may fork while we look
            _signalsession_processes(record, signal.SIGKILL)
        time.sleep(0.2)
        pending = [r for r in pending if session_processes(r.sid)]
    if pending:
        raise CtloopError(
            "could not stop " + ", ".join(f"{r.name} (session {r.sid})" for r in pending)
        )
    return killed


@contextlib.contextmanager
def _locked(stack: Stack) -> Iterator[None]:
    """One `up`/`down` at a time per state folder (two `make up` must not race)."""
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    with (stack.state_dir / "stack.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise CtloopError(
                f"another `ctloop stack` command holds {stack.state_dir / 'stack.lock'}"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def running(stack: Stack) -> dict[str, PidRecord]:
    """The services whose recorded process group still runs; stale pid files are removed."""
    found = {}
    for spec in SERVICES:
        path = stack.pid_path(spec.name)
        record = _read_record(path)
        if record is None:
            continue
        if is_ours(record):
            found[spec.name] = record
        else:
            path.unlink(missing_ok=True)
    return found


def tail(path: Path | str, lines: int = 40) -> str:
    """The last lines of a log file (for error messages)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------- health


def _get(url: str, timeout: float = 3.0) -> tuple[int, Any]:
    """(status, JSON body or text) of a GET; (0, reason) when nothing answers."""
    import httpx

    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return 0, str(exc)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


def check_health(stack: Stack, spec: ServiceSpec) -> tuple[bool, str]:
    """Whether one service is healthy now, and what it said."""
    if spec.airflow_component is not None:
        status, body = _get(f"{stack.airflow_url}/api/v2/monitor/health")
        if status != 200 or not isinstance(body, dict):
            return False, f"Airflow health answered {status or 'nothing'}"
        part = body.get(spec.airflow_component) or {}
        state = str(part.get("status") or "unknown")
        return state == "healthy", f"{spec.airflow_component}: {state}"
    if spec.health_path is None:  # pragma: no cover - every service has one of the two
        return True, "no health check"
    status, _ = _get(f"{stack.local_url(spec)}{spec.health_path}")
    return status == 200, f"{spec.health_path} answered {status or 'nothing'}"


def _port_in_use(host: str, port: int) -> bool:
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _check_ports(stack: Stack, starting: list[ServiceSpec]) -> None:
    """Refuse to start on a port something else already answers on, naming the setting."""
    wanted: list[tuple[str, int, str]] = []
    for spec in starting:
        if spec.port_setting:
            wanted.append((spec.name, int(stack.config.port(spec) or 0), spec.port_setting))
        if spec.name == "airflow-scheduler":
            wanted.append((spec.name, stack.config.airflow_worker_log_port,
                           "airflow_worker_log_port"))  # fmt: skip
        if spec.name == "airflow-triggerer":
            wanted.append((spec.name, stack.config.airflow_trigger_log_port,
                           "airflow_trigger_log_port"))  # fmt: skip
    ports = [port for _, port, _ in wanted]
    if len(set(ports)) != len(ports):
        raise CtloopError(f"the stack's ports collide: {wanted}")
    for name, port, setting in wanted:
        if _port_in_use(stack.config.host, port):
            raise CtloopError(
                f"port {port} for {name} is already in use by another process; stop it or "
                f"set CTLOOP_STACK_{setting.upper()} to a free port"
            )


# ---------------------------------------------------------------------------- up/down


def _prepare_stores(stack: Stack, say: Say) -> None:
    """Feature store tables (and the MariaDB databases) exist before anything reads them."""
    from ctloop.features.view import list_views, load_view
    from ctloop.store.features import FeatureStore

    views = [load_view(name, stack.features_dir) for name in list_views(stack.features_dir)]
    store = FeatureStore(stack.store_url)
    try:
        store.init(views)
    finally:
        store.dispose()
    say(f"feature store {store.safe_url}: tables of {', '.join(v.name for v in views)} ready")
    from sqlalchemy.engine import make_url

    backend = make_url(stack.mlflow_backend)
    if backend.get_backend_name() in ("mysql", "mariadb"):
        mlflow_db = FeatureStore(stack.mlflow_backend)  # only to create the database
        try:
            mlflow_db.create_database_if_missing()
        finally:
            mlflow_db.dispose()
    elif backend.get_backend_name() == "sqlite" and backend.database:
        Path(backend.database).parent.mkdir(parents=True, exist_ok=True)
    postgres = make_url(stack.airflow_db).get_backend_name() == "postgresql"
    if postgres and create_postgres_database_if_missing(stack.airflow_db):
        say(f"created Airflow's metadata database {_safe(stack.airflow_db)}")


def create_postgres_database_if_missing(url: str) -> bool:
    """Create the PostgreSQL database of `url` when the server lacks it (as init-db does
    for MariaDB), so pointing Airflow at a fresh server needs no manual step.

    Connects to the server's `postgres` database with the same credentials; CREATE
    DATABASE cannot run inside a transaction, hence AUTOCOMMIT. Returns whether it made one.
    """
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database
    if not name:
        raise CtloopError(f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN={_safe(url)} names no database")
    if not re.fullmatch(r"[A-Za-z0-9_]{1,63}", name):
        raise CtloopError(f"database name '{name}' must be letters, digits and underscores")
    server = sa.create_engine(
        parsed.set(database="postgres"), poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with server.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
            if exists:
                return False
            quoted = server.dialect.identifier_preparer.quote_identifier(name)
            conn.execute(sa.text(f"CREATE DATABASE {quoted}"))
            return True
    except sa.exc.OperationalError as exc:
        raise CtloopError(
            f"Airflow's metadata database {_safe(url)} is unreachable: {exc.orig}"
        ) from exc
    finally:
        server.dispose()


def _migrate_airflow(stack: Stack, say: Say) -> None:
    """`airflow db migrate`: create or upgrade the metadata database before any component."""
    spec = service("airflow-scheduler")
    log_path = stack.log_path("airflow-db-migrate")
    say(f"airflow db migrate ({_safe(stack.airflow_db)}) ...")
    with log_path.open("ab") as log:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"], cwd=stack.root,
                env=stack.env(spec), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, timeout=stack.config.start_timeout_seconds,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise CtloopError(
                f"`airflow db migrate` did not finish in {exc.timeout:.0f}s; see {log_path}:\n"
                f"{tail(log_path)}"
            ) from exc
    if done.returncode != 0:
        raise CtloopError(
            f"`airflow db migrate` failed (exit {done.returncode}); see {log_path}:\n"
            f"{tail(log_path)}"
        )


def _wait_healthy(stack: Stack, records: dict[str, PidRecord], started: float) -> None:
    """Wait until every service answers healthy; name the one that does not, with its log."""
    deadline = started + stack.config.start_timeout_seconds
    waiting = [spec for spec in SERVICES if spec.name in records]
    last: dict[str, str] = {}
    while waiting:
        for spec in list(waiting):
            record = records[spec.name]
            if not session_processes(record.sid):
                raise CtloopError(
                    f"{spec.title} ({spec.name}) exited during start-up; "
                    f"log {record.log}:\n{tail(record.log)}"
                )
            ok, said = check_health(stack, spec)
            last[spec.name] = said
            if ok:
                waiting.remove(spec)
        if not waiting:
            return
        if time.monotonic() > deadline:
            spec = waiting[0]
            record = records[spec.name]
            raise CtloopError(
                f"{spec.title} ({spec.name}) was not healthy after "
                f"{stack.config.start_timeout_seconds:.0f}s (last check: {last.get(spec.name)}); "
                f"log {record.log}:\n{tail(record.log)}"
            )
        time.sleep(1.0)


def up(stack: Stack, say: Say) -> dict[str, PidRecord]:
    """Start what is not running, wait for health, return every service's record.

    Services already running (their pid file names a live process group of ours) are left
    alone, so `up` twice starts nothing twice. If a service does not become healthy, the
    processes this call started are stopped again and the error names the service and its
    log file.
    """
    with _locked(stack):
        stack.log_dir.mkdir(parents=True, exist_ok=True)
        stack.airflow_home.mkdir(parents=True, exist_ok=True)
        stack.artifacts.mkdir(parents=True, exist_ok=True)
        already = running(stack)
        for name, record in already.items():
            say(f"{name}: already running (pid {record.pid})")
            if record.command != stack.command(service(name)):
                say(f"{name}: started with another configuration ({' '.join(record.command)});"
                    " `make down` then `make up` to apply the current one")  # fmt: skip
        starting = [spec for spec in SERVICES if spec.name not in already]
        if not starting:
            return already
        _check_ports(stack, starting)
        _prepare_stores(stack, say)
        began = time.monotonic()
        started: dict[str, PidRecord] = {}
        first_airflow = next((s for s in starting if s.kind == "airflow"), None)
        try:
            for spec in starting:
                if spec is first_airflow:
                    _migrate_airflow(stack, say)  # before the first Airflow component
                started[spec.name] = _start(stack, spec)
                say(f"{spec.name}: started (pid {started[spec.name].pid}), "
                    f"log {started[spec.name].log}")  # fmt: skip
            say(f"waiting for health (at most {stack.config.start_timeout_seconds:.0f}s) ...")
            _wait_healthy(stack, started, began)
        except BaseException:
            if started:
                stop_sessions(list(started.values()), stack.config.stop_timeout_seconds)
                for name in started:
                    stack.pid_path(name).unlink(missing_ok=True)
            raise
        say(f"all healthy in {time.monotonic() - began:.0f}s")
        return {**already, **started}


def down(stack: Stack, say: Say) -> list[str]:
    """Stop exactly the sessions `up` recorded (each service and what it started)."""
    with _locked(stack):
        records = running(stack)
        if not records:
            say("nothing of the stack is running")
            return []
        ordered = [records[s.name] for s in reversed(SERVICES) if s.name in records]
        say(f"stopping {', '.join(r.name for r in ordered)} ...")
        killed = stop_sessions(ordered, stack.config.stop_timeout_seconds)
        for record in ordered:
            stack.pid_path(record.name).unlink(missing_ok=True)
        if killed:
            say(f"had to SIGKILL {', '.join(killed)} (did not stop on SIGTERM)")
        return [r.name for r in ordered]


def status(stack: Stack) -> list[dict[str, Any]]:
    """One row per service: running, pid, URL, health, log."""
    records = running(stack)
    rows = []
    for spec in SERVICES:
        record = records.get(spec.name)
        ok, said = check_health(stack, spec) if record else (False, "not running")
        rows.append({
            "service": spec.name, "running": record is not None,
            "pid": record.pid if record else None, "healthy": ok, "health": said,
            "url": stack.local_url(spec), "log": str(stack.log_path(spec.name)),
        })  # fmt: skip
    return rows


def airflow_login(stack: Stack) -> dict[str, str]:
    """The SimpleAuthManager users and the passwords Airflow generated for them."""
    try:
        return dict(json.loads(stack.passwords_file.read_text()))
    except (OSError, ValueError):
        return {}


def summary(stack: Stack) -> str:
    """What a person needs after `make up`: URLs, ports, login, logs."""
    login = airflow_login(stack)
    users = ", ".join(f"{u} / {p}" for u, p in login.items()) or (
        f"(not generated yet: see {stack.passwords_file})"
    )
    lines = [
        "",
        "ctloop local stack",
        f"  Airflow UI + REST API  {stack.airflow_url}    login {users}",
        f"  MLflow UI + tracking   {stack.mlflow_url}",
        f"  Prediction service     {stack.serving_url}    (OpenAPI at /, /readyz 503 "
        "until a champion exists)",
        "",
        f"  feature store          {_safe(stack.store_url)}",
        f"  MLflow backend         {_safe(stack.mlflow_backend)}, artifacts {stack.artifacts}",
        f"  Airflow metadata       {_safe(stack.airflow_db)}",
        f"  Airflow password file  {stack.passwords_file}",
        f"  admin token            {stack.state_dir / 'secrets.json'} (admin_token)",
        f"  logs                   {stack.log_dir}/*.log, task logs in "
        f"{stack.airflow_home / 'logs'}",
        f"  CLI against the stack  export MLFLOW_TRACKING_URI={stack.mlflow_url}",
        "  stop with `make down`",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- CLI


def _echo_err(line: str) -> None:
    click.echo(line, err=True)


@click.group("stack")
def stack_cli() -> None:
    """The local stack: Airflow, MLflow server and BentoML service as processes."""


@stack_cli.command("up")
def up_command() -> None:
    """Start every service that is not running, wait until healthy, print URLs and login."""
    stack = resolve()
    up(stack, _echo_err)
    click.echo(summary(stack))


@stack_cli.command("down")
def down_command() -> None:
    """Stop exactly the processes `up` started (their sessions: groups and children)."""
    down(resolve(), _echo_err)


@stack_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per service.")
def status_command(as_json: bool) -> None:
    """Each service: running, pid, health, URL, log. Exit 1 unless all run and are healthy."""
    stack = resolve()
    rows = status(stack)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(f"{'service':<23}{'state':<10}{'pid':>8}  {'health':<34}url")
        for row in rows:
            state = "healthy" if row["healthy"] else ("running" if row["running"] else "stopped")
            click.echo(f"{row['service']:<23}{state:<10}{row['pid'] or '-':>8}  "
                       f"{row['health'][:33]:<34}{row['url'] or ''}")  # fmt: skip
        click.echo(f"logs: {stack.log_dir}")
    if not all(row["healthy"] for row in rows):
        sys.exit(1)


def main() -> None:
    """`python -m ctloop.dev.stack`: user errors print one line and exit with status 2."""
    from ctloop.clirunner import run_command

    run_command(stack_cli)


if __name__ == "__main__":
    main()
