"""Airflow for the tests: a child process with an environment of its own.

Airflow reads its configuration when it is first imported, so everything that imports
Airflow runs in a child whose environment is set before it starts: its own AIRFLOW_HOME
and SQLite metadata under the test's folder (never MariaDB, which Airflow does not support
for its metadata) and the DAGs folder of this checkout. The test process only reads the
outcomes. Shared by the DAG, any-task and faults tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ctloop.dev.dagrunner import DagRunner
from ctloop.errors import CtloopError
from tests.support.paths import DAGS_DIR, FEATURES_DIR

RUN_TIMEOUT_S = 420


def airflow_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A child environment with nothing inherited from Airflow, ctloop or MLflow settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "CTLOOP_", "MLFLOW_")) and key != "FEATURE_STORE_URL"
    }
    home = tmp / "airflow"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "CTLOOP_DATA_DIR": str(tmp / "data"),
            "CTLOOP_FEATURES_DIR": str(FEATURES_DIR),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_python(script: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
    """Run a Python script in a child process; its output is the failure message if it fails."""
    __tracebackhide__ = True  # keep the environment out of failure reports
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env, cwd=cwd, timeout=300, capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = f"{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    assert done.returncode == 0, f"child exited with {done.returncode}:\n{output}"


class AirflowProcess(DagRunner):
    """`ctloop.dev.dagrunner` (what `make demo` uses) as the tests drive it: one long-lived
    Airflow child that runs each DAG run with `dag.test()`; failures fail the test."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        """Start the child on this checkout's DAGs; it loads Airflow while the test goes on."""
        super().__init__(DAGS_DIR, tmp, env)

    def trigger(self, dag_id: str, conf: dict[str, Any], timeout: float = RUN_TIMEOUT_S) -> dict:
        """Run the DAG to its end; a run the child cannot finish fails the test."""
        try:
            return super().trigger(dag_id, conf, timeout)
        except CtloopError as exc:
            pytest.fail(str(exc))

    def close(self) -> int:
        """Stop the child; it must exit cleanly."""
        code = super().close()
        assert code == 0, f"the Airflow process exited with {code}:\n{self.output()[-6000:]}"
        return code
