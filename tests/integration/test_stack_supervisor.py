"""The local stack's supervision and its PostgreSQL metadata database, without the stack.

`make down`'s guarantee (circusd stops every service and all it started, escalating to
SIGKILL), a service that dies while starting named with its log, and `make up` creating
Airflow's metadata database on PostgreSQL once. Real processes and a real PostgreSQL; the
whole stack running is `tests/e2e/test_stack.py`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from ctloop.dev import stack
from ctloop.dev.launcher import tail
from ctloop.dev.stack import commands as stack_commands
from ctloop.dev.stack.health import wait_healthy
from ctloop.dev.stack.supervisor import Supervisor, Watcher, session_processes
from ctloop.errors import CtloopError
from tests.support.databases import postgres_database


@pytest.mark.postgres
def test_up_creates_a_missing_postgres_metadata_database_once() -> None:
    with postgres_database("ctloop_stack_probe") as url:
        assert stack.create_postgres_database_if_missing(url) is True
        assert stack.create_postgres_database_if_missing(url) is False
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() in url
        engine.dispose()
    with pytest.raises(CtloopError, match="unreachable"):
        stack.create_postgres_database_if_missing("postgresql+psycopg2://u:pw@127.0.0.1:1/x")


STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops it
child = "import os, time; os.setpgid(0, 0); time.sleep(600)"  # a group of its own
subprocess.Popen([sys.executable, "-c", child])
print("stubborn up", flush=True)
time.sleep(600)
"""


def python_watcher(tmp: Path, name: str, code: str) -> Watcher:
    """A service circusd runs: this venv's Python running `code`, logging to tmp/logs."""
    env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}
    return Watcher(name, [sys.executable, "-c", code], env, tmp, tmp / "logs" / f"{name}.log")


@pytest.mark.parametrize("depth", ["short", "deep"])
def test_circusd_stops_every_service_and_what_it_started(tmp_path: Path, depth: str) -> None:
    """`down`'s guarantee: SIGTERM, SIGKILL after the stop timeout, for the service and
    everything in its session (also a child in a process group of its own), then circusd.
    A state folder too deep for a Unix socket's path gets its sockets in a private
    temporary folder named from it (the same for every later command)."""
    state = tmp_path / ("state-" + "d" * 100 if depth == "deep" else "state")
    circus = Supervisor(state / "run", tmp_path / "logs" / "circusd.log", stop_timeout=3)
    if depth == "deep":
        again = Supervisor(state / "run", tmp_path / "logs" / "circusd.log", stop_timeout=3)
        assert circus.socket_dir != state / "run" and again.endpoint == circus.endpoint
        assert len(circus.endpoint) < 100
    daemon = circus.start_daemon()
    assert circus.socket_dir.stat().st_mode & 0o777 == 0o700
    try:
        polite = circus.start(python_watcher(tmp_path, "polite", "import time; time.sleep(600)"))
        stubborn = circus.start(python_watcher(tmp_path, "stubborn", STUBBORN))
        assert circus.running() == {"polite": polite, "stubborn": stubborn}
        assert circus.start_daemon() == daemon  # one daemon per state folder
        deadline = time.monotonic() + 30
        while len(session_processes(stubborn)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(session_processes(stubborn)) == 2, tail(tmp_path / "logs" / "stubborn.log")
        assert circus.command("polite") == [sys.executable, "-c", "import time; time.sleep(600)"]
        circus.quit()
        assert circus.daemon_pid() is None and not circus.pidfile.exists()
        assert not session_processes(polite) and not session_processes(stubborn)
        assert "stubborn up" in (tmp_path / "logs" / "stubborn.log").read_text()
    finally:
        with contextlib.suppress(CtloopError):
            circus.quit()


def test_a_service_that_dies_while_starting_is_named_with_its_log(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    resolved = stack.resolve(clean_env, cwd=tmp_path)
    circus = stack_commands.supervisor(resolved)
    circus.start_daemon()
    try:
        resolved.log_dir.mkdir(parents=True, exist_ok=True)
        crash = "import time; time.sleep(0.5); print('boom: no model store', flush=True); exit(3)"
        watcher = python_watcher(tmp_path, "serving", crash)
        watcher = Watcher(watcher.name, watcher.command, watcher.env, tmp_path,
                          resolved.log_path("serving"))  # fmt: skip
        pid = circus.start(watcher)
        with pytest.raises(CtloopError, match="exited during start-up") as err:
            wait_healthy(resolved, circus, {"serving": pid}, time.monotonic())
        assert "BentoML prediction service (serving)" in str(err.value)
        assert "boom: no model store" in str(err.value)  # the log's tail says why
    finally:
        circus.quit()
    assert not session_processes(pid)
