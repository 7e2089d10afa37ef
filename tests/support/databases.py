"""Throw-away databases on the real servers: created per test or module, dropped after.

MariaDB is the production path of the feature store and the prediction log; PostgreSQL
holds Airflow's metadata in the stack test. A test that needs a server and cannot reach it
fails naming the server: nothing is skipped. Both addresses can be moved with
`CTLOOP_TEST_MARIADB` / `CTLOOP_TEST_POSTGRES`; the unit tier's guard reads the same two.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

MARIADB_SERVER = os.environ.get("CTLOOP_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")
POSTGRES_SERVER = os.environ.get(
    "CTLOOP_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432"
)


@contextlib.contextmanager
def mariadb_database(prefix: str = "ctloop_test") -> Iterator[str]:
    """Create a uniquely named MariaDB database, yield its URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    server = sa.create_engine(MARIADB_SERVER, poolclass=sa.pool.NullPool)
    try:
        with server.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"MariaDB is required at {MARIADB_SERVER} and is not answering: {exc}")
    try:
        yield f"{MARIADB_SERVER}/{name}"
    finally:
        with server.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()


@contextlib.contextmanager
def postgres_database(prefix: str = "ctloop_test") -> Iterator[str]:
    """The URL of a uniquely named PostgreSQL database that does not exist yet (the code
    under test creates it); dropped afterwards if it was made. Airflow's metadata lives
    here: PostgreSQL is its production backend, and Airflow does not support MariaDB."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    server = sa.create_engine(
        f"{POSTGRES_SERVER}/postgres", poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with server.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required at {POSTGRES_SERVER} and is not answering: {exc}")
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with server.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


@pytest.fixture(name="store_url", params=["mariadb"])
def mariadb_store_url(mariadb_url: str) -> str:
    """`store_url` for a `*_mariadb` module of `integration/`, which imports it: MariaDB
    only (the unit tier runs the same tests' SQLite cases)."""
    return mariadb_url
