"""The `ctloop` command group and what its commands share: view and date arguments,
the store of the settings, JSON output.

Commands import the library inside their bodies: `ctloop --help` and `ctloop status`
must not pay for MLflow, CatBoost and Airflow, which only training and the demo use.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from ctloop.errors import CtloopError
from ctloop.features.view import FeatureView, load_view
from ctloop.redact import RedactingFilter, redact
from ctloop.settings import get_settings

if TYPE_CHECKING:
    from ctloop.store.features import FeatureStore

log = logging.getLogger("ctloop")


def view_named(name: str | None) -> FeatureView:
    """The named view, or the settings' default view (CTLOOP_DEFAULT_VIEW)."""
    if name is None:
        name = get_settings().default_view
    return load_view(name)


def settings_store() -> FeatureStore:
    """The feature store of the settings (FEATURE_STORE_URL, else the embedded file)."""
    from ctloop.store.features import FeatureStore  # (b) light CLI start

    return FeatureStore.from_settings()


def parse_date(_ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    """Click callback: a YYYY-MM-DD option, with an error naming the option."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"'{value}' is not a date (YYYY-MM-DD)", param=param) from exc


def parse_datetime(
    _ctx: click.Context, param: click.Parameter, value: str | None
) -> dt.datetime | None:
    """Click callback: an ISO 8601 date or time option as naive UTC (the clock of the
    store and the prediction log), with an error naming the option. A time with an offset
    is converted, so `--since 2026-02-10T08:00+02:00` means 06:00 UTC."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"'{value}' is not a date or time (ISO 8601)", param=param
        ) from exc
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


ISO_TIME = "ISO-TIME"  # the metavar of the time options, whose help names the format


view_argument = click.argument("view", required=False, metavar="[VIEW]")

# MLflow's HTTP client retries a dead server 7 times with exponential backoff and a 120 s
# timeout per attempt: `ctloop models` against a wrong port hung for 4 min 17 s before
# printing a traceback. A person at a terminal wants to know within seconds, so the CLI
# bounds both (about 5 s of retries against a refused port; at most 3 attempts of 10 s
# against a silent one). Values set in the environment win.
MLFLOW_HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def bound_mlflow_retries() -> None:
    """Apply `MLFLOW_HTTP_BOUNDS` to this process unless the user chose other values."""
    for name, value in MLFLOW_HTTP_BOUNDS.items():
        os.environ.setdefault(name, value)


def mlflow_unreachable(exc: BaseException, waited: float) -> CtloopError | None:
    """One line for an MLflow server that cannot be reached (None: another problem).

    MLflow wraps the HTTP failure in a bare `MlflowException` whose text holds the full
    URL (with any password) and urllib3's retry trace; the user needs the setting, how
    long was waited and what to do.
    """
    from mlflow.exceptions import MlflowException  # (b) only on the error path
    from requests.exceptions import ConnectionError as HTTPConnectionError  # (b) same
    from requests.exceptions import Timeout  # (b) same

    if not isinstance(exc, MlflowException):
        return None
    cause = exc.__cause__ or exc.__context__
    if not isinstance(cause, HTTPConnectionError | Timeout):
        return None
    errno = re.search(r"\[Errno -?\d+\] [^\"')]+", str(cause))
    reason = "timed out" if isinstance(cause, Timeout) else errno.group(0) if errno else "no answer"
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    uri = redact(get_settings().tracking_uri)
    return CtloopError(
        f"MLFLOW_TRACKING_URI {uri} does not answer ({reason}; gave up after {waited:.0f} s: "
        f"{retries} retries, {timeout} s per attempt): start the MLflow server (`make up`) "
        "or point MLFLOW_TRACKING_URI at a running one; MLFLOW_HTTP_REQUEST_MAX_RETRIES and "
        "MLFLOW_HTTP_REQUEST_TIMEOUT set how long to wait"
    )


class CtloopGroup(click.Group):
    """The command group: bounds MLflow's retries before any command runs and turns an
    unreachable server into a `CtloopError` (one line, exit 2) instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the chosen command with the MLflow bounds in place."""
        bound_mlflow_retries()
        started = time.monotonic()
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if "mlflow" not in sys.modules:  # not an MLflow error: nothing to translate
                raise
            translated = mlflow_unreachable(exc, time.monotonic() - started)
            if translated is None:
                raise
            raise translated from exc


@click.group(cls=CtloopGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="ctloop")
def cli(verbose: bool) -> None:
    """ctloop: continuous training of CatBoost models over a feature store.

    VIEW is a feature view name from the features folder (default: $CTLOOP_DEFAULT_VIEW,
    credit_score).
    Configuration comes from the environment and .env (see .env.example).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:  # log lines quote URLs too
        handler.addFilter(RedactingFilter())
    # urllib3 logs each retry of an unreachable MLflow server with its full trace; the
    # command's own `error:` line says it once (see CtloopGroup)
    logging.getLogger("urllib3.connectionpool").setLevel(
        logging.DEBUG if verbose else logging.ERROR
    )


def echo_json(data: object) -> None:
    """Print a step's outcome as indented JSON (what the DAG would put in XCom)."""
    click.echo(json.dumps(data, indent=2, default=str))
