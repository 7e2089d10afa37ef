"""`ctloop`: every pipeline step by hand, calling the same library functions as the DAGs.

User errors (`CtloopError`) print one clear message and exit with status 2; anything else
is a bug and keeps its traceback. The commands live in `data` (getting data in and
looking at it), `ingest` (a run of a view's sources) and `loop` (training, promotion,
monitoring, the demo); importing them registers them on the group in `app`.
"""

from __future__ import annotations

from ctloop.cli import airflowcli, data, ingest, loop  # noqa: F401  registers the commands
from ctloop.cli.app import cli
from ctloop.clirunner import run_command

__all__ = ["cli", "main"]


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    run_command(cli)
