"""How ctloop's command lines end: one rule shared by `ctloop` and `python -m ctloop.dev.stack`.

A `CtloopError` is the user's to fix (a setting, a missing file, a port in use), so it
prints one line and exits 2 without a traceback; a programming error still surfaces as an
ordinary traceback. It lives beside `errors.py` rather than in `cli.py` so the developer
tools can end the same way without importing the product's CLI.
"""

from __future__ import annotations

import sys

import click

from ctloop.errors import CtloopError


def run_command(command: click.Command) -> None:
    """Run a click command as ctloop's entry points do: user errors become one line on
    stderr and exit status 2, Ctrl-C exits 130, click's own usage errors keep their code."""
    try:
        command.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CtloopError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
