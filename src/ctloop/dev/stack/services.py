"""What the local stack runs: one table of services, and the ports and timeouts it uses.

`SERVICES` is the single definition of what runs: names, ports, health checks and the
variables each process is started with. `docker-compose.yml` runs the same services under
the same names with the same variables, and `tests/unit/test_stack_config.py` holds the two against
this table. Everything else in `ctloop.dev.stack` reads it; nothing here starts anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ctloop.errors import CtloopError
from ctloop.settings import Settings

SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"

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
        "AIRFLOW__CORE__TEST_CONNECTION",
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
        # Read only under CeleryExecutor (`CTLOOP_STACK_EXECUTOR=celery`); set in both
        # modes so that every component of one stack has the same configuration.
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        # the queue tasks go to: one per stack, so two stacks on one broker never take
        # each other's tasks
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE",
    }
)
# A Celery worker has its own working directory, data folder and AIRFLOW_HOME (nothing it
# needs may come from another process's disk); task logs go to one folder the api-server
# reads, Airflow's own convention when workers share a machine (else remote logging).
WORKER_ENV = AIRFLOW_ENV | frozenset({"AIRFLOW__LOGGING__BASE_LOG_FOLDER"})
# What the prediction service is started with.
SERVING_ENV = CTLOOP_ENV | frozenset({"CTLOOP_ADMIN_TOKEN", "BENTOML_DO_NOT_TRACK"})
# Prometheus reads no variables: its configuration file (rendered by `up`) says it all.
PROMETHEUS_ENV: frozenset[str] = frozenset()


ENV_BY_KIND: dict[str, frozenset[str]] = {
    "mlflow": MLFLOW_ENV,
    "serving": SERVING_ENV,
    "airflow": AIRFLOW_ENV,
    "airflow-worker": WORKER_ENV,
    "prometheus": PROMETHEUS_ENV,
}
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}


@dataclass(frozen=True)
class ServiceSpec:
    """One long-running process of the stack (and one docker-compose service)."""

    name: str
    """Process name here, service name in docker-compose.yml, log file name."""
    kind: str
    """mlflow | serving | airflow | airflow-worker | prometheus: which environment it gets
    (`ENV_BY_KIND`)."""
    title: str
    port_setting: str | None = None
    """The `StackConfig` field (env `CTLOOP_STACK_<FIELD>`) holding its HTTP port."""
    default_port: int | None = None
    health_path: str | None = None
    """HTTP path that answers 200 once the process serves."""
    airflow_component: str | None = None
    """Its key in Airflow's /api/v2/monitor/health answer (Airflow components only)."""
    program: str | None = None
    """An outside program the service is (not ctloop's venv): without it on PATH the
    service is left out of `up` with a message, the loop does not need it."""

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
    ServiceSpec("airflow-scheduler", "airflow", "Airflow scheduler",
                airflow_component="scheduler"),
    ServiceSpec("airflow-dag-processor", "airflow", "Airflow DAG processor",
                airflow_component="dag_processor"),
    ServiceSpec("airflow-triggerer", "airflow", "Airflow triggerer",
                airflow_component="triggerer"),
    ServiceSpec("prometheus", "prometheus", "Prometheus (scrapes the service, evaluates alerts)",
                "prometheus_port", 9090, "/-/ready", program="prometheus"),
)  # fmt: skip
"""Start order. MLflow and serving first: they start while `airflow db migrate` runs.
Under CeleryExecutor the workers of `celery_workers` follow the scheduler."""

SERVICE_NAMES = tuple(s.name for s in SERVICES)
WORKER_PREFIX = "airflow-worker-"


def celery_workers(count: int) -> tuple[ServiceSpec, ...]:
    """The Celery workers of a `CTLOOP_STACK_EXECUTOR=celery` stack: `airflow-worker-1..N`,
    each healthy once it answers a ping over the broker."""
    return tuple(
        ServiceSpec(f"{WORKER_PREFIX}{i}", "airflow-worker", f"Airflow Celery worker {i}")
        for i in range(1, count + 1)
    )


def worker_index(spec: ServiceSpec) -> int:
    """1 for `airflow-worker-1`: the offset of its log-server port and its folder's name."""
    return int(spec.name.removeprefix(WORKER_PREFIX))


def service(name: str) -> ServiceSpec:
    """The spec of one service, by name."""
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise CtloopError(f"no stack service '{name}' (services: {', '.join(SERVICE_NAMES)})")


class StackConfig(BaseSettings):
    """Ports, bind address and timeouts of the local stack (`CTLOOP_STACK_*`)."""

    # Read as ctloop's own settings are (environment over `.env`, frozen), own prefix.
    model_config = SettingsConfigDict(**{**Settings.model_config, "env_prefix": "CTLOOP_STACK_"})

    host: str = Field(default="127.0.0.1", description="address every server binds to")
    airflow_port: int = Field(default=8080, ge=1, le=65535)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    serving_port: int = Field(default=3000, ge=1, le=65535)
    prometheus_port: int = Field(default=9090, ge=1, le=65535)
    prometheus: bool = Field(
        default=True, description="start Prometheus when its program is installed"
    )
    airflow_worker_log_port: int = Field(default=8793, ge=1, le=65535,
                                         description="scheduler's task-log server")  # fmt: skip
    airflow_trigger_log_port: int = Field(default=8794, ge=1, le=65535,
                                          description="triggerer's log server")  # fmt: skip
    mlflow_workers: int = Field(default=2, ge=1, le=16)
    executor: Literal["local", "celery"] = Field(
        default="local",
        description="local: the scheduler runs tasks (LocalExecutor); celery: it hands them "
        "to `celery_workers` Celery workers over `celery_broker_url`",
    )
    celery_workers: int = Field(default=2, ge=1, le=16)
    celery_concurrency: int = Field(default=2, ge=1, le=64,
                                    description="task slots of each Celery worker")  # fmt: skip
    celery_broker_url: str = Field(default="redis://127.0.0.1:6379/0")
    celery_worker_log_port: int = Field(
        default=8795, ge=1, le=65535,
        description="log server of Celery worker 1 (worker N: this + N - 1)",
    )  # fmt: skip
    mlflow_backend_store_uri: str | None = Field(
        default=None, description="MLflow's database (default: the MLflow backend from settings)"
    )
    state_dir: Path | None = Field(default=None, description="default: <data dir>/stack")
    start_timeout_seconds: float = Field(default=300, gt=0)
    stop_timeout_seconds: float = Field(default=30, gt=0)

    def port(self, spec: ServiceSpec) -> int | None:
        """The HTTP port of a service, or None for the Airflow components that have none."""
        return int(getattr(self, spec.port_setting)) if spec.port_setting else None
