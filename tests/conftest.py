"""Shared fixtures: real databases, created per test and dropped after.

MariaDB is the production path, so store tests run on it and on embedded SQLite from the
same test code. A test that needs MariaDB (or PostgreSQL, for Airflow's metadata) and
cannot reach it fails: it does not skip.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ctloop.features.view import FeatureView, load_view_file
from ctloop.store.features import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
MARIADB_SERVER = os.environ.get("CTLOOP_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")
POSTGRES_SERVER = os.environ.get(
    "CTLOOP_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432"
)


@pytest.fixture(scope="session")
def view() -> FeatureView:
    return load_view_file(ROOT / "features" / "credit_score.yaml")


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


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh, uniquely named MariaDB database, dropped after the test."""
    with mariadb_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(params=["sqlite", "mariadb"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The same test on the embedded default and on MariaDB."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(store_url: str, view: FeatureView) -> Iterator[FeatureStore]:
    fs = FeatureStore(store_url, chunk_rows=1000, batch_rows=500)
    fs.init([view])
    yield fs
    fs.dispose()
