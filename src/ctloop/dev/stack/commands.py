"""`up`, `down` and `status`: the stack's three verbs, put together from its parts.

`up` prepares the databases, starts circusd if needed, hands it each service that is not
running (Airflow's components only after `airflow db migrate`), waits for health and,
if that fails, stops again what it started. `down` has circusd stop everything and
quit. `status` asks circusd what runs and each service whether it is healthy. One
`up`/`down` at a time per state folder (a file lock), so two `make up` never race.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from ctloop.dev.stack.config import Stack
from ctloop.dev.stack.connections import register_connections
from ctloop.dev.stack.databases import Say, migrate_airflow, prepare_stores
from ctloop.dev.stack.health import check_health, check_ports, wait_healthy
from ctloop.dev.stack.prometheus import render_config
from ctloop.dev.stack.services import ServiceSpec, service
from ctloop.dev.stack.supervisor import Supervisor, Watcher, kill_sessions
from ctloop.dev.stack.urls import safe_url
from ctloop.errors import CtloopError

logger = logging.getLogger(__name__)


def supervisor(stack: Stack) -> Supervisor:
    """The circusd of this stack's state folder."""
    return Supervisor(stack.run_dir, stack.log_path("circusd"), stack.config.stop_timeout_seconds)


@contextlib.contextmanager
def _locked(stack: Stack) -> Iterator[None]:
    """One `up`/`down` at a time per state folder (two `make up` must not race)."""
    stack.state_dir.mkdir(parents=True, exist_ok=True)
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


def up(stack: Stack, say: Say) -> dict[str, int]:
    """Start what is not running, wait for health; every service's pid.

    Services already running are left alone, so `up` twice starts nothing twice. If a
    service does not become healthy, what this call started is stopped again and the
    error names the service and the tail of its log.
    """
    with _locked(stack):
        for folder in (stack.log_dir, stack.airflow_home, stack.artifacts):
            folder.mkdir(parents=True, exist_ok=True)
        circus = supervisor(stack)
        already = circus.running()
        ours = {spec.name: spec for spec in stack.services()}
        for name, pid in already.items():
            say(f"{name}: already running (pid {pid})")
            spec = ours.get(name)
            if spec is None:
                say(f"{name}: not part of this configuration (CTLOOP_STACK_EXECUTOR or "
                    "CTLOOP_STACK_CELERY_WORKERS changed); `make down` then `make up` to "
                    "apply it")  # fmt: skip
            elif circus.command(name) != stack.command(spec) or _executor_changed(
                circus.env(name), stack.env(spec), spec
            ):
                say(f"{name}: started with another configuration "
                    f"({' '.join(circus.command(name))}); `make down` then `make up` to "
                    "apply the current one")  # fmt: skip
        for spec in stack.services():
            why = stack.left_out(spec)
            if why and spec.name not in already:
                say(f"{spec.name}: not started: {why}")
        starting = [spec for spec in stack.wanted() if spec.name not in already]
        if not starting:
            return already
        check_ports(stack, starting)
        prepare_stores(stack, say)
        began = time.monotonic()
        started: dict[str, int] = {}
        first_airflow = next((s for s in starting if s.kind == "airflow"), None)
        circus.start_daemon()
        try:
            for spec in starting:
                if spec is first_airflow:
                    migrate_airflow(stack, say)  # before the first Airflow component
                    register_connections(stack, say)  # shown under Admin -> Connections
                _prepare(stack, spec)
                watcher = Watcher(spec.name, stack.command(spec), stack.env(spec),
                                  stack.cwd(spec), stack.log_path(spec.name))  # fmt: skip
                started[spec.name] = circus.start(watcher)
                say(f"{spec.name}: started (pid {started[spec.name]}), "
                    f"log {watcher.log}")  # fmt: skip
            say(f"waiting for health (at most {stack.config.start_timeout_seconds:.0f}s) ...")
            wait_healthy(stack, circus, started, began)
        except BaseException:
            _undo(circus, started)
            raise
        say(f"all healthy in {time.monotonic() - began:.0f}s")
        return {**already, **started}


def _executor_changed(running: dict[str, str], wanted: dict[str, str], spec: ServiceSpec) -> bool:
    """Whether a running Airflow component has another executor than this configuration
    asks for (switching `CTLOOP_STACK_EXECUTOR` changes no command line)."""
    key = "AIRFLOW__CORE__EXECUTOR"
    if not spec.kind.startswith("airflow") or key not in running:
        return False
    return running[key] != wanted.get(key)


