"""Shared fixtures: the shipped view and real databases, created per test and dropped after.

The tests come in tiers by folder: `unit/` needs no service (embedded SQLite, frames,
files), `integration/` drives real MariaDB, MLflow stores, `bentoml serve` and Airflow's
`dag.test()`, `e2e/` runs the whole stack, the demo and the load test. Each test gets its
tier as a marker too (`-m unit`, `-m "not e2e"`).

MariaDB is the production path, so the store tests run on it (in `integration/`) and on
embedded SQLite (in `unit/`) from the same test code: `store_url` says which. A test that
needs MariaDB (or PostgreSQL, for Airflow's metadata) and cannot reach it fails: it does
not skip. Helpers that are not fixtures live in `tests/support/`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctloop.features.view import FeatureView, load_view_file
from ctloop.store.features import FeatureStore
from tests.support.databases import mariadb_database
from tests.support.paths import FEATURES_DIR

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's tier, so a marker expression can pick tiers."""
    for item in items:
        parts = item.path.relative_to(TESTS).parts
        if parts and parts[0] in TIERS:
            item.add_marker(parts[0])


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """The caller's environment without any ctloop, Airflow, MLflow or BentoML setting, so a
    developer's exported settings cannot leak into a process the test starts."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "CTLOOP_", "MLFLOW_", "BENTOML_"))
        and k != "FEATURE_STORE_URL"
    }
    env["CTLOOP_DATA_DIR"] = str(tmp_path / "data")
    return env


@pytest.fixture(scope="session")
def view() -> FeatureView:
    """The shipped credit_score view, loaded once: tests copy it before changing it."""
    return load_view_file(FEATURES_DIR / "credit_score.yaml")


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh, uniquely named MariaDB database, dropped after the test."""
    with mariadb_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An embedded SQLite store in the test's own folder: the default with no server."""
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(params=["sqlite", "mariadb"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The same test on the embedded default and on MariaDB.

    `unit/conftest.py` narrows this to SQLite and the `*_mariadb` modules of `integration/`
    to MariaDB, so each backend's cases land in their tier under the same test id.
    """
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(store_url: str, view: FeatureView) -> Iterator[FeatureStore]:
    """A feature store with the view's tables, on the backend `store_url` names."""
    fs = FeatureStore(store_url, chunk_rows=1000, batch_rows=500)
    fs.init([view])
    yield fs
    fs.dispose()


SLOW_TEST_SECONDS = 30.0
_ELAPSED: dict[str, float] = {}


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Name each slow test as it ends (setup, call and teardown together), so a run a time
    limit cuts off (CI's 90 minutes) still shows where the time went: `--durations` prints
    only at the end of a run."""
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the controller names it, once
        return
    _ELAPSED[report.nodeid] = _ELAPSED.get(report.nodeid, 0.0) + report.duration
    if report.when != "teardown":
        return
    total = _ELAPSED.pop(report.nodeid)
    if total >= SLOW_TEST_SECONDS:
        sys.stderr.write(f"\n[{time.strftime('%H:%M:%S')}] {total:.0f}s {report.nodeid}\n")
