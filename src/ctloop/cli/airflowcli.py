"""`ctloop airflow ARGS...`: Airflow's own CLI, pointed at the local stack's Airflow.

`airflow` is not on PATH in the project's environment, and under plain `uv run` without
the stack's `AIRFLOW_HOME` it reads an empty home, prints "Database migration required"
and exits 0, so a README line such as `airflow dags trigger ...` silently did nothing.
This wrapper gives Airflow's CLI exactly the environment `make up` gives the scheduler
(`AIRFLOW_HOME`, metadata database, DAG folder, the `feature_store` connection, ctloop's
settings), so every Airflow command in the README works as written.
"""

from __future__ import annotations

import os
import sys

import click

from ctloop.cli.app import cli
from ctloop.errors import CtloopError


@cli.command(
    "airflow",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
    short_help="Airflow's CLI against the local stack (make up).",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def airflow_command(args: tuple[str, ...]) -> None:
    """Run Airflow's CLI against the local stack (`make up`), e.g.
    `ctloop airflow dags trigger ct_credit_score --conf '{"reason": "..."}'`.

    Every argument goes to `airflow` unchanged (`ctloop airflow --help` is Airflow's help
    once the stack is set up; before, this text).
    The stack's settings come from the environment and `.env`, as for `make up`.
    """
    from ctloop.dev.stack.config import resolve  # (b) light CLI start
    from ctloop.dev.stack.services import service  # (b) same

    stack = resolve()
    migrated = stack.log_path("airflow-db-migrate")
    if not migrated.is_file() and (not args or args[0] in ("-h", "--help")):
        # help must work on a fresh checkout too: this command's own, and where Airflow's is
        click.echo(click.get_current_context().get_help())
        click.echo(
            "\nAirflow's own help (`ctloop airflow --help`) needs the stack: `make up` first."
        )
        return
    if not migrated.is_file():
        raise CtloopError(
            f"the local stack's Airflow has never been set up ({migrated} is missing): run "
            "`make up` first, with the same CTLOOP_DATA_DIR / CTLOOP_STACK_STATE_DIR"
        )
    env = stack.env(service("airflow-scheduler"))
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(stack.root)
    os.execve(sys.executable, [sys.executable, "-m", "airflow", *args], env)
