"""The local stack: every long-running part of ctloop as processes of this machine, no Docker.

`make up` starts, from this checkout:

* the MLflow tracking server with its UI (`mlflow server`, artifacts served by it);
* Airflow 3: api-server (REST API and UI), scheduler (LocalExecutor), dag-processor and
  triggerer, with the repository's `dags/` folder and its metadata in SQLite under the
  data folder (or PostgreSQL, never MariaDB);
* the BentoML prediction service (`bentoml serve serving.service:ModelService`);
* Prometheus scraping that service with the shipped alert rules, when Debian's
  `prometheus` is installed (`prometheus`, rendering its configuration).

The feature store is whatever `FEATURE_STORE_URL` says (MariaDB when configured, the
embedded SQLite file otherwise); the stack only creates its tables.

Why processes and not `airflow standalone`: standalone hides the four Airflow components
behind one parent, forces its own settings and knows nothing of MLflow or serving. Here
circusd (`supervisor`) keeps each service in a session of its own, so `make down` stops
exactly what `make up` started, children included, and nothing else on a shared machine;
`make up` twice starts nothing twice; and every process has one log file.

One module per job: `services` (the table), `urls` and `config` (settings, secrets and
each process's environment, resolved once), `databases` (created and migrated before
anything starts), `prometheus` (its configuration), `supervisor` (circusd), `health`
(checks and the wait), `commands` (up, down, status) and `cli`. Importing this package
starts nothing and does not import circus; the names below are what tests and other
tools use.

    python -m ctloop.dev.stack up | down | status
"""

from ctloop.dev.stack.config import Stack, resolve
from ctloop.dev.stack.databases import create_postgres_database_if_missing
from ctloop.dev.stack.services import (
    PASSWORDS_FILE,
    SERVICE_NAMES,
    SERVICES,
    ServiceSpec,
    StackConfig,
    service,
)
from ctloop.dev.stack.urls import airflow_connection_json, airflow_metadata_url

__all__ = [
    "PASSWORDS_FILE",
    "SERVICES",
    "SERVICE_NAMES",
    "ServiceSpec",
    "Stack",
    "StackConfig",
    "airflow_connection_json",
    "airflow_metadata_url",
    "create_postgres_database_if_missing",
    "resolve",
    "service",
]