def _prepare(stack: Stack, spec: ServiceSpec) -> None:
    """What a service needs on disk before it starts (Prometheus: its configuration,
    aimed at this stack's prediction service)."""
    if spec.name == "prometheus":
        serving = str(stack.local_url(service("serving"))).split("//", 1)[1]
        render_config(stack.root, serving, stack.prometheus_dir)
    if spec.kind == "airflow-worker":
        (stack.worker_dir(spec) / "data").mkdir(parents=True, exist_ok=True)


def _undo(circus: Supervisor, started: dict[str, int]) -> None:
    """Stop what a failed `up` started; the error the user sees stays the original one."""
    try:
        circus.remove(list(started))
        if not circus.watchers():
            circus.quit()
    except CtloopError as exc:  # circusd itself is gone: its services' sessions are not
        logger.warning("circusd could not stop what `up` started: %s", exc)
    kill_sessions(started)  # a service's pid is its session id


def down(stack: Stack, say: Say) -> list[str]:
    """Stop every service of the stack (each with what it started), then circusd."""
    with _locked(stack):
        circus = supervisor(stack)
        if circus.daemon_pid() is None:
            say("nothing of the stack is running")
            return []
        running = circus.running()
        ordered = [s.name for s in reversed(stack.services()) if s.name in running]
        say(f"stopping {', '.join(ordered) or 'circusd'} ...")
        killed = circus.quit()
        if killed:
            say(f"had to SIGKILL what was left of {', '.join(killed)}")
        return ordered


def status(stack: Stack) -> list[dict[str, Any]]:
    """One row per service: running, pid, URL, health, log; an optional service left out
    of this stack (`left_out`) says why instead of counting as unhealthy."""
    running = supervisor(stack).running()
    rows = []
    for spec in stack.services():
        pid = running.get(spec.name)
        why = stack.left_out(spec) if pid is None else None
        if why:
            ok, said = None, f"left out: {why}"
        else:
            ok, said = check_health(stack, spec) if pid else (False, "not running")
        rows.append({
            "service": spec.name, "running": pid is not None, "pid": pid, "healthy": ok,
            "health": said, "url": stack.local_url(spec), "log": str(stack.log_path(spec.name)),
            "left_out": why is not None,
        })  # fmt: skip
    return rows


def airflow_login(stack: Stack) -> dict[str, str]:
    """The SimpleAuthManager users and the passwords Airflow generated for them."""
    try:
        return dict(json.loads(stack.passwords_file.read_text()))
    except (OSError, ValueError):
        return {}


def _executor_line(stack: Stack) -> str:
    """Who runs the tasks: the scheduler itself, or Celery workers (how many, broker, where)."""
    if stack.config.executor == "local":
        return "  Airflow executor       LocalExecutor (the scheduler runs the tasks)"
    return (f"  Airflow executor       CeleryExecutor: {stack.config.celery_workers} workers on "
            f"{safe_url(stack.config.celery_broker_url)}, each in "
            f"{stack.state_dir / 'workers'}/<worker>")  # fmt: skip


def summary(stack: Stack) -> str:
    """What a person needs after `make up`: URLs, ports, login, logs."""
    login = airflow_login(stack)
    users = ", ".join(f"{u} / {p}" for u, p in login.items()) or (
        f"(not generated yet: see {stack.passwords_file})"
    )
    circus = supervisor(stack)
    lines = [
        "",
        "ctloop local stack",
        f"  Airflow UI + REST API  {stack.airflow_url}    login {users}",
        f"  MLflow UI + tracking   {stack.mlflow_url}",
        f"  Prediction service     {stack.serving_url}    (OpenAPI at /, /readyz 503 "
        "until a champion exists)",
        f"  Prometheus             {stack.local_url(service('prometheus'))}    (alerts at "
        "/alerts, the service's target at /targets)"
        if stack.left_out(service("prometheus")) is None
        else f"  Prometheus             not started: {stack.left_out(service('prometheus'))}",
        "",
        f"  feature store          {safe_url(stack.store_url)}",
        f"  MLflow backend         {safe_url(stack.mlflow_backend)}, artifacts {stack.artifacts}",
        f"  Airflow metadata       {safe_url(stack.airflow_db)}",
        _executor_line(stack),
        f"  Airflow password file  {stack.passwords_file}",
        f"  admin token            {stack.state_dir / 'secrets.json'} (admin_token)",
        f"  logs                   {stack.log_dir}/*.log, task logs in "
        f"{stack.airflow_home / 'logs'}",
        f"  supervisor             circusd, circusctl --endpoint {circus.endpoint} status",
        f"  CLI against the stack  export MLFLOW_TRACKING_URI={stack.mlflow_url}",
        "  stop with `make down`",
    ]
    return "\n".join(lines)
