"""The local stack driven from outside, as a person or a CI job would: its commands
(`python -m ctloop.dev.stack up|down|status`, what `make up` runs), the `ctloop` CLI, and
Airflow's REST API as the UI uses it. Shared by `tests/e2e/test_stack.py` (LocalExecutor)
and `tests/e2e/test_celery.py` (CeleryExecutor). Every wait has a deadline and fails with
the tail of the relevant log; `stack_up` always runs `down` and fails if a process is left.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ctloop.dev import stack
from ctloop.dev.launcher import tail
from ctloop.dev.stack.supervisor import Supervisor, kill_sessions, session_processes
from tests.support.paths import ROOT

VIEW = "credit_score"
CT_DAG, MONITOR_DAG = f"ct_{VIEW}", f"monitor_{VIEW}"
INGEST_DAG = f"ingest_{VIEW}"


def free_ports(n: int) -> list[int]:
    """n distinct free ports (held open together, so none repeats)."""
    with contextlib.ExitStack() as hold:
        socks = [hold.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def write_test_view(target_dir: Path, drop: Path | None = None, **training: Any) -> None:
    """A small copy of the view: short windows, labels on the day, tiny models, no cooldown.

    One gate is looser than in the real view, because this test is about the wiring of the
    stack, not about model quality: the model gate lets a candidate trail the champion by
    0.1 (a 400-row validation day is noisy). The data gate keeps the real thresholds: the
    drift retrain must get past them because the monitor measured the new `Gig_Worker`
    occupation (a quarter of the drifted customers), not because the test relaxed them.
    """
    data = yaml.safe_load((ROOT / "features" / f"{VIEW}.yaml").read_text())
    data["training"].update(
        window_days=10,
        drift_window_days=4,
        validation_days=1,
        label_delay_days=0,
        iterations=60,
        early_stopping_rounds=10,
    )
    data["training"].update(training)
    data["gates"]["data"].update(min_rows=1000, min_validation_rows=200)
    data["gates"]["model"].update(max_degradation=0.1)
    data["drift"].update(min_rows=300, min_labelled_rows=200, cooldown_hours=0)
    # a drop folder under the data folder (CTLOOP_DATA_DIR) instead of the synthetic stream
    # (or an absolute folder: what workers on several machines must share for this source)
    data["sources"] = [{"kind": "files", "name": "drop", "path": str(drop or f"drop/{VIEW}")}]
    target_dir.mkdir(parents=True, exist_ok=True)
    (target_dir / f"{VIEW}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


class LiveStack:
    """The stack as the test drives it: its commands, logs, and the Airflow REST API."""

    def __init__(self, env: dict[str, str], cwd: Path, ports: dict[str, int]) -> None:
        self.env, self.cwd, self.ports = env, cwd, ports
        self.state = Path(env["CTLOOP_DATA_DIR"]) / "stack"
        self.airflow = f"http://127.0.0.1:{ports['airflow']}"
        self.mlflow = f"http://127.0.0.1:{ports['mlflow']}"
        self.serving = f"http://127.0.0.1:{ports['serving']}"
        self.http = httpx.Client(timeout=30)
        self._token: str | None = None

    def command(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`python -m ctloop.dev.stack ...`: the command `make up/down/stack-status` runs."""
        return subprocess.run(
            [sys.executable, "-m", "ctloop.dev.stack", *args], cwd=self.cwd, env=self.env,
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def ctloop(self, *args: str) -> str:
        """The `ctloop` console script of this environment."""
        done = subprocess.run(
            [str(Path(sys.executable).parent / "ctloop"), *args], cwd=self.cwd, env=self.env,
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"ctloop {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def log(self, name: str, lines: int = 40) -> str:
        return f"--- {name}.log ---\n{tail(self.state / 'logs' / f'{name}.log', lines)}"

    def logs(self, *names: str) -> str:
        return "\n".join(self.log(n) for n in names)

    def pids(self) -> dict[str, int]:
        """Each running service's pid (also its session id), as `status --json` says."""
        done = self.command("status", "--json", timeout=120)
        assert done.returncode in (0, 1), f"stack status failed:\n{done.stdout}\n{done.stderr}"
        return {row["service"]: row["pid"] for row in json.loads(done.stdout) if row["running"]}

    def circusd(self) -> int | None:
        """The pid of the stack's circusd while it runs."""
        return Supervisor(self.state / "run", self.state / "logs" / "circusd.log", 30).daemon_pid()

    # ---- Airflow REST API, as the UI uses it
    def password(self) -> str:
        file = self.state / "airflow" / stack.PASSWORDS_FILE
        return json.loads(file.read_text())["admin"]

    def token(self) -> str:
        if self._token is None:
            r = self.http.post(f"{self.airflow}/auth/token",
                               json={"username": "admin", "password": self.password()})  # fmt: skip
            assert r.status_code == 201, f"/auth/token answered {r.status_code}: {r.text}"
            self._token = r.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token()}"}
        r = self.http.request(method, f"{self.airflow}/api/v2{path}", headers=headers, **kwargs)
        assert r.status_code < 300, f"{method} {path} answered {r.status_code}: {r.text[:500]}"
        return r.json()

    def run_path(self, dag_id: str, run_id: str) -> str:
        return f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """POST dagRuns as the UI's Trigger form does (no logical date, the form's conf)."""
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None,
                                                                 "conf": conf})  # fmt: skip
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def tasks(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        found = self.api("GET", f"{self.run_path(dag_id, run_id)}/taskInstances")
        return {t["task_id"]: t for t in found["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        path = f"{self.run_path(dag_id, run_id)}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.api("GET", path, params={"deserialize": "true"})["value"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, attempt: int = 1) -> str:
        """A task's log as the UI shows it (served by the api-server), one line per event."""
        path = f"{self.run_path(dag_id, run_id)}/taskInstances/{task_id}/logs/{attempt}"
        content = self.api("GET", path)["content"]
        lines = []
        for item in content:
            if isinstance(item, dict):
                lines.append(f"{item.get('level', '')} {item.get('event', '')}".strip())
            else:
                lines.append(str(item))
        return "\n".join(lines)

    def failure_report(self, dag_id: str, run_id: str) -> str:
        parts = []
        with contextlib.suppress(Exception):
            for task_id, info in self.tasks(dag_id, run_id).items():
                parts.append(f"{task_id}: {info['state']} (try {info['try_number']})")
                if info["state"] in ("failed", "up_for_retry", "upstream_failed"):
                    parts.append(self.task_log(dag_id, run_id, task_id,
                                               max(info["try_number"], 1))[-3000:])  # fmt: skip
        parts.append(self.logs("airflow-scheduler", "mlflow"))
        return "\n".join(parts)

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 420) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", self.run_path(dag_id, run_id))
            if run["state"] in ("success", "failed"):
                assert run["state"] == "success", (
                    f"{dag_id} run {run_id} failed:\n{self.failure_report(dag_id, run_id)}"
                )
                return run
            time.sleep(3)
        pytest.fail(f"{dag_id} run {run_id} not done after {timeout:.0f}s:\n"
                    f"{self.failure_report(dag_id, run_id)}")  # fmt: skip

    def wait_idle(self, dag_id: str, timeout: float = 420) -> None:
        """Until no run of the DAG is queued or running (e.g. the run unpausing creates)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = [r for r in self.runs(dag_id) if r["state"] in ("queued", "running")]
            if not busy:
                return
            time.sleep(3)
        pytest.fail(f"{dag_id} still has runs in flight after {timeout:.0f}s:\n"
                    f"{self.failure_report(dag_id, busy[0]['dag_run_id'])}")  # fmt: skip

    def wait_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Until the dag-processor has parsed the DAG and the API knows it."""
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {self.token()}"}
        while time.monotonic() < deadline:
            r = self.http.get(f"{self.airflow}/api/v2/dags/{dag_id}", headers=headers)
            if r.status_code == 200:
                return
            time.sleep(2)
        pytest.fail(f"{dag_id} unknown to Airflow after {timeout:.0f}s\n"
                    f"{self.log('airflow-dag-processor')}")  # fmt: skip

    def settle(self, dag_id: str, timeout: float = 420) -> None:
        """Until the scheduler has created the runs unpausing asks for, and they are done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            after = self.api("GET", f"/dags/{dag_id}")["next_dagrun_run_after"]
            if after and dt.datetime.fromisoformat(after) > dt.datetime.now(dt.UTC):
                break  # the latest schedule's run exists; the next one is in the future
            time.sleep(2)
        else:
            pytest.fail(f"the scheduler did not schedule {dag_id}\n{self.log('airflow-scheduler')}")
        self.wait_idle(dag_id, max(deadline - time.monotonic(), 30))

    def wait_http(self, url: str, check: Any, what: str, log: str, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                last = self.http.get(url, timeout=5)
                if check(last):
                    return last
            time.sleep(1)
        body = getattr(last, "text", last)
        pytest.fail(f"{what}: not after {timeout:.0f}s (last: {str(body)[:300]})\n{self.log(log)}")


def stack_env(tmp: Path, ports: dict[str, int], **settings: str) -> dict[str, str]:
    """This process's environment without ctloop/Airflow/MLflow/BentoML settings, plus a
    temp data folder, free ports, small servers and the settings given."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "CTLOOP_", "MLFLOW_", "BENTOML_"))
        and k != "FEATURE_STORE_URL"
    }
    env.update({
        "CTLOOP_DATA_DIR": str(tmp / "data"),
        "CTLOOP_STACK_AIRFLOW_PORT": str(ports["airflow"]),
        "CTLOOP_STACK_MLFLOW_PORT": str(ports["mlflow"]),
        "CTLOOP_STACK_SERVING_PORT": str(ports["serving"]),
        "CTLOOP_STACK_PROMETHEUS_PORT": str(ports["prometheus"]),
        "CTLOOP_STACK_AIRFLOW_WORKER_LOG_PORT": str(ports["worker_log"]),
        "CTLOOP_STACK_AIRFLOW_TRIGGER_LOG_PORT": str(ports["trigger_log"]),
        "CTLOOP_STACK_MLFLOW_WORKERS": "1",
        "CTLOOP_STACK_START_TIMEOUT_SECONDS": "420",
        "CTLOOP_SERVING_WORKERS": "1",
        "GIT_PYTHON_REFRESH": "quiet",
        **settings,
    })  # fmt: skip
    return env


def stack_ports() -> dict[str, int]:
    names = ["airflow", "mlflow", "serving", "prometheus", "worker_log", "trigger_log",
             "celery_log"]  # fmt: skip
    return dict(zip(names, free_ports(len(names)), strict=True))


@contextlib.contextmanager
def stack_up(env: dict[str, str], cwd: Path) -> Iterator[dict[str, Any]]:
    """`python -m ctloop.dev.stack up` (what `make up` runs); always `down` afterwards, and
    fail if any process of the stack or a pid file is left."""
    live_stack = LiveStack(env, cwd, {
        "airflow": int(env["CTLOOP_STACK_AIRFLOW_PORT"]),
        "mlflow": int(env["CTLOOP_STACK_MLFLOW_PORT"]),
        "serving": int(env["CTLOOP_STACK_SERVING_PORT"]),
    })  # fmt: skip
    started = time.monotonic()
    up = live_stack.command("up")
    up_seconds = time.monotonic() - started
    pids = live_stack.pids()
    daemon = live_stack.circusd()
    try:
        assert up.returncode == 0, f"stack up failed:\n{up.stdout}\n{up.stderr}"
        assert daemon is not None, "no circusd after `up`"
        yield {"stack": live_stack, "up": up, "up_seconds": up_seconds, "pids": pids}
    finally:
        pids = live_stack.pids() or pids
        down = live_stack.command("down", timeout=240)
        left = {name: [p.pid for p in session_processes(pid)] for name, pid in pids.items()}
        left = {name: found for name, found in left.items() if found}
        if left:  # never leave processes behind, even when `down` is broken
            kill_sessions({name: pids[name] for name in left})
        daemon_left = live_stack.circusd()
        if daemon_left is not None:
            os.kill(daemon_left, signal.SIGKILL)
        live_stack.http.close()
        assert down.returncode == 0, f"stack down failed:\n{down.stdout}\n{down.stderr}"
        assert not left, f"processes left after `down`: {left}\n{down.stderr}"
        assert daemon_left is None, "circusd still runs after `down`"
        assert not (live_stack.state / "run" / "circusd.pid").exists(), "circusd's pid file left"
