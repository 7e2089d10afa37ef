"""How ctloop's command lines end: one rule shared by `ctloop` and `python -m ctloop.dev.stack`.

A `CtloopError` is the user's to fix (a setting, a missing file, a port in use), so it
prints one line and exits 2 without a traceback; a programming error still surfaces as an
ordinary traceback (exit 1). Both pass through `redact()`: libraries quote connection URLs,
passwords included, in their messages, and a terminal's scrollback is not a secret store.
It lives beside `errors.py` rather than in `cli.py` so the developer tools can end the
same way without importing the product's CLI.
"""

from __future__ import annotations

import sys
import traceback

import click

from ctloop.errors import CtloopError
from ctloop.redact import redact


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
        click.echo(f"error: {redact(str(exc))}", err=True)
        sys.exit(2)
    except Exception as exc:  # a bug: show where, without the secrets it may quote
        click.echo(redact("".join(traceback.format_exception(exc))).rstrip(), err=True)
        sys.exit(1)
