"""The Airflow connections the stack's DAGs use, written into Airflow's metadata database.

Defined only in the environment (`AIRFLOW_CONN_*`), a connection works but is invisible
under Admin -> Connections, where Airflow users look for it and press Test. So `up`
imports the feature store's connection and every SQL source's (the views' `sources:`
name their connection ids; the values come from the environment or `.env`, as
`AIRFLOW_CONN_<ID>`) with `airflow connections import --overwrite`: re-running `up`
refreshes them from the same values, so the two never disagree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from ctloop.dev.launcher import tail
from ctloop.dev.stack.config import Stack
from ctloop.dev.stack.databases import Say
from ctloop.dev.stack.services import service
from ctloop.errors import CtloopError
from ctloop.features.spec import SqlSource
from ctloop.features.view import list_views, load_view

FEATURE_STORE = "feature_store"


def _value(text: str) -> Any:
    """An `AIRFLOW_CONN_*` value as the import file takes it: JSON form or a URI."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return stripped
    value = json.loads(stripped)
    if isinstance(value.get("extra"), dict):  # the import file takes a dict as extra_dejson
        value["extra_dejson"] = value.pop("extra")
    return value


def env_var(conn_id: str) -> str:
    """The variable Airflow reads a connection from (`AIRFLOW_CONN_<ID upper case>`)."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def wanted(stack: Stack) -> tuple[dict[str, Any], list[str]]:
    """The connections to register (id -> value), and the SQL sources' connection ids
    that have no value in the environment (the user adds those in the UI)."""
    airflow_env = stack.managed_env(service("airflow-scheduler"))
    found: dict[str, Any] = {FEATURE_STORE: _value(airflow_env["AIRFLOW_CONN_FEATURE_STORE"])}
    missing: list[str] = []
    for name in list_views(stack.features_dir):
        for source in load_view(name, stack.features_dir).sources:
            if not isinstance(source, SqlSource) or source.conn_id in found:
                continue
            value = stack.base_env.get(env_var(source.conn_id))
            if value:
                found[source.conn_id] = _value(value)
            elif source.conn_id not in missing:
                missing.append(source.conn_id)
    return found, missing


def register_connections(stack: Stack, say: Say) -> list[str]:
    """Write the connections into Airflow's metadata (after `airflow db migrate`); the ids
    written. The file holding them is the state folder's, mode 0600, removed at once."""
    connections, missing = wanted(stack)
    path = stack.state_dir / "connections.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(connections, fh)
    log_path = stack.log_path("airflow-connections")
    try:
        with log_path.open("ab") as log:
            done = subprocess.run(
                [sys.executable, "-m", "airflow", "connections", "import", str(path),
                 "--overwrite"],
                cwd=stack.root, env=stack.env(service("airflow-scheduler")),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                timeout=stack.config.start_timeout_seconds, check=False,
            )  # fmt: skip
    finally:
        path.unlink(missing_ok=True)
    if done.returncode != 0:
        raise CtloopError(
            f"`airflow connections import` failed (exit {done.returncode}); see {log_path}:\n"
            f"{tail(log_path)}"
        )
    say(f"Airflow connections in the metadata database: {', '.join(connections)}")
    for conn_id in missing:
        say(f"connection '{conn_id}' (a SQL source) is not set: add {env_var(conn_id)} to "
            ".env, or create it under Admin -> Connections")  # fmt: skip
    return list(connections)
