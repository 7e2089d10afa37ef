"""Run the real DAGs with `dag.test()` in one long-lived Airflow child process.

`make demo` (and any script that wants the DAGs without a scheduler) needs Airflow to run
several DAG runs in a row. Airflow reads its configuration when it is first imported and
its start-up costs tens of seconds, so the DAGs run in a child process whose environment
(AIRFLOW_HOME, SQLite or PostgreSQL metadata, the DAGs folder, the `feature_store`
connection) is set before it starts, and which serves one request per line on stdin:

    {"dag_id": "ct_credit_score", "conf": {...}, "result": "/path/run-1.json"}
    {"op": "retire_queued", "result": "/path/run-2.json"}

Each result names the run's state, every task's state and try number, the tasks' return
values, the asset events the run emitted, the asset-triggered DAGs now queued and the runs
it triggered (still queued).

`dag.test()` runs a whole DAG run in-process (the scheduler loop, tasks through the Task
SDK) but has no scheduler behind it: a run that a DAG triggers (the monitor triggering
`ct_<view>`) stays queued. The caller reads it from the result, runs it itself with the
same conf, and retires the queued copy with `retire_queued`, so the monitor's "CT run in
flight" check sees the truth.

This module never imports Airflow in the parent: `DagRunner` only spawns and talks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ctloop.errors import CtloopError


class DagRunner:
    """The parent side: start the child, run DAGs in it, read the outcomes."""

    def __init__(self, dags_folder: Path, workdir: Path, env: dict[str, str]) -> None:
        """Start the child at once, so it parses the DAGs while the caller goes on."""
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "airflow-dagrunner.log"
        self._log = self.log_path.open("w")
        self.runs = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ctloop.dev.dagrunner", str(dags_folder)],
            stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT,
            env=env, cwd=workdir, text=True,
        )  # fmt: skip

    def output(self, since: int = 0) -> str:
        """The child's log from byte `since` on."""
        self._log.flush()
        with self.log_path.open(errors="replace") as fh:
            fh.seek(since)
            return fh.read()

    def _request(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.runs += 1
        result = self.workdir / f"run-{self.runs}.json"
        start = self.log_path.stat().st_size
        if self.proc.stdin is None or self.proc.poll() is not None:
            raise CtloopError(f"the Airflow child is not running; see {self.log_path}")
        self.proc.stdin.write(json.dumps({**request, "result": str(result)}) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while not result.exists():
            if self.proc.poll() is not None:
                raise CtloopError(
                    f"the Airflow child exited with {self.proc.returncode}:\n"
                    f"{self.output()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise CtloopError(
                    f"{request} did not finish in {timeout:.0f}s; see {self.log_path}"
                )
            time.sleep(0.2)
        outcome = json.loads(result.read_text())
        outcome["log"] = self.output(start)
        return outcome

    def trigger(self, dag_id: str, conf: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        """Run one DAG run with this conf: state, task states, return values, queued runs."""
        return self._request({"dag_id": dag_id, "conf": conf}, timeout)

    def retire_queued(self) -> None:
        """Mark runs left queued by a trigger (and already run by the caller) as failed."""
        self._request({"op": "retire_queued"}, 60)

    def close(self) -> int:
        """End the child; its exit code."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


def airflow_env(
    home: Path, dags_folder: Path, base: dict[str, str] | None = None
) -> dict[str, str]:
    """An Airflow child environment with its own home and SQLite metadata (never MariaDB)."""
    env = {k: v for k, v in (base or os.environ).items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


# ---------------------------------------------------------------------------- the child


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def _child(dags_folder: str) -> None:  # pragma: no cover - runs in the Airflow child
    # (c) Airflow is imported in the child only: it reads its configuration on import, and
    # the parent side (DagRunner) must stay light to import.
    from airflow.utils.db import initdb  # (c) child process only

    initdb()  # what `airflow db migrate` does on an empty database
    from airflow.dag_processing.dagbag import DagBag  # (c) child process only
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel  # (c) child
    from airflow.models.dagrun import DagRun  # (c) child process only
    from airflow.models.xcom import XComModel  # (c) child process only
    from airflow.utils.session import create_session  # (c) child process only
    from airflow.utils.state import DagRunState  # (c) child process only

    bag = DagBag(dag_folder=dags_folder)
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    import ctloop.training.pipeline  # noqa: F401  (c) warm heavy imports before the first request

    print("dagrunner ready", flush=True)  # noqa: T201
    for line in sys.stdin:
        request = json.loads(line)
        target = Path(request["result"])
        if request.get("op") == "retire_queued":
            with create_session() as session:
                for dr in session.scalars(select(DagRun).where(DagRun.state == DagRunState.QUEUED)):
                    dr.state = DagRunState.FAILED
            result: dict[str, Any] = {}
        else:
            run = bag.dags[request["dag_id"]].test(run_conf=request["conf"])
            with create_session() as session:
                tasks = {
                    ti.task_id: {"state": _plain(ti.state), "try_number": ti.try_number}
                    for ti in run.get_task_instances(session=session)
                }
                xcoms = dict(
                    session.execute(
                        select(XComModel.task_id, XComModel.value).where(
                            XComModel.dag_id == run.dag_id,
                            XComModel.run_id == run.run_id,
                            XComModel.key == "return_value",
                        )
                    ).all()
                )
                events = [
                    {"uri": uri, "extra": extra}
                    for uri, extra in session.execute(
                        select(AssetModel.uri, AssetEvent.extra)
                        .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
                        .where(AssetEvent.source_run_id == run.run_id)
                    )
                ]
                queued = sorted(
                    [uri, dag_id]
                    for uri, dag_id in session.execute(
                        select(AssetModel.uri, AssetDagRunQueue.target_dag_id).join(
                            AssetModel, AssetModel.id == AssetDagRunQueue.asset_id
                        )
                    )
                )
                triggered = [
                    {"dag_id": dr.dag_id, "run_id": dr.run_id, "conf": dr.conf}
                    for dr in session.scalars(
                        select(DagRun).where(
                            DagRun.dag_id != run.dag_id, DagRun.state == DagRunState.QUEUED
                        )
                    )
                ]
            result = {"dag_id": run.dag_id, "run_id": run.run_id, "state": _plain(run.state),
                      "tasks": tasks, "xcom": xcoms, "triggered": triggered,
                      "asset_events": events, "queued": queued}  # fmt: skip
        part = target.with_suffix(".part")
        part.write_text(json.dumps(result, default=str))
        part.replace(target)


if __name__ == "__main__":  # pragma: no cover
    _child(sys.argv[1])
