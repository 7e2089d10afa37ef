"""The databases the stack needs before any of its processes starts.

The feature store's tables, MLflow's database (created on MariaDB, its folder on SQLite),
Airflow's PostgreSQL database when one is configured, and `airflow db migrate`: all done
by `up` first, so no service starts against a database that is not there yet, and a
fresh MariaDB or PostgreSQL server needs no manual step.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ctloop.dev.launcher import tail
from ctloop.dev.stack.config import Stack
from ctloop.dev.stack.services import service
from ctloop.dev.stack.urls import safe_url
from ctloop.errors import CtloopError
from ctloop.features.view import list_views, load_view
from ctloop.store.features import FeatureStore

Say = Callable[[str], None]
"""Where progress lines go (the CLI prints them on stderr)."""


def prepare_stores(stack: Stack, say: Say) -> None:
    """Feature store tables (and the MariaDB databases) exist before anything reads them."""
    views = [load_view(name, stack.features_dir) for name in list_views(stack.features_dir)]
    store = FeatureStore(stack.store_url)
    try:
        store.init(views)
    finally:
        store.dispose()
    say(f"feature store {store.safe_url}: tables of {', '.join(v.name for v in views)} ready")
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
        say(f"created Airflow's metadata database {safe_url(stack.airflow_db)}")


def create_postgres_database_if_missing(url: str) -> bool:
    """Create the PostgreSQL database of `url` when the server lacks it (as init-db does
    for MariaDB), so pointing Airflow at a fresh server needs no manual step.

    Connects to the server's `postgres` database with the same credentials; CREATE
    DATABASE cannot run inside a transaction, hence AUTOCOMMIT. Returns whether it made one.
    """
    parsed = make_url(url)
    name = parsed.database
    if not name:
        raise CtloopError(f"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN={safe_url(url)} names no database")
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
            f"Airflow's metadata database {safe_url(url)} is unreachable: {exc.orig}"
        ) from exc
    finally:
        server.dispose()


def migrate_airflow(stack: Stack, say: Say) -> None:
    """`airflow db migrate`: create or upgrade the metadata database before any component."""
    spec = service("airflow-scheduler")
    log_path = stack.log_path("airflow-db-migrate")
    say(f"airflow db migrate ({safe_url(stack.airflow_db)}) ...")
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
