"""`python -m ctloop.dev.stack up | down | status`: what `make up`, `make down` and
`make stack-status` run. Progress goes to stderr, the summary and status to stdout."""

from __future__ import annotations

import json
import sys

import click

from ctloop.clirunner import run_command
from ctloop.dev.stack.commands import down, status, summary, up
from ctloop.dev.stack.config import resolve


def _echo_err(line: str) -> None:
    click.echo(line, err=True)


@click.group("stack")
def stack_cli() -> None:
    """The local stack: Airflow, MLflow server and BentoML service as processes."""


@stack_cli.command("up")
def up_command() -> None:
    """Start every service that is not running, wait until healthy, print URLs and login."""
    stack = resolve()
    up(stack, _echo_err)
    click.echo(summary(stack))


@stack_cli.command("down")
def down_command() -> None:
    """Stop every process of the stack (each service and what it started), then circusd."""
    down(resolve(), _echo_err)


@stack_cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per service.")
def status_command(as_json: bool) -> None:
    """Each service: running, pid, health, URL, log. Exit 1 unless all run and are healthy
    (an optional service left out, such as Prometheus when not installed, does not count)."""
    stack = resolve()
    rows = status(stack)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(f"{'service':<23}{'state':<10}{'pid':>8}  {'health':<34}url")
        for row in rows:
            state = ("off" if row["left_out"] else "healthy" if row["healthy"]
                     else "running" if row["running"] else "stopped")  # fmt: skip
            click.echo(f"{row['service']:<23}{state:<10}{row['pid'] or '-':>8}  "
                       f"{row['health'][:33]:<34}{row['url'] or ''}")  # fmt: skip
        click.echo(f"logs: {stack.log_dir}")
    if not all(row["healthy"] for row in rows if not row["left_out"]):
        sys.exit(1)


def main() -> None:
    """`python -m ctloop.dev.stack`: user errors print one line and exit with status 2."""
    run_command(stack_cli)
