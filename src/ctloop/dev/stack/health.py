"""Is the stack healthy: each service's health check, the ports it needs, the wait at start.

A service counts as up when its own check says so: Airflow's /api/v2/monitor/health for
each Airflow component, a ping over the broker for each Celery worker (Airflow's health
does not list them), MLflow's /health, BentoML's /livez (not /readyz: no champion may
exist yet). `up` refuses a port something else already answers on before it starts
anything, and waits for every service with one deadline, naming the one that is not
healthy (or that exited) with the tail of its log.
"""

from __future__ import annotations

import functools
import socket
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

import httpx

from ctloop.dev.launcher import port_in_use, tail
from ctloop.dev.stack.config import Stack
from ctloop.dev.stack.services import ServiceSpec
from ctloop.dev.stack.supervisor import Supervisor
from ctloop.errors import CtloopError

if TYPE_CHECKING:
    from celery import Celery


def http_get(url: str, timeout: float = 3.0) -> tuple[int, Any]:
    """(status, JSON body or text) of a GET; (0, reason) when nothing answers."""
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return 0, str(exc)
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


@functools.cache
def _celery(broker_url: str) -> Celery:
    """A bare Celery client on the broker: enough to ping workers, no Airflow config; a
    broker that is down fails the ping at once instead of being retried."""
    from celery import Celery  # (c) only Celery stacks need it

    app = Celery(broker=broker_url)
    app.conf.update(broker_connection_retry=False, broker_connection_max_retries=1,
                    broker_connection_timeout=2)  # fmt: skip
    return app


def ping_worker(broker_url: str, name: str, timeout: float = 1.0) -> bool:
    """Whether the Celery worker `name` of this machine (`--celery-hostname name@host`)
    answers a ping over the broker: it is connected and takes work. Addressed to it alone,
    so the first reply ends the wait."""
    from kombu.exceptions import OperationalError  # (c) as above

    node = f"{name}@{socket.gethostname()}"
    try:
        replies = _celery(broker_url).control.ping(destination=[node], timeout=timeout, limit=1)
    except (OperationalError, OSError):  # a broker that is down: `up` names it at start
        return False
    return any(node in reply for reply in replies)


def check_broker(url: str) -> None:
    """Refuse a Celery stack whose broker does not answer, before anything starts."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        raise CtloopError(
            f"CTLOOP_STACK_CELERY_BROKER_URL: nothing answers at {host}:{port} ({exc}); start "
            "Redis (Debian: redis-server) or point the setting at a running broker"
        ) from exc


def check_health(stack: Stack, spec: ServiceSpec) -> tuple[bool, str]:
    """Whether one service is healthy now, and what it said."""
    if spec.kind == "airflow-worker":
        ok = ping_worker(stack.config.celery_broker_url, spec.name)
        return ok, "answers pings over the broker" if ok else "does not answer a broker ping"
    if spec.airflow_component is not None:
        status, body = http_get(f"{stack.airflow_url}/api/v2/monitor/health")
        if status != 200 or not isinstance(body, dict):
            return False, f"Airflow health answered {status or 'nothing'}"
        part = body.get(spec.airflow_component) or {}
        state = str(part.get("status") or "unknown")
        return state == "healthy", f"{spec.airflow_component}: {state}"
    if spec.health_path is None:  # pragma: no cover - every service has one of the two
        return True, "no health check"
    status, _ = http_get(f"{stack.local_url(spec)}{spec.health_path}")
    return status == 200, f"{spec.health_path} answered {status or 'nothing'}"


def check_ports(stack: Stack, starting: list[ServiceSpec]) -> None:
    """Refuse to start on a port something else already answers on, naming the setting."""
    wanted: list[tuple[str, int, str]] = []
    for spec in starting:
        if spec.port_setting:
            wanted.append((spec.name, int(stack.config.port(spec) or 0), spec.port_setting))
        if spec.name == "airflow-scheduler" and stack.config.executor == "local":
            wanted.append((spec.name, stack.config.airflow_worker_log_port,
                           "airflow_worker_log_port"))  # fmt: skip
        if spec.kind == "airflow-worker":
            wanted.append((spec.name, stack.worker_log_port(spec), "celery_worker_log_port"))
        if spec.name == "airflow-triggerer":
            wanted.append((spec.name, stack.config.airflow_trigger_log_port,
                           "airflow_trigger_log_port"))  # fmt: skip
    if any(spec.kind == "airflow-worker" for spec in starting):
        check_broker(stack.config.celery_broker_url)
    ports = [port for _, port, _ in wanted]
    if len(set(ports)) != len(ports):
        raise CtloopError(f"the stack's ports collide: {wanted}")
    for name, port, setting in wanted:
        if port_in_use(stack.config.host, port):
            raise CtloopError(
                f"port {port} for {name} is already in use by another process; stop it or "
                f"set CTLOOP_STACK_{setting.upper()} to a free port"
            )


def wait_healthy(stack: Stack, supervisor: Supervisor, started: dict[str, int],
                 began: float) -> None:  # fmt: skip
    """Wait until every service started answers healthy; name the one that does not.

    `started` maps each service to the pid it started with: a service circusd had to
    start again (another pid, or none) exited during start-up, and that is reported at
    once with its log rather than after the whole timeout.
    """
    deadline = began + stack.config.start_timeout_seconds
    waiting = [spec for spec in stack.services() if spec.name in started]
    last: dict[str, str] = {}
    while waiting:
        running = supervisor.running()
        for spec in list(waiting):
            if running.get(spec.name) != started[spec.name]:
                raise CtloopError(
                    f"{spec.title} ({spec.name}) exited during start-up; "
                    f"log {stack.log_path(spec.name)}:\n{tail(stack.log_path(spec.name))}"
                )
            ok, said = check_health(stack, spec)
            last[spec.name] = said
            if ok:
                waiting.remove(spec)
        if not waiting:
            return
        if time.monotonic() > deadline:
            spec = waiting[0]
            raise CtloopError(
                f"{spec.title} ({spec.name}) was not healthy after "
                f"{stack.config.start_timeout_seconds:.0f}s (last check: {last.get(spec.name)}); "
                f"log {stack.log_path(spec.name)}:\n{tail(stack.log_path(spec.name))}"
            )
        time.sleep(1.0)
